"""The backend registry: built-in names load without the entry-point scan, and agree with it."""

import subprocess
import sys
import types

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


def assert_runs_fresh(script: str) -> None:
    """``script`` runs to its last line ("ok") in a new interpreter, where llama_cpp is not imported yet."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr


def test_the_model_load_needs_only_llama_cpp_pythons_bindings():
    # the preload imports the bindings, starts the load, then the rest of the package (numpy, its
    # wrappers); in a new interpreter, since this one may have imported llama_cpp already
    pytest.importorskip("llama_cpp")
    script = (
        "import sys\n"
        "from slimsql.backends import llama_cpp as backend\n"
        "lib = backend._bindings()\n"
        "package = sys.modules['llama_cpp']\n"
        "assert 'numpy' not in sys.modules and 'llama_cpp.llama' not in sys.modules, 'imported too much'\n"
        "assert package.llama_model_load_from_file is lib.llama_model_load_from_file\n"
        "assert not hasattr(package, 'Llama') and not hasattr(package, '__version__')\n"
        "backend._finish_import()\n"
        "import llama_cpp\n"
        "from llama_cpp import _internals\n"
        "assert llama_cpp is package and llama_cpp.llama_cpp is lib and llama_cpp.Llama and llama_cpp.__version__\n"
        "assert backend._bindings() is lib and backend._unfinished is None\n"
        "print('ok')\n")
    assert_runs_fresh(script)


def test_llama_cpp_logs_go_to_a_c_function_where_the_calling_convention_allows_it():
    # no Python callback, so a load in the preload thread never waits for the GIL (1,800 log lines)
    pytest.importorskip("llama_cpp")
    script = (
        "import ctypes, os\n"
        "from slimsql.backends import llama_cpp as backend\n"
        "backend._quiet_logs()\n"
        "native = os.name == 'posix' and os.uname().machine.lower() in backend._REGISTER_ARGUMENTS\n"
        "address = ctypes.cast(backend._QUIET_CALLBACK, ctypes.c_void_p).value\n"
        "assert backend._QUIET_IN_C is native\n"
        "assert (address == ctypes.cast(ctypes.CDLL(None).abs, ctypes.c_void_p).value) is native\n"
        "print('ok')\n")
    assert_runs_fresh(script)


def test_a_package_import_that_fails_after_the_bindings_is_forgotten(monkeypatch):
    from slimsql.backends import llama_cpp as backend

    class Broken:
        def exec_module(self, module):
            raise ImportError("numpy is missing")

    package = types.ModuleType("llama_cpp")
    monkeypatch.setitem(sys.modules, "llama_cpp", package)
    monkeypatch.setattr(backend, "_unfinished", (types.SimpleNamespace(loader=Broken()), package))
    with pytest.raises(ImportError, match="numpy is missing"):
        backend._finish_import()
    assert "llama_cpp" not in sys.modules and backend._unfinished is None  # a later import tries again
    backend._finish_import()  # nothing left to finish


def test_a_preload_that_fails_before_its_thread_leaves_no_half_made_package():
    # the package is finished or forgotten; else a later `import llama_cpp` would get it half-made (no Llama)
    pytest.importorskip("llama_cpp")
    script = (
        "import sys\n"
        "from slimsql.backends import llama_cpp as backend\n"
        "backend.models.is_verified = lambda path, sha256: True  # no model file needed: it fails before the load\n"
        "sys.modules['llama_cpp._logger'] = None  # importing it raises ImportError\n"
        "try:\n"
        "    backend.preload(None)\n"
        "except ImportError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "assert backend._unfinished is None and backend._preloaded is None\n"
        "del sys.modules['llama_cpp._logger']\n"
        "import llama_cpp\n"
        "assert llama_cpp.__version__ and llama_cpp.Llama\n"
        "print('ok')\n")
    assert_runs_fresh(script)
