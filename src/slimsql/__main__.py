"""``python -m slimsql``: the ``slimsql`` command."""

from .launch import run

if __name__ == "__main__":
    run()
