"""Training recipes: every shipped YAML loads, the reference recipes carry the reference
hyperparameters, and a misspelt or mistyped key is an error that names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slimsql.errors import InputError
from slimsql.train import recipes
from slimsql.train.recipes import RECIPES_DIR, from_dict, load, override

ACCELERATE_DIR = RECIPES_DIR.parent / "accelerate"

SHIPPED = recipes.available()
REFERENCE = ("strict-350m/qlora", "qwen3-4b/full", "sqlforge-mistral-7b/qlora", "qwen2.5-1.5b/qlora",
             "slm-sql-0.5b/sft", "slm-sql-0.5b/grpo", "qwen2.5-coder-0.5b/lora", "qwen2.5-coder-0.5b/grpo")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_the_reference_recipes_are_shipped():
    assert set(REFERENCE) <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_loads_and_is_commented(name):
    recipe = load(name)
    assert recipe.name == name
    assert recipe.description and recipe.reference
    text = (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#") or " # " in line]
    assert len(comments) >= 8, "each recipe explains its values"
    # strict: the file's own keys all exist (load raised otherwise), and nothing is left empty
    data = yaml.safe_load(text)
    for section, values in data.items():
        assert values is not None, f"{name}: empty section {section}"
    if recipe.method == "grpo":
        assert recipe.after in SHIPPED and load(recipe.after).method != "grpo"
        assert recipe.effective_batch % recipe.grpo.num_generations == 0
    if recipe.method in ("qlora", "full") or recipe.requires_cuda:
        assert recipe.cuda_only


def test_strict_350m_reference():
    r = load("strict-350m/qlora")
    assert r.method == "qlora" and r.data.style == "strict-chatml"
    assert (r.lora.r, r.lora.alpha) == (32, 32)
    assert r.training.learning_rate == pytest.approx(2e-4)
    assert r.training.max_steps == 800
    assert (r.training.batch_size, r.training.grad_accum, r.effective_batch) == (4, 4, 16)
    assert r.training.optimizer in ("adamw_8bit", "paged_adamw_8bit")
    assert r.training.completion_only
    assert r.quantization.quant_type == "nf4"
    assert r.cuda_only


def test_qwen3_4b_full_reference():
    r = load("qwen3-4b/full")
    assert r.method == "full" and r.lora is None and r.quantization is None
    assert r.model.base == "Qwen/Qwen3-4B" and r.data.style == "generate-sql"
    assert r.training.learning_rate == pytest.approx(5e-6)
    assert r.training.scheduler == "cosine" and r.training.warmup_steps == 300
    assert r.training.epochs == 4 and r.training.max_steps == 0
    assert r.effective_batch == 8
    assert r.model.dtype == "bfloat16" and r.model.max_length == 2048
    assert r.training.keep_best and r.data.eval_examples > 0
    assert r.cuda_only


def test_mistral_7b_qlora_reference():
    r = load("sqlforge-mistral-7b/qlora")
    assert r.method == "qlora" and "Mistral-7B" in r.model.base
    q = r.quantization
    assert (q.bits, q.quant_type, q.double_quant) == (4, "nf4", True)
    assert (r.lora.r, r.lora.alpha, r.lora.dropout) == (64, 16, 0.05)
    assert r.lora.target_modules == ALL_LINEAR
    assert r.training.scheduler == "cosine"
    assert r.training.warmup_ratio > 0 or r.training.warmup_steps > 0
    assert r.model.gradient_checkpointing
    # Mistral-Instruct's template refuses a system turn: the style must not have one
    from slimsql.prompts import get_style

    assert get_style(r.data.style).system is None


def test_qwen25_15b_assistant_reference():
    r = load("qwen2.5-1.5b/qlora")
    assert r.method == "qlora" and "Qwen2.5-1.5B" in r.model.base
    assert (r.lora.r, r.lora.alpha, r.lora.dropout) == (16, 16, 0.05)
    assert r.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert r.training.learning_rate == pytest.approx(2e-4)
    assert r.training.epochs == 1 and r.training.max_steps == 0
    assert (r.training.batch_size, r.training.grad_accum) == (4, 2)


@pytest.mark.parametrize("size", ["0.5b", "1.5b"])
def test_slm_sql_is_sft_then_grpo(size):
    sft, grpo = load(f"slm-sql-{size}/sft"), load(f"slm-sql-{size}/grpo")
    assert "Qwen2.5-Coder" in sft.model.base and size.upper() in sft.model.base.upper()
    assert sft.method != "grpo" and grpo.method == "grpo"
    assert grpo.after == f"slm-sql-{size}/sft"
    assert grpo.model.base == sft.model.base and grpo.data.style == sft.data.style
    assert grpo.grpo.execution_weight > 0


def test_cpu_recipes_for_the_embedded_model():
    from slimsql import models

    lora, grpo = load("qwen2.5-coder-0.5b/lora"), load("qwen2.5-coder-0.5b/grpo")
    for r in (lora, grpo):
        assert r.model.base == models.DEFAULT_MODEL
        assert not r.cuda_only and r.model.dtype == "bfloat16"
        # the prompt inference builds by default: its style, one sample value, the whole schema
        assert r.data.style == "sqlite-expert" and r.data.samples == 1 and r.data.prune_tokens == 0
        assert 0 < r.lora.top_layers < 24 and r.lora.target_modules == ALL_LINEAR
        assert r.data.eval_split == "holdout"  # Spider dev stays untouched for the final score
    assert lora.method == "lora" and lora.training.batch_size == 1 and lora.training.packing
    assert 1024 <= lora.model.max_length <= 4096
    assert lora.training.learning_rate == pytest.approx(2e-4)
    assert 20 <= lora.data.eval_examples <= 100 and 20 <= lora.training.eval_steps <= 500
    assert grpo.after == "qwen2.5-coder-0.5b/lora"
    assert grpo.grpo.num_generations == 4 and grpo.grpo.max_completion_length <= 128


# ----------------------------------------------------------------- strict keys and types


def _recipe(text: str, name: str = "test"):
    return from_dict(yaml.safe_load(text), name)


def test_a_misspelt_key_is_named_with_the_close_one():
    with pytest.raises(InputError) as err:
        _recipe("method: full\ntraining:\n  learning_rte: 1.0e-5\n")
    message = str(err.value)
    assert "learning_rte" in message and "learning_rate" in message


def test_a_misspelt_key_in_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("method: lora\nlora:\n  r: 8\n  top_layer: 2\n", encoding="utf-8")
    with pytest.raises(InputError, match="top_layer.*top_layers"):
        load(str(path))


@pytest.mark.parametrize("text, word", [
    ("optimiser:\n  lr: 1\n", "optimiser"),
    ("metod: full\n", "method"),
    ("lora:\n  rank: 8\n", "rank"),
    ("grpo:\n  num_generation: 4\n", "num_generations"),
])
def test_unknown_keys_and_sections_fail(text, word):
    with pytest.raises(InputError, match=word):
        _recipe(text)


@pytest.mark.parametrize("text", [
    "method: full\ntraining:\n  batch_size: four\n",
    "method: full\ntraining:\n  batch_size: 2.5\n",
    "method: full\ntraining:\n  epochs: true\n",
    "method: full\ntraining:\n  learning_rate: fast\n",
    "method: full\ntraining:\n  learning_rate: .nan\n",
    "method: full\nmodel:\n  gradient_checkpointing: 'yes'\n",
    "method: full\nmodel:\n  base: 7\n",
    "method: lora\nlora:\n  target_modules: 3\n",
    "method: full\nrequires_cuda: 1\n",
    "method: full\ntraining: [1, 2]\n",
    "- a list\n",
])
def test_wrong_types_fail(text):
    with pytest.raises(InputError):
        _recipe(text)


@pytest.mark.parametrize("text", [
    "method: sgd\n",
    "method: full\ntraining:\n  scheduler: cosin\n",
    "method: full\nmodel:\n  dtype: fp8\n",
    "method: full\ndata:\n  style: no-such-style\n",
    "method: qlora\nlora: {}\n",  # no quantization section
    "method: full\nquantization: {}\n",
    "method: full\ntraining:\n  batch_size: 0\n",
    "method: grpo\ngrpo:\n  num_generations: 1\ntraining:\n  batch_size: 1\n",
    "method: grpo\ngrpo:\n  num_generations: 4\ntraining:\n  batch_size: 6\n",
    "method: lora\nlora:\n  top_layers: -1\n",
])
def test_invalid_values_fail(text):
    with pytest.raises(InputError):
        _recipe(text)


def test_exponent_numbers_without_a_dot_are_numbers():
    # PyYAML reads 2e-4 as text; a recipe must still take it as the number it means
    r = _recipe("method: full\ntraining:\n  learning_rate: 2e-4\n  warmup_ratio: 3e-2\n")
    assert r.training.learning_rate == pytest.approx(2e-4)
    assert r.training.warmup_ratio == pytest.approx(0.03)


def test_a_single_target_module_becomes_a_list():
    r = _recipe("method: lora\nlora:\n  target_modules: all-linear\n")
    assert r.lora.target_modules == ("all-linear",)


def test_unknown_recipe_name_suggests_one():
    with pytest.raises(InputError, match="qwen3-4b/full"):
        load("qwen3-4b/ful")
    with pytest.raises(InputError, match="not found"):
        load("/no/such/recipe.yaml")


def test_invalid_yaml_is_an_input_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid YAML"):
        load(str(path))


# ----------------------------------------------------------------- override and properties


def test_override_changes_single_fields():
    base = load("qwen2.5-coder-0.5b/lora")
    changed = override(base, **{"training.max_steps": 10, "lora.r": 8, "data.max_examples": 100,
                                "description": "quick", "training.learning_rate": None})
    assert changed.training.max_steps == 10 and changed.lora.r == 8 and changed.data.max_examples == 100
    assert changed.description == "quick"
    assert changed.training.learning_rate == base.training.learning_rate  # None: not given
    assert base.training.max_steps == 0  # the loaded recipe is untouched
    assert changed.lora.alpha == base.lora.alpha


def test_override_refuses_unknown_keys():
    base = load("qwen2.5-coder-0.5b/lora")
    with pytest.raises(InputError, match="training.learning_rte"):
        override(base, **{"training.learning_rte": 1e-4})
    with pytest.raises(InputError, match="trainig"):
        override(base, **{"trainig.max_steps": 1})


def test_override_validates_the_result():
    base = load("qwen2.5-coder-0.5b/lora")
    with pytest.raises(InputError):
        override(base, **{"training.batch_size": 0})


def test_cuda_only():
    for name in SHIPPED:
        r = load(name)
        if r.method == "qlora":
            assert r.cuda_only, name
    cpu = load("qwen2.5-coder-0.5b/lora")
    assert not cpu.cuda_only
    assert override(cpu, **{"training.optimizer": "adamw_8bit"}).cuda_only
    assert override(cpu, requires_cuda=True).cuda_only
    assert cpu.effective_batch == cpu.training.batch_size * cpu.training.grad_accum


def test_recipes_round_trip_through_to_dict():
    for name in SHIPPED:
        data = load(name).to_dict()
        assert data["name"] == name
        again = from_dict({k: v for k, v in data.items() if k != "name" and v is not None}, name)
        assert again.to_dict() == data


# ----------------------------------------------------------------- accelerate configs


ACCELERATE = sorted(ACCELERATE_DIR.glob("*.yaml"))


def test_accelerate_configs_are_shipped():
    names = {p.name for p in ACCELERATE}
    assert {"multi-gpu.yaml", "deepspeed-zero2.yaml", "fsdp.yaml"} <= names


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_parses_with_accelerate(path: Path):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    text = path.read_text(encoding="utf-8")
    assert "not runnable" in text.lower() or "not run" in text.lower()
    config = ClusterConfig.from_yaml_file(str(path))  # raises on a key accelerate does not know
    assert config.mixed_precision == "bf16"
    assert config.num_processes >= 2 and config.num_machines == 1
    # the nested sections become `accelerate launch` flags: each key must be one
    flags = {action.dest for action in launch_command_parser()._actions}
    for key in config.deepspeed_config:
        assert key in flags, f"{path.name}: deepspeed_config.{key} is not an accelerate launch option"
    for key in config.fsdp_config:
        flag = key if key.startswith("fsdp") else f"fsdp_{key}"
        assert flag in flags, f"{path.name}: fsdp_config.{key} is not an accelerate launch option"
    kind = config.distributed_type.value
    assert kind in {"MULTI_GPU", "DEEPSPEED", "FSDP"}
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] in (1, 2, 3)
    if kind == "FSDP":
        from accelerate.utils.constants import FSDP_AUTO_WRAP_POLICY, FSDP2_STATE_DICT_TYPE

        assert config.fsdp_config["fsdp_auto_wrap_policy"] in FSDP_AUTO_WRAP_POLICY
        assert config.fsdp_config["fsdp_state_dict_type"] in FSDP2_STATE_DICT_TYPE
