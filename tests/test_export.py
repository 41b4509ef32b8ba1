"""`slimsql train export` and local models: each export format, checked by the tools that read it.

The model is the tiny random Qwen2 of train_support (real Qwen2.5 tokenizer, so llama.cpp's
converters see a real ``qwen2`` model) with a PEFT LoRA adapter whose B matrices are not zero,
so the adapter really changes the greedy output. The registry of local models lives in a
temporary file (``SLIMSQL_LOCAL_MODELS``): the embedded model's cache is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slimsql import models
from slimsql.backends import GenerationConfig
from slimsql.errors import InputError, ModelError, SlimsqlError
from slimsql.train import export as ex

from . import train_support
from .conftest import assert_same_distribution, distribution_gap
from .train_support import require_training

tiny_qwen = train_support.tiny_qwen  # the session's tiny model (a fixture)

PROMPTS = ["How many singers are there?", "List the names of all stadiums, ordered by capacity.",
           "SELECT count(*) FROM concert WHERE year = 2014", "What is the average age of all singers?",
           "Show the name and the release year of the song by the youngest singer."]
#: greedy tokens per prompt, along which the exported model's distributions are compared with PyTorch's
N_TOKENS = 16
#: how far (nats) an export's log-probabilities may lie from PyTorch's: float32 weights, and float16 ones
F32_TOLERANCE, F16_TOLERANCE = 0.01, 0.05


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A private local-model registry for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("registry") / "local.json"
        patch.setenv("SLIMSQL_LOCAL_MODELS", str(path))
        yield path


@pytest.fixture(scope="module")
def converter():
    require_training()
    try:
        return ex.converter_dir()
    except ModelError as err:
        if os.environ.get("SLIMSQL_REQUIRE_MODEL"):
            pytest.fail(str(err))
        pytest.skip(str(err))


def write_run(folder: Path, base: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base").mkdir(exist_ok=True)
    for item in base.iterdir():
        if item.is_file() and not item.name.endswith(".safetensors"):
            shutil.copy(item, folder / "base" / item.name)
    # as training writes it from a GGUF-loaded base: no architectures, transformers' GGUF quantization_config
    config = json.loads((folder / "base" / "config.json").read_text())
    config.pop("architectures", None)
    config["quantization_config"] = {"quant_method": "gguf", "gguf_file": "base.gguf", "dequantize": False}
    (folder / "base" / "config.json").write_text(json.dumps(config))
    info = {"format": 1, "name": folder.name, "method": "lora", "recipe": "test",
            "base": {"name": str(base), "source": str(base), "gguf_file": None, "gguf_path": None, "sha256": None},
            "style": "compact", "samples": 3, "prune_tokens": 512, "adapter": "adapter", "model": None}
    info.update(overrides)
    (folder / "train.json").write_text(json.dumps(info))
    return folder


@pytest.fixture(scope="module")
def run_dir(tiny_qwen, tmp_path_factory):
    """A LoRA run folder on the tiny model, its adapter's B matrices random (not PEFT's zeros)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("runs") / "tiny-sql"
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(str(folder / "adapter"))
    return write_run(folder, tiny_qwen)


@pytest.fixture(scope="module")
def peft_model(run_dir, tiny_qwen):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_qwen), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval(), AutoTokenizer.from_pretrained(str(tiny_qwen))


@pytest.fixture(scope="module")
def base_gguf(tiny_qwen, converter, tmp_path_factory):
    """The tiny base as an f32 GGUF: the 'unchanged base' a LoRA GGUF is applied on."""
    return ex.convert_hf_to_gguf(tiny_qwen, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", "f32")


def messages(prompt: str) -> list[dict]:
    return [{"role": "system", "content": "You write SQLite queries."}, {"role": "user", "content": prompt}]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template(messages(prompt), add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def torch_greedy(peft_model, prompt: str, n: int = N_TOKENS) -> list[int]:
    import torch

    model, tokenizer = peft_model
    ids = prompt_ids(tokenizer, prompt)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tokenizer.eos_token_id)
    return out[0, len(ids):].tolist()


def torch_logprobs(peft_model, prompt: str, continuation: list[int]):
    """PyTorch's teacher-forced log-probabilities, laid out as a backend's ``logprobs``."""
    import torch

    model, tokenizer = peft_model
    ids = prompt_ids(tokenizer, prompt)
    with torch.inference_mode():
        logits = model(torch.tensor([ids + continuation])).logits[0, len(ids) - 1:]
    return torch.log_softmax(logits.float(), dim=-1).numpy()


def llama_greedy(backend, prompt: str, n: int = N_TOKENS) -> str:
    [candidate] = backend.generate(messages(prompt), GenerationConfig(max_tokens=n))
    return candidate.text


# -- gguf-lora -------------------------------------------------------------------------

def test_lora_gguf_on_the_unchanged_base_gives_the_pytorch_distributions(run_dir, base_gguf, peft_model, registry,
                                                                       tmp_path):
    from slimsql.backends.llama_cpp import LlamaCppBackend

    base_hash = models.sha256_file(base_gguf)
    done = ex.export(run_dir, "gguf-lora", base_gguf=base_gguf)
    assert done.name == "tiny-sql-lora" and done.path == run_dir / "export" / "tiny-sql-lora.gguf"
    assert done.kind == "gguf-lora" and done.base == str(base_gguf.resolve()) and done.style == "compact"
    assert models.sha256_file(base_gguf) == base_hash  # the base is used as it is
    resolved = models.resolve("tiny-sql-lora")
    assert (resolved.path, resolved.lora, resolved.kind) == (base_gguf.resolve(), done.path, "gguf-lora")
    assert (resolved.style, resolved.samples, resolved.prune_tokens) == ("compact", 3, 512)

    store = tmp_path / "prefix"
    adapted = LlamaCppBackend("tiny-sql-lora", n_ctx=1024, n_threads=2, prefix_cache=True, prefix_cache_dir=store)
    plain = LlamaCppBackend(str(base_gguf), n_ctx=1024, n_threads=2, prefix_cache=True, prefix_cache_dir=store)
    # the adapter's prefix states never meet the base model's
    assert adapted.store.folder != plain.store.folder and adapted.model_name == "tiny-sql-lora"
    tokenizer = peft_model[1]
    for prompt in PROMPTS:  # the same prompt tokens, then the same distributions along PyTorch's greedy tokens
        assert adapted.prompt_tokens(messages(prompt)) == prompt_ids(tokenizer, prompt)
        expected = torch_greedy(peft_model, prompt)
        reference = torch_logprobs(peft_model, prompt, expected)
        assert_same_distribution(adapted.logprobs(messages(prompt), expected), reference, F32_TOLERANCE)
        # without the adapter llama.cpp's model is another: the adapter is applied
        assert distribution_gap(plain.logprobs(messages(prompt), expected), reference) > 10 * F32_TOLERANCE
        assert llama_greedy(adapted, prompt)  # and it writes
    # (the greedy texts are not compared: the random tiny model's logits are nearly flat, and a near tie
    # may fall either way between two libraries' floating-point sums, by CPU)


def test_a_lora_of_another_base_is_refused_at_export(run_dir, tiny_qwen, converter, registry, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_qwen))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(str(tmp_path / "wide"))  # twice as wide: the LoRA's shapes do not fit
    tokenizer.save_pretrained(str(tmp_path / "wide"))
    other = ex.convert_hf_to_gguf(tmp_path / "wide", tmp_path / "wide.gguf", "f16")
    with pytest.raises(ModelError, match="refuses the LoRA") as err:
        ex.export(run_dir, "gguf-lora", base_gguf=other, name="mismatch", out=tmp_path / "out")
    assert "\n" not in str(err.value)
    assert models.find_local("mismatch") is None and not (tmp_path / "out" / "mismatch.gguf").exists()


# -- safetensors -----------------------------------------------------------------------

def test_safetensors_export_loads_in_transformers_with_the_peft_logits(run_dir, peft_model, registry):
    import torch
    from transformers import AutoModelForCausalLM

    from slimsql.backends.llama_cpp import LlamaCppBackend
    from slimsql.backends.transformers import TransformersBackend

    full = ex.export(run_dir, "safetensors", quant="f32", name="tiny-sql-f32")
    assert {p.name for p in full.files} >= {"config.json", "model.safetensors", "tokenizer.json",
                                             "chat_template.jinja"}
    merged = AutoModelForCausalLM.from_pretrained(str(full.path), dtype=torch.float32).eval()
    model, tokenizer = peft_model
    for prompt in PROMPTS[:3]:
        ids = torch.tensor([prompt_ids(tokenizer, prompt)])
        with torch.inference_mode():
            assert torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)

    default = ex.export(run_dir, "safetensors")  # bfloat16, the Hugging Face layout's usual dtype
    config = json.loads((default.path / "config.json").read_text())
    assert default.name == "tiny-sql-hf" and config["dtype"] == config["torch_dtype"] == "bfloat16"
    assert "chat_template" in json.loads((default.path / "tokenizer_config.json").read_text())
    assert default.bytes < full.bytes

    backend = TransformersBackend("tiny-sql-f32", n_threads=2)  # a local safetensors name, verified and loaded
    expected = torch_greedy(peft_model, PROMPTS[0])
    assert_same_distribution(backend.logprobs(messages(PROMPTS[0]), expected),
                             torch_logprobs(peft_model, PROMPTS[0], expected), F32_TOLERANCE)
    [candidate] = backend.generate(messages(PROMPTS[0]), GenerationConfig(max_tokens=N_TOKENS))
    assert candidate.completion_tokens > 0
    # a vote's later stage: only the n - skip samples, seeded past the stream the first stage drew from
    rest = GenerationConfig(n=4, temperature=0.9, seed=5, skip=1, max_tokens=N_TOKENS)
    drawn = [c.text for c in backend.generate(messages(PROMPTS[0]), rest)]
    assert len(drawn) == 3 and drawn == [c.text for c in backend.generate(messages(PROMPTS[0]), rest)]
    with pytest.raises(ModelError, match="safetensors export.*--format gguf"):
        LlamaCppBackend("tiny-sql-f32")


def test_a_full_fine_tune_exports_its_own_weights(tiny_qwen, registry, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run = write_run(tmp_path / "tiny-full", tiny_qwen, method="full", adapter=None, model="model")
    shutil.copytree(tiny_qwen, run / "model")  # as if every weight had been trained
    done = ex.export(run, "safetensors", quant="f32")
    assert done.name == "tiny-full-hf" and models.resolve(done.name).kind == "safetensors"
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        got = AutoModelForCausalLM.from_pretrained(str(done.path), dtype=torch.float32)(ids).logits
        want = AutoModelForCausalLM.from_pretrained(str(tiny_qwen), dtype=torch.float32)(ids).logits
    assert torch.equal(got, want)


# -- merged gguf -----------------------------------------------------------------------

def test_merged_gguf_export_f16_gives_the_pytorch_distributions(run_dir, peft_model, converter, registry):
    from slimsql.backends.llama_cpp import LlamaCppBackend

    done = ex.export(run_dir, "gguf", quant="f16")
    assert done.name == "tiny-sql-f16" and done.path.suffix == ".gguf" and done.base == str(_tiny(run_dir))
    backend = LlamaCppBackend(done.name, n_ctx=1024, n_threads=2, prefix_cache=False)
    assert backend.metadata["general.file_type"] == "1"  # llama_ftype MOSTLY_F16
    for prompt in PROMPTS[:3]:  # the merged model up to f16 rounding
        expected = torch_greedy(peft_model, prompt)
        assert_same_distribution(backend.logprobs(messages(prompt), expected),
                                 torch_logprobs(peft_model, prompt, expected), F16_TOLERANCE)


def test_merged_gguf_export_q4_k_m_loads_and_generates(run_dir, converter, registry):
    from slimsql.backends.llama_cpp import LlamaCppBackend

    done = ex.export(run_dir, "gguf")  # the default: Q4_K_M through llama.cpp's quantizer
    assert done.name == "tiny-sql-q4_k_m" and models.resolve(done.name).path == done.path
    backend = LlamaCppBackend(done.name, n_ctx=1024, n_threads=2, prefix_cache=False)
    assert backend.metadata["general.file_type"] == "15"  # llama_ftype MOSTLY_Q4_K_M
    [candidate] = backend.generate(messages(PROMPTS[0]), GenerationConfig(max_tokens=N_TOKENS))
    assert candidate.completion_tokens == N_TOKENS and candidate.text
    # (its greedy tokens are not compared: a random 64-wide model's logits are nearly flat, and
    # Q4_K_M moves them; docs/train-export.md has the measured agreement on the real 0.5B model)


def _tiny(run_dir: Path) -> str:
    return json.loads((run_dir / "train.json").read_text())["base"]["name"]


# -- the registry ----------------------------------------------------------------------

def fake_gguf(path: Path, size: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + os.urandom(size - 4))
    return path


@pytest.fixture
def own_registry(tmp_path, monkeypatch):
    path = tmp_path / "reg" / "local.json"
    monkeypatch.setenv("SLIMSQL_LOCAL_MODELS", str(path))
    return path


def test_register_resolve_and_refuse_a_changed_file(tmp_path, own_registry):
    base, lora = fake_gguf(tmp_path / "base.gguf"), fake_gguf(tmp_path / "my-lora.gguf", 512)
    entry = models.register("my-sql", "gguf-lora", lora, base=base, style="compact", samples=5, prune_tokens=0,
                            run=tmp_path)
    assert [f.role for f in entry.files] == ["lora", "base"]
    record = json.loads(own_registry.read_text())["models"]["my-sql"]
    assert record["files"][0]["sha256"] == models.sha256_file(lora) and record["base"] == str(base.resolve())
    assert [m.name for m in models.local_models()] == ["my-sql"]
    resolved = models.resolve("My-SQL")  # names are matched without regard to case
    assert (resolved.name, resolved.path, resolved.lora, resolved.style) == ("my-sql", base.resolve(),
                                                                             lora.resolve(), "compact")
    os.utime(lora, ns=(1, 1))  # touched, same bytes: hashed again, accepted, the new mtime recorded
    assert models.resolve("my-sql").lora == lora.resolve()
    assert json.loads(own_registry.read_text())["models"]["my-sql"]["files"][0]["mtime_ns"] == 1
    data = bytearray(lora.read_bytes())
    data[100] ^= 0xFF
    lora.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="my-lora.gguf changed since it was registered") as err:
        models.resolve("my-sql")
    assert "\n" not in str(err.value)
    models.register("my-sql", "gguf-lora", lora, base=base)  # registered again, as it is now
    assert models.resolve("my-sql").lora == lora.resolve()
    base.write_bytes(b"GGUF" + os.urandom(4092))  # a base given by path is checked as well
    with pytest.raises(ModelError, match="base.gguf changed"):
        models.resolve("my-sql")
    lora.unlink()
    with pytest.raises(ModelError, match="my-lora.gguf is missing"):
        models.resolve("my-sql")
    assert models.unregister("my-sql") and not models.unregister("my-sql")
    with pytest.raises(ModelError, match="unknown model 'my-sql'"):
        models.resolve("my-sql")


def test_a_registry_name_or_a_bad_name_cannot_be_taken(tmp_path, own_registry):
    file = fake_gguf(tmp_path / "m.gguf")
    for name in ("qwen2.5-coder-0.5b", "default", "SmolLM2-135M"):
        with pytest.raises(InputError, match="name of a registry model"):
            models.register(name, "gguf", file)
    for name in ("a/b", "x.gguf", "", "-x", "has space"):
        with pytest.raises(InputError, match="bad local model name"):
            models.register(name, "gguf", file)
    with pytest.raises(InputError, match="unknown local model kind"):
        models.register("ok", "onnx", file)
    assert not own_registry.exists()  # nothing was written


def test_a_corrupt_registry_is_a_clear_error_and_registry_models_still_resolve(tmp_path, own_registry):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    models.register("hf-model", "safetensors", folder, base="qwen2.5-coder-0.5b")
    resolved = models.resolve("hf-model")
    assert (resolved.kind, resolved.path, resolved.lora) == ("safetensors", folder.resolve(), None)
    own_registry.write_text("{not json")
    for call in (lambda: models.resolve("hf-model"), models.local_models,
                 lambda: models.register("again", "safetensors", folder)):
        with pytest.raises(ModelError, match="local model registry .* is corrupt; repair or delete it"):
            call()
    assert own_registry.read_text() == "{not json"  # never overwritten
    with pytest.raises(ModelError, match="corrupt"):
        models.resolve("no-such-model")  # an unknown name: the registry's state is the useful answer
    try:  # registry names never read it
        assert models.resolve(models.DEFAULT_MODEL).spec is not None
    except ModelError as err:  # the embedded model is not installed here: still not the registry's error
        assert "local model registry" not in str(err)


def test_models_command_lists_local_models(tmp_path, own_registry):
    models.register("listed", "gguf", fake_gguf(tmp_path / "listed.gguf"), base="qwen2.5-coder-0.5b",
                    style="compact")
    env = {**os.environ, "SLIMSQL_HOME": str(tmp_path / "home"), "SLIMSQL_LOCAL_MODELS": str(own_registry)}
    out = subprocess.run([sys.executable, "-m", "slimsql.cli", "models", "--json"], env=env,
                         capture_output=True, text=True)
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows][-1] == "listed"
    assert {k: rows[-1][k] for k in ("kind", "base", "style", "local")} == {
        "kind": "gguf", "base": "qwen2.5-coder-0.5b", "style": "compact", "local": True}
    out = subprocess.run([sys.executable, "-m", "slimsql.cli", "models"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "listed" in out.stdout and "compact" in out.stdout


# -- bad input -------------------------------------------------------------------------

def test_bad_run_folders_are_one_line_input_errors(tmp_path):
    def refused(run, fmt="gguf", match=""):
        with pytest.raises(InputError, match=match) as err:
            ex.export(run, fmt)
        assert "\n" not in str(err.value)

    refused(tmp_path / "nowhere", match="training run folder not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, match="no train.json")
    (empty / "train.json").write_text("{oops")
    refused(empty, match="train.json is unreadable")
    (empty / "train.json").write_text(json.dumps({"format": 2}))
    refused(empty, match="format 2 is not 1")
    (empty / "train.json").write_text(json.dumps({"format": 1, "method": "magic", "base": {"name": "x"}}))
    refused(empty, match="unknown method 'magic'")
    (empty / "train.json").write_text(json.dumps({"format": 1, "method": "lora", "base": {"name": "x"},
                                                  "adapter": "adapter"}))
    refused(empty, match="adapter folder adapter/ has no adapter_config.json")
    (empty / "model").mkdir()
    (empty / "model" / "config.json").write_text("{}")
    (empty / "train.json").write_text(json.dumps({"format": 1, "method": "full", "base": {"name": "x"},
                                                  "model": "model", "adapter": None}))
    refused(empty, "gguf-lora", match="full fine-tune .* no LoRA adapter")
    refused(empty, "onnx", match="unknown export format 'onnx'")
    with pytest.raises(InputError, match="--quant Q4_K_M does not apply to a safetensors export"):
        ex.export(empty, "safetensors", quant="Q4_K_M")
    with pytest.raises(InputError, match="name of a registry model"):
        ex.export(empty, "gguf", name="default")
    assert issubclass(InputError, SlimsqlError)


def test_a_missing_converter_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMSQL_LLAMA_CONVERT", str(tmp_path / "no-converter"))
    with pytest.raises(ModelError, match="converter scripts are not installed .* make setup-train"):
        ex.converter_dir()
