"""The backend registry: built-in names load without the entry-point scan, and agree with it."""

import pytest

from slimsql.backends import BUILTIN, available, load_backend
from slimsql.backends.scripted import ScriptedBackend
from slimsql.errors import InputError


def test_builtin_backends_are_the_registered_entry_points():
    found = available()
    for name, target in BUILTIN.items():
        assert found[name].value == target  # the shortcut names what pyproject registers


def test_builtin_backend_loads_by_name():
    assert isinstance(load_backend("scripted", replies=["SELECT 1"]), ScriptedBackend)


def test_unknown_backend_is_a_one_line_input_error():
    with pytest.raises(InputError, match="unknown backend 'nope'; installed backends: .*llama-cpp"):
        load_backend("nope")
