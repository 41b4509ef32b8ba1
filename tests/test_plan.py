"""``train plan``: the memory budget and time estimate of a recipe, without loading a model."""

from __future__ import annotations

import dataclasses
import json

import pytest

from slimsql.errors import InputError
from slimsql.train import plan as P
from slimsql.train.recipes import from_dict, load, override

from .conftest import require_model

GIB = 1024**3
TINY = P.Arch("tiny", layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vocab=1000)
QWEN_05B = P._known("Qwen/Qwen2.5-Coder-0.5B-Instruct")
RATE = 1e11  # a given matmul rate: no benchmark, the same numbers on every machine


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch):
    """Plan as on a machine without a GPU and with a CPU that has bfloat16 arithmetic, whatever
    this one has."""
    monkeypatch.setattr(P, "_cuda_available", lambda: False)
    monkeypatch.setattr(P, "_cpu_bfloat16", lambda: True)


def test_a_cpu_without_bfloat16_is_planned_in_float32(monkeypatch):
    monkeypatch.setattr(P, "_cpu_bfloat16", lambda: False)
    recipe = load("qwen2.5-coder-0.5b/lora")
    assert recipe.model.dtype == "bfloat16"
    plan = P.plan(recipe, arch=QWEN_05B, tokens_per_example=400, throughput=RATE)
    assert rows(plan)["weights"] == 4 * QWEN_05B.params
    assert any("trains in float32" in note for note in plan.notes)
    monkeypatch.setattr(P, "_cpu_bfloat16", lambda: True)
    with_bf16 = P.plan(recipe, arch=QWEN_05B, tokens_per_example=400, throughput=RATE)
    assert rows(with_bf16)["weights"] == 2 * QWEN_05B.params
    assert not any("float32" in note for note in with_bf16.notes)


def rows(plan) -> dict[str, int]:
    return {row.item: row.bytes for row in plan.rows}


def cpu_recipe(**changes):
    return override(load("qwen2.5-coder-0.5b/lora"), **changes)


def test_known_architectures_have_their_published_sizes():
    sizes = {"Qwen/Qwen2.5-Coder-0.5B-Instruct": 0.494e9, "Qwen/Qwen2.5-1.5B-Instruct": 1.54e9,
             "Qwen/Qwen3-4B": 4.02e9, "mistralai/Mistral-7B-Instruct-v0.2": 7.24e9,
             "HuggingFaceTB/SmolLM2-360M-Instruct": 0.362e9}
    for name, size in sizes.items():
        assert P.architecture(name).params == pytest.approx(size, rel=0.01), name


def test_unknown_hub_model_is_an_input_error():
    with pytest.raises(InputError, match="architecture"):
        P.architecture("someone/unknown-model-13b")


def test_architecture_from_a_config_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True}))
    arch = P.architecture(str(tmp_path))
    assert (arch.layers, arch.hidden, arch.kv_dim, arch.vocab, arch.tied, arch.qkv_bias) == (2, 64, 32, 1000, True, True)


def test_architecture_from_a_gguf_header(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_token_list([f"t{i}" for i in range(1000)])  # a string array the reader skips
    writer.add_tensor("token_embd.weight", np.zeros((1000, 64), dtype=np.float32))
    for i in range(2):
        for name, shape in (("attn_q", (64, 64)), ("attn_k", (32, 64)), ("attn_v", (32, 64)),
                            ("attn_output", (64, 64)), ("ffn_gate", (128, 64)), ("ffn_up", (128, 64)),
                            ("ffn_down", (64, 128))):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.zeros(shape, dtype=np.float32))
        for name in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.zeros(64, dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.zeros(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    arch = P.architecture(str(path))
    assert (arch.layers, arch.hidden, arch.intermediate, arch.heads, arch.kv_heads, arch.vocab) == (2, 64, 128, 4, 2, 1000)
    assert arch.tied and not arch.qkv_bias
    # the tensor shapes' own count equals the architecture's formula
    assert arch.exact_params == dataclasses.replace(arch, exact_params=0).params == 2 * TINY.layer_params + 1000 * 64 + 64


@pytest.mark.model
def test_the_embedded_model_is_read_from_its_gguf_header():
    require_model()
    arch = P.architecture("qwen2.5-coder-0.5b")
    assert arch.source.startswith("GGUF")
    assert (arch.layers, arch.hidden, arch.intermediate, arch.heads, arch.kv_heads, arch.vocab) == (
        24, 896, 4864, 14, 2, 151936)
    assert arch.qkv_bias
    assert arch.exact_params == dataclasses.replace(arch, exact_params=0).params  # the formula is exact


def test_lora_params_are_counted_exactly():
    # r * (in + out) per targeted module per trained layer: q is 64 -> 64, v is 64 -> 32
    recipe = from_dict({"model": {"base": "tiny"}, "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]}}, "t")
    per_layer = 8 * (64 + 64) + 8 * (64 + 32)
    plan = P.plan(recipe, arch=TINY, throughput=RATE)
    assert plan.trainable_params == 2 * per_layer
    assert rows(plan)["adapters"] == 2 * per_layer * 4  # float32
    top = P.plan(override(recipe, **{"lora.top_layers": 1}), arch=TINY, throughput=RATE)
    assert top.trainable_params == per_layer and top.trained_layers == 1
    everything = P.plan(override(recipe, **{"lora.target_modules": ("all-linear",)}), arch=TINY, throughput=RATE)
    assert everything.trainable_params == 2 * 8 * sum(a + b for a, b in TINY.modules().values())


def test_cpu_recipe_magnitudes():
    plan = P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, tokens_per_example=400, throughput=RATE)
    budget = rows(plan)
    assert plan.device == "cpu" and not plan.warnings
    assert 0.5 * 0.494e9 * 2 < budget["weights"] < 2 * 0.494e9 * 2  # about 0.5B params x 2 bytes
    # optimizer state is for the trainable parameters only: AdamW's two float32 moments
    assert budget["optimizer state"] == plan.trainable_params * 8
    assert budget["gradients"] == plan.trainable_params * 4
    assert plan.trainable_params < 0.01 * plan.params
    assert 1.5 * GIB < plan.total < 6 * GIB
    assert plan.total == sum(budget.values())
    assert plan.tokens_per_step == 400 * plan.examples_per_step
    assert plan.seconds_per_step == pytest.approx(plan.flops_per_step / (RATE * P.EFFICIENCY["cpu"]))
    assert plan.examples_per_hour == pytest.approx(3600 / plan.seconds_per_example)


def test_full_finetune_trains_and_stores_state_for_every_weight():
    recipe = from_dict({"method": "full", "model": {"base": "x"}}, "full")
    plan = P.plan(recipe, arch=QWEN_05B, throughput=RATE)
    budget = rows(plan)
    assert plan.trainable_params == QWEN_05B.params
    assert "adapters" not in budget
    assert budget["gradients"] == budget["weights"]  # bf16 gradients of bf16 weights
    assert budget["optimizer state"] == 2 * budget["weights"]  # two bf16 moments


def test_eight_bit_optimizer_is_smaller():
    base = load("sqlforge-mistral-7b/qlora")
    fp32 = P.plan(override(base, **{"training.optimizer": "adamw_torch"}), throughput=RATE)
    eight = P.plan(base, throughput=RATE)
    assert rows(eight)["optimizer state"] * 4 == rows(fp32)["optimizer state"]


def test_qlora_7b_weights_are_much_smaller_than_bf16():
    qlora = load("sqlforge-mistral-7b/qlora")
    bf16 = dataclasses.replace(qlora, method="lora", quantization=None)
    q, b = rows(P.plan(qlora, throughput=RATE))["weights"], rows(P.plan(bf16, throughput=RATE))["weights"]
    assert 13e9 < b < 15e9  # 7.24B x 2 bytes
    assert q < 0.35 * b  # 4-bit linear layers, float32 embeddings
    single = dataclasses.replace(qlora, quantization=dataclasses.replace(qlora.quantization, double_quant=False))
    assert rows(P.plan(single, throughput=RATE))["weights"] > q  # double quantization saves


def test_gradient_checkpointing_reduces_activations_and_costs_compute():
    off = P.plan(cpu_recipe(**{"lora.top_layers": 0}), arch=QWEN_05B, throughput=RATE)
    on = P.plan(cpu_recipe(**{"lora.top_layers": 0, "model.gradient_checkpointing": True}),
                arch=QWEN_05B, throughput=RATE)
    assert rows(on)["activations"] < 0.3 * rows(off)["activations"]
    assert on.seconds_per_step > off.seconds_per_step


def test_top_layers_reduce_time_and_activations():
    every = P.plan(cpu_recipe(**{"lora.top_layers": 0}), arch=QWEN_05B, tokens_per_example=400, throughput=RATE)
    top = P.plan(cpu_recipe(**{"lora.top_layers": 4}), arch=QWEN_05B, tokens_per_example=400, throughput=RATE)
    assert top.seconds_per_step < 0.8 * every.seconds_per_step
    assert top.flops_per_step > every.flops_per_step / 3  # the forward pass still runs every layer
    assert rows(top)["activations"] == pytest.approx(rows(every)["activations"] * 4 / 24)
    assert top.trainable_params * 6 == every.trainable_params


def test_longer_examples_take_longer():
    short = P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, tokens_per_example=200, throughput=RATE)
    long = P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, tokens_per_example=800, throughput=RATE)
    assert long.seconds_per_step > 3 * short.seconds_per_step
    assert rows(long) == rows(short)  # memory is sized for max_length either way


def test_run_length_from_steps_or_examples():
    recipe = load("qwen2.5-coder-0.5b/lora")
    assert P.plan(recipe, arch=QWEN_05B, throughput=RATE).steps is None
    plan = P.plan(recipe, arch=QWEN_05B, examples=800, throughput=RATE)
    assert plan.steps == 800 // recipe.effective_batch
    assert plan.total_seconds == pytest.approx(plan.steps * plan.seconds_per_step)
    fixed = P.plan(override(recipe, **{"training.max_steps": 7}), arch=QWEN_05B, examples=800, throughput=RATE)
    assert fixed.steps == 7


def test_cuda_recipe_without_cuda_is_budgeted_but_not_timed():
    plan = P.plan(load("sqlforge-mistral-7b/qlora"))
    assert plan.device.startswith("cuda") and plan.seconds_per_step is None and plan.throughput is None
    assert any("needs CUDA" in w and "none" in w for w in plan.warnings)
    assert 6 * GIB < plan.total < 16 * GIB
    text = P.format_plan(plan)
    assert "not measurable here" in text and "needs CUDA" in text
    forced = P.plan(load("strict-350m/qlora"), device="cpu")
    assert forced.device.startswith("cuda") and any("cannot run on the CPU" in w for w in forced.warnings)


def test_grpo_plan_has_generation_rows():
    recipe = load("qwen2.5-coder-0.5b/grpo")
    plan = P.plan(recipe, arch=QWEN_05B, tokens_per_example=400, throughput=RATE)
    budget = rows(plan)
    assert "generation cache" in budget and "reference model" not in budget  # beta 0
    assert plan.examples_per_step == recipe.effective_batch // recipe.grpo.num_generations
    assert plan.completion_tokens == recipe.grpo.max_completion_length
    assert plan.tokens_per_step == recipe.effective_batch * (400 + recipe.grpo.max_completion_length)
    full = dataclasses.replace(recipe, lora=None, grpo=dataclasses.replace(recipe.grpo, beta=0.04))
    assert "reference model" in rows(P.plan(full, arch=QWEN_05B, throughput=RATE))


def test_memory_above_the_machine_is_a_warning(monkeypatch):
    monkeypatch.setattr(P, "_device_memory", lambda device: 1 * GIB)
    plan = P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, throughput=RATE)
    assert any("above" in w for w in plan.warnings)


def test_calibrate_reports_estimate_against_measurement():
    plan = P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, tokens_per_example=400, throughput=RATE)
    measured = plan.calibrate(plan.seconds_per_step * 1.5)
    assert measured.ratio == pytest.approx(1.5)
    assert "1.50 x the estimate" in P.format_plan(measured)
    by_rate = plan.calibrate(tokens_per_second=plan.tokens_per_step / (plan.seconds_per_step * 2))
    assert by_rate.ratio == pytest.approx(2.0)
    with pytest.raises(InputError):
        plan.calibrate()
    with pytest.raises(InputError):
        plan.calibrate(-1.0)


def test_format_plan_renders_a_table():
    plan = P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, tokens_per_example=400, examples=1000,
                  throughput=RATE)
    text = P.format_plan(plan)
    for word in ("estimate", "weights", "adapters", "optimizer state", "activations", "logits", "overhead",
                 "total", "GiB", "per step", "examples per hour", "whole run"):
        assert word in text, word
    assert len(text.splitlines()) > 12


def test_bad_device_is_an_input_error():
    with pytest.raises(InputError, match="device"):
        P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, device="tpu", throughput=RATE)


def test_measured_throughput_is_positive_and_cached():
    pytest.importorskip("torch")
    rate = P.measure_throughput("float32", 32, 64, 128, "cpu", 0.02)
    assert rate > 1e6
    assert P.measure_throughput("float32", 32, 64, 128, "cpu", 0.02) == rate  # once per process


def test_module_level_calibrate():
    plan = P.plan(load("qwen2.5-coder-0.5b/lora"), arch=QWEN_05B, throughput=RATE)
    assert P.calibrate(plan, plan.seconds_per_step / 2).ratio == pytest.approx(0.5)
