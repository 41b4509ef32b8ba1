import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slimsql import models
from slimsql.errors import ModelError


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Two importable 'part' packages like the registry's, and a spec for them."""
    chunks = [b"GGUF" + os.urandom(3000), os.urandom(1234)]
    for i, chunk in enumerate(chunks, 1):
        pkg = tmp_path / "site" / f"fake_model_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("SLIMSQL_HOME", str(tmp_path / "home"))
    blob = b"".join(chunks)
    return models.ModelSpec(name="fake", title="fake", filename="fake.gguf", size=len(blob),
                            sha256=hashlib.sha256(blob).hexdigest(), extra="fake",
                            parts=("fake_model_part1", "fake_model_part2"))


def test_assemble_verify_and_cache(fake_parts):
    seen = []
    path = models.ensure(fake_parts, lambda done, total: seen.append((done, total)))
    assert path == models.cache_path(fake_parts) and path.stat().st_size == fake_parts.size
    assert seen[-1] == (fake_parts.size, fake_parts.size)
    assert models.status(fake_parts).verified
    assert models.ensure(fake_parts) == path  # second time: no re-assembly, sidecar trusted


def test_corrupt_cached_file_is_a_clear_error(fake_parts):
    path = models.ensure(fake_parts)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt: SHA-256"):
        models.ensure(fake_parts)
    path.write_bytes(bytes(data[:50]))
    with pytest.raises(ModelError, match="corrupt: 50 bytes"):
        models.ensure(fake_parts)


def test_parts_that_do_not_match_the_hash_are_refused(fake_parts):
    bad = models.ModelSpec(**{**fake_parts.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelError, match="do not add up"):
        models.ensure(bad)
    assert not models.cache_path(bad).exists()


def test_missing_parts_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMSQL_HOME", str(tmp_path))
    spec = models.ModelSpec(name="x", title="x", filename="x.gguf", size=1, sha256="0" * 64, extra="x-extra",
                            parts=("no_such_module_part1",))
    with pytest.raises(ModelError, match=r"pip install 'slimsql\[x-extra\]'"):
        models.ensure(spec)


def test_registry_knows_the_three_models():
    assert models.DEFAULT_MODEL == "qwen2.5-coder-0.5b"
    assert models.find("default").name == "qwen2.5-coder-0.5b"
    assert models.find("Qwen2.5-Coder-1.5B").size == 1_117_320_768
    assert models.find("smollm2-135m").sha256.startswith("b179c952")
    with pytest.raises(ModelError, match="unknown model 'gpt-9'"):
        models.find("gpt-9")


def test_local_gguf_paths(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        models.resolve(str(tmp_path / "missing.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        models.resolve(str(junk))
    ok = tmp_path / "tiny.gguf"
    ok.write_bytes(b"GGUF" + b"\0" * 64)
    assert models.resolve(str(ok)).path == ok


def test_hub_download_from_a_local_cache(tmp_path):
    """The real huggingface_hub code path, offline, against a cache laid out as the hub's."""
    repo = tmp_path / "hub" / "models--someone--tiny-gguf"
    commit = "a" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "tiny.Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    code = "from slimsql import models; print(models.resolve('someone/tiny-gguf:tiny.Q4_K_M.gguf').path)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).read_bytes().startswith(b"GGUF")
    missing = "from slimsql import models; models.resolve('someone/other:x.gguf')"
    out = subprocess.run([sys.executable, "-c", missing], env=env, capture_output=True, text=True)
    assert "ModelError" in out.stderr and "cannot get someone/other:x.gguf from the hub" in out.stderr


def test_cli_models_lists_registry(tmp_path):
    env = {**os.environ, "SLIMSQL_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "slimsql.cli", "models", "--json"], env=env,
                         capture_output=True, text=True)
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows] == ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"]
    assert all(r["cached"] is False for r in rows)
