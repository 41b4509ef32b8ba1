"""Fine-tuning: data rendering (the inference prompts, byte for byte), masking, prefix packing,
the SFT and GRPO runs on a tiny random model, checkpoints, Ctrl-C, resume, rewards, refusals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from slimsql import infer
from slimsql.backends.scripted import ScriptedBackend
from slimsql.errors import InputError
from slimsql.eval.datasets import Example
from slimsql.train import data, recipes, run

from .test_cli import assert_one_line_error
from .test_cli import run as cli
from .train_support import require_training, tiny_qwen  # noqa: F401  (fixture)

PAIRS = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers"),
    ("List all product names.", "SELECT name FROM products"),
    ("How many orders are there?", "SELECT COUNT(*) FROM orders"),
    ("What is the highest product price?", "SELECT MAX(price) FROM products"),
    ("Which customers live in Porto?", "SELECT first_name, last_name FROM customers WHERE city = 'Porto'"),
    ("How many products cost more than 50?", "SELECT COUNT(*) FROM products WHERE price > 50"),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen)


def write_pairs(path: Path, pairs, repeat: int = 1) -> Path:
    with path.open("w") as handle:
        for i in range(repeat):
            for j, (q, sql) in enumerate(pairs):
                handle.write(json.dumps({"id": f"{i}-{j}", "question": f"{q} (variant {i})", "sql": sql}) + "\n")
    return path


def tiny_recipe(base: Path, **sections) -> recipes.Recipe:
    spec = {"method": "lora", "model": {"base": str(base), "dtype": "float32", "max_length": 2048},
            "data": {"eval_examples": 0, "samples": 1},
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "top_layers": 1},
            "training": {"max_steps": 4, "logging_steps": 1, "save_steps": 2, "learning_rate": 1e-3}}
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return recipes.from_dict(spec, "tiny")


# -- rendering: the inference prompt, byte for byte -----------------------------------------

class CountingScripted(ScriptedBackend):
    def __init__(self, tokenizer, **kw):
        super().__init__(**kw)
        self.tokenizer = tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("style,prune", [("sqlite-expert", 0), ("strict-chatml", 0), ("sqlite-expert", 300)])
def test_train_prompt_is_the_inference_prompt(demo_db, tokenizer, style, prune):
    from slimsql.db import open_database

    settings = infer.resolve("fast", style=style, samples=1, prune_tokens=prune)
    question, sql = PAIRS[4]
    backend = CountingScripted(tokenizer, replies=[sql])
    with open_database(demo_db) as db:
        infer.solve(db, backend, question, settings)
    asked = backend.calls[0][0]
    example = Example(id="1", question=question, gold_sql=sql, db_id="shop", db_paths=(demo_db,))
    prepared = data.prepare([example], settings, data.TokenCounter(tokenizer))
    rendered = prepared.examples[0]
    assert rendered.messages == asked
    inference_text = tokenizer.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
    assert data.prompt_text(tokenizer, rendered.messages) == inference_text
    row = data.tokenize(tokenizer, rendered, 4096)
    prompt_ids = tokenizer(inference_text, add_special_tokens=False)["input_ids"]
    cut = row["completion_mask"].index(1)
    assert row["input_ids"][:cut] == prompt_ids  # the tokens inference feeds the model
    if prune:  # the pruned schema, as inference showed it
        whole = data.prepare([example], infer.resolve("fast", style=style, samples=1), data.TokenCounter(tokenizer))
        shown, full = asked[-1]["content"], whole.examples[0].messages[-1]["content"]
        assert shown.count("CREATE TABLE") < full.count("CREATE TABLE")


def test_llama_cpp_counts_tokens_as_the_training_tokenizer(tokenizer, demo_db):
    """Schema pruning counts tokens with the backend's tokenizer at inference and with the Hugging
    Face tokenizer in training: for the same model they must agree, or the pruned prompts differ."""
    from slimsql.backends.llama_cpp import LlamaCppBackend
    from slimsql.db import open_database
    from slimsql.schema import render_create

    with open_database(demo_db) as db:
        text = render_create(db.schema(1))
    llama = LlamaCppBackend()
    for sample in (text, text[:500], "SELECT COUNT(*) FROM orders WHERE status = 'shipped';"):
        assert llama.count_tokens(sample) == data.TokenCounter(tokenizer).count_tokens(sample)


def test_completion_only_labels(tokenizer, demo_db):
    settings = run.settings_for(tiny_recipe(Path("unused")))
    examples = [Example(id=str(i), question=q, gold_sql=s, db_id="shop", db_paths=(demo_db,))
                for i, (q, s) in enumerate(PAIRS[:2])]
    prepared = data.prepare(examples, settings, data.TokenCounter(tokenizer))
    rows = data.tokenized(tokenizer, prepared, 4096)
    for row, (_, sql) in zip(rows, PAIRS):
        mask = row["completion_mask"]
        cut = mask.index(1)
        assert all(mask[cut:]) and not any(mask[:cut])
        assert tokenizer.decode(row["input_ids"][cut:]) == sql + "<|im_end|>"  # the SQL and the end of the turn
        batch = data.collate(data.unpacked([row]), tokenizer.pad_token_id)
        labels = batch["labels"][0].tolist()
        assert labels[:cut] == [-100] * cut and labels[cut:] == row["input_ids"][cut:]


def test_gold_that_fails_and_missing_databases_are_dropped_and_counted(tokenizer, demo_db, tmp_path):
    examples = [Example(id="ok", question="q", gold_sql="SELECT 1", db_id="shop", db_paths=(demo_db,)),
                Example(id="bad", question="q", gold_sql="SELECT nope FROM nothing", db_id="shop", db_paths=(demo_db,)),
                Example(id="write", question="q", gold_sql="DELETE FROM orders", db_id="shop", db_paths=(demo_db,)),
                Example(id="nodb", question="q", gold_sql="SELECT 1", db_id="gone")]
    prepared = data.prepare(examples, run.settings_for(tiny_recipe(Path("x"))), data.TokenCounter(tokenizer))
    assert [e.id for e in prepared.examples] == ["ok"]
    assert prepared.dropped == {"gold SQL fails (QueryError)": 1, "gold SQL fails (UnsafeSQLError)": 1,
                                "no database": 1}
    rows = data.tokenized(tokenizer, prepared, 32)
    assert rows == [] and prepared.dropped["longer than 32 tokens"] == 1


def test_sqlites_double_quoted_strings_are_taught_single_quoted(tokenizer, demo_db, monkeypatch):
    gold = 'SELECT first_name FROM customers WHERE city  =  "Porto"'
    examples = [Example(id="dq", question="q", gold_sql=gold, db_id="shop", db_paths=(demo_db,)),
                Example(id="plain", question="q", gold_sql="SELECT \"city\" FROM customers", db_id="shop",
                        db_paths=(demo_db,))]
    settings, counter = run.settings_for(tiny_recipe(Path("x"))), data.TokenCounter(tokenizer)
    prepared = data.prepare(examples, settings, counter)
    assert [e.completion for e in prepared.examples] == ["SELECT first_name FROM customers WHERE city  =  'Porto'",
                                                        'SELECT "city" FROM customers']
    assert prepared.summary()["changed"] == {"double-quoted strings single-quoted": 1}
    assert data.prepare(examples, settings, counter, quote_strings=False).examples[0].completion == gold
    # a rewrite that is another query is not taught (SQLite compiles it differently): the gold stays
    monkeypatch.setattr(data.metrics, "single_quoted", lambda sql, schema: sql.replace('"Porto"', "'Lisbon'"))
    kept = data.prepare(examples[:1], settings, counter)
    assert kept.examples[0].completion == gold
    assert kept.changed == {"double-quoted strings kept (another query)": 1}


# -- sources through Hugging Face datasets -----------------------------------------------------

def test_sql_create_context_and_gretel_load_through_hf_datasets(tmp_path):
    pytest.importorskip("datasets")
    context = tmp_path / "context.jsonl"
    context.write_text("\n".join(json.dumps(r) for r in [
        {"context": "CREATE TABLE head (age INTEGER, name VARCHAR)", "question": "How many heads are older than 56?",
         "answer": "SELECT COUNT(*) FROM head WHERE age > 56"},
        {"context": "CREATE TABLE broken (", "question": "q", "answer": "SELECT 1"},
    ]) + "\n")
    loaded = data.load(f"sql-create-context:{context}", workdir=tmp_path / "dbs")
    assert [e.executable for e in loaded.examples] == [True, False]
    assert loaded.examples[0].gold_sql == "SELECT COUNT(*) FROM head WHERE age > 56"

    import pandas

    gretel = tmp_path / "gretel.parquet"
    pandas.DataFrame([{"id": 7, "sql_context": "CREATE TABLE t (x INT); INSERT INTO t VALUES (1), (2);",
                       "sql_prompt": "How many rows?", "sql": "SELECT COUNT(*) FROM t", "domain": "x"}]).to_parquet(gretel)
    loaded = data.load(f"gretel:{gretel}", workdir=tmp_path / "dbs")
    ex = loaded.examples[0]
    assert ex.id == "7" and ex.question == "How many rows?" and ex.executable
    from slimsql.db import open_database

    with open_database(ex.db_paths[0]) as db:
        assert db.execute(ex.gold_sql).rows == [(2,)]  # the context's INSERTs ran


def test_hf_source_errors_are_one_line(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"question": "q", "sql": "SELECT 1"}) + "\n")
    with pytest.raises(InputError, match="has no context, answer column"):
        data.load(f"sql-create-context:{wrong}", workdir=tmp_path)
    with pytest.raises(InputError, match="cannot load the dataset nobody/nothing-here"):
        data.load("gretel:nobody/nothing-here", workdir=tmp_path)
    with pytest.raises(InputError, match="unknown training data"):
        data.load("imagenet")


# -- prefix packing ---------------------------------------------------------------------------

def test_a_prefix_pack_trains_exactly_like_its_examples_one_by_one(tiny_qwen, tokenizer, demo_db):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM

    from slimsql.train.sft import label_loss

    settings = run.settings_for(tiny_recipe(tiny_qwen))
    pairs = PAIRS + [PAIRS[0]]  # a duplicate question: two identical prompts in one pack
    examples = [Example(id=str(i), question=q, gold_sql=s, db_id="shop", db_paths=(demo_db,))
                for i, (q, s) in enumerate(pairs)]
    rows = data.tokenized(tokenizer, data.prepare(examples, settings, data.TokenCounter(tokenizer)), 4096)
    packs = data.pack(rows, 4096)
    assert len(packs) == 1 and packs[0]["examples"] == len(pairs)
    assert len(packs[0]["input_ids"]) < 0.5 * sum(len(r["input_ids"]) for r in rows)  # the schema once
    segments, labels = packs[0]["segments"], packs[0]["labels"]
    for k in range(1, len(pairs) + 1):  # each example's own part starts with a prompt token
        assert labels[segments.index(k)] == -100

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen, dtype=torch.float32)

    def reference(batch):  # every position through the LM head, as a plain causal LM loss
        model.zero_grad()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                                 batch["labels"][:, 1:].reshape(-1), ignore_index=-100,
                                                 reduction="sum")
        loss.backward()
        return loss.item(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    def trained(batch):  # what the trainer computes: the LM head at label positions only
        model.zero_grad()
        total, _, target = label_loss(model, batch)
        total.backward()
        return total.item(), model.model.layers[0].self_attn.q_proj.weight.grad.clone(), int((target != -100).sum())

    packed = data.collate(packs, tokenizer.pad_token_id)
    single = [reference(data.collate([one], tokenizer.pad_token_id)) for one in data.unpacked(rows)]
    loss, grad, labelled = trained(packed)
    assert labelled == sum(sum(r["completion_mask"]) for r in rows)
    assert loss == pytest.approx(sum(s[0] for s in single), rel=1e-4)
    assert torch.allclose(grad, sum(s[1] for s in single), rtol=1e-3, atol=1e-6)
    assert reference(packed)[0] == pytest.approx(loss, rel=1e-5)
    padded = data.collate(data.unpacked(rows[:2]), tokenizer.pad_token_id)  # a right-padded batch of two
    assert trained(padded)[0] == pytest.approx(single[0][0] + single[1][0], rel=1e-4)


# -- SFT runs -----------------------------------------------------------------------------------

def test_sft_run_logs_keeps_best_by_ex_and_resumes(tiny_qwen, demo_db, tmp_path):  # noqa: F811
    from slimsql.train import sft

    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS + [("broken", "SELECT nope FROM nothing")], repeat=3)
    recipe = tiny_recipe(tiny_qwen, data={"eval_examples": 3}, training={"eval_steps": 2, "packing": True})
    out = tmp_path / "run"
    result = sft.train(recipe, str(pairs), out, db=str(demo_db))
    record = json.loads((out / "train.json").read_text())
    counts = record["data"]
    assert counts["dev_examples"] == 3 and counts["read"] == 21 - 3  # the dev slice is held out of training
    assert set(counts["dropped"]) == {"gold SQL fails (QueryError)"}  # the broken pair, as often as it is left
    assert counts["kept"] + counts["dropped"]["gold SQL fails (QueryError)"] == counts["read"]
    assert record["adapter"] == "adapter"
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "base" / "config.json").exists()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss" in e and "learning_rate" in e for e in log)
    scores = [e for e in log if "dev_ex" in e]
    assert [e["step"] for e in scores] == [2, 4] and record["best"]["step"] in (2, 4)
    assert (out / "loss.png").exists() and result.steps == 4 and result.examples > 4  # packs hold several
    with pytest.raises(InputError, match="already holds a run"):
        sft.train(recipe, str(pairs), out, db=str(demo_db))
    longer = recipes.override(recipe, **{"training.max_steps": 6})
    with pytest.raises(InputError, match=r"other recipe settings \(training.max_steps: 4 then, 6 now\)"):
        sft.train(longer, str(pairs), out, db=str(demo_db), resume=True)


def test_a_resume_refusal_names_the_settings_that_differ():
    then = {"data": {"style": "x", "samples": 1}, "lora": {"r": 8}}
    now = {"data": {"style": "x", "samples": 1, "quote_strings": True}, "lora": {"r": 16}}
    assert run._differences(then, now) == [("data.quote_strings", "not set", "true"), ("lora.r", "8", "16")]
    assert run._differences(now, now) == []


def test_ctrl_c_leaves_a_checkpoint_and_resume_continues(tiny_qwen, demo_db, tmp_path, monkeypatch):  # noqa: F811
    from transformers import TrainerCallback

    from slimsql.train import sft

    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS, repeat=4)
    recipe = tiny_recipe(tiny_qwen, training={"max_steps": 6, "save_steps": 100})
    real = run.callbacks

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C

    def with_ctrl_c(*args, **kwargs):
        hooks, dev_ex, interrupt = real(*args, **kwargs)
        return [CtrlC(), *hooks], dev_ex, interrupt

    monkeypatch.setattr(run, "callbacks", with_ctrl_c)
    out = tmp_path / "run"
    first = sft.train(recipe, str(pairs), out, db=str(demo_db))
    assert first.interrupted and first.steps == 2
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and (out / "adapter" / "adapter_config.json").exists()
    monkeypatch.setattr(run, "callbacks", real)
    second = sft.train(recipe, str(pairs), out, db=str(demo_db), resume=True)
    assert not second.interrupted and second.steps == 4  # 2 .. 6
    assert json.loads((out / "train.json").read_text())["global_step"] == 6


def test_full_fine_tune_saves_whole_weights(tiny_qwen, demo_db, tmp_path):  # noqa: F811
    from slimsql.train import sft

    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    recipe = recipes.from_dict({"method": "full", "model": {"base": str(tiny_qwen), "dtype": "float32"},
                                "data": {"eval_examples": 0},
                                "training": {"max_steps": 2, "logging_steps": 1, "save_steps": 100,
                                             "learning_rate": 1e-4}}, "tiny-full")
    sft.train(recipe, str(pairs), tmp_path / "run", db=str(demo_db))
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert record["model"] == "model" and (tmp_path / "run" / "model" / "config.json").exists()

    from slimsql.train import grpo  # SLM-SQL's second stage: full-parameter GRPO from the full SFT model

    stage2 = recipes.from_dict({"method": "grpo", "model": {"base": str(tiny_qwen), "dtype": "float32",
                                                            "max_length": 1400},
                                "data": {"eval_examples": 0},
                                "training": {"max_steps": 1, "batch_size": 2, "save_steps": 100,
                                             "learning_rate": 1e-5},
                                "grpo": {"num_generations": 2, "max_completion_length": 4}}, "tiny-full-grpo")
    grpo.train(stage2, str(pairs), tmp_path / "grpo", db=str(demo_db), from_run=tmp_path / "run")
    record = json.loads((tmp_path / "grpo" / "train.json").read_text())
    assert record["model"] == "model" and record["adapter"] is None
    with pytest.raises(InputError, match="no LoRA adapter"):  # a LoRA recipe cannot continue a full model
        grpo.train(tiny_recipe(tiny_qwen, method="grpo", training={"batch_size": 2}, grpo={"num_generations": 2}),
                   str(pairs),
                   tmp_path / "grpo2", db=str(demo_db), from_run=tmp_path / "run")
    assert not (tmp_path / "grpo2").exists()  # refused before anything was written


def test_all_linear_reaches_peft_as_its_shorthand():
    require_training()
    from slimsql.train.model import lora_config

    recipe = tiny_recipe(Path("x"), lora={"target_modules": "all-linear", "top_layers": 0})
    assert lora_config(recipe, 24).target_modules == "all-linear"  # PEFT's own shorthand
    on_top = recipes.override(recipe, **{"lora.top_layers": 2})  # PEFT takes no layer choice with it: spelled out
    config = lora_config(on_top, 24, ["down_proj", "q_proj"])
    assert config.target_modules == {"down_proj", "q_proj"} and list(config.layers_to_transform) == [22, 23]
    with pytest.raises(InputError):
        lora_config(on_top, 24)


def test_all_linear_names_every_linear_module_of_the_layers(tiny_qwen):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM

    from slimsql.train.model import linear_names

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen, dtype=torch.float32)
    assert linear_names(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_qlora_on_a_machine_without_cuda_is_one_line_naming_lora():
    require_training()
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = cli("train", "sft", "--recipe", "sqlforge-mistral-7b/qlora", "--data", "spider", "--out", "/tmp/never")
    assert_one_line_error(out, 2)
    assert "CUDA" in out.stderr and "qwen2.5-coder-0.5b/lora" in out.stderr


def test_train_cli_errors_are_one_line(tmp_path):
    assert_one_line_error(cli("train", "sft", "--recipe", "qwen2.5-coder-0.5b/lorra", "--data", "spider",
                              "--out", str(tmp_path / "r")), 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: lora\nlora: {r: 4}\ntraining: {learning_rte: 0.1}\n")
    out = cli("train", "plan", "--recipe", str(bad))
    assert_one_line_error(out, 2)
    assert "learning_rte" in out.stderr and "learning_rate" in out.stderr
    assert_one_line_error(cli("train", "export", str(tmp_path), "--format", "gguf-lora"), 2)


# -- GRPO -------------------------------------------------------------------------------------

def test_rewards_are_the_evaluations_execution_match(demo_db):
    from slimsql.train.grpo import Rewards

    example = Example(id="e", question="How many customers?", gold_sql="SELECT COUNT(*) FROM customers",
                      db_id="shop", db_paths=(demo_db,))
    rewards = Rewards([example])
    completions = [[{"role": "assistant", "content": "SELECT COUNT(customer_id) FROM customers"}],  # same result
                   [{"role": "assistant", "content": "SELECT COUNT(*) FROM orders"}],  # runs, wrong result
                   [{"role": "assistant", "content": "I cannot answer that."}],  # no SQL
                   [{"role": "assistant", "content": "Here it is:\n```sql\nSELECT COUNT(*) FROM customers\n```"}],
                   [{"role": "assistant", "content": "DELETE FROM customers"}]]  # never run
    ids = ["e"] * len(completions)
    assert rewards.execution([None] * 5, completions, example_id=ids) == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert rewards.format([None] * 5, completions) == [1.0, 1.0, 0.0, 0.0, 1.0]
    rewards.close()


def test_grpo_run_from_an_sft_adapter(tiny_qwen, demo_db, tmp_path):  # noqa: F811
    from slimsql.train import grpo, sft

    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    sft.train(tiny_recipe(tiny_qwen, training={"max_steps": 1}), str(pairs), tmp_path / "sft", db=str(demo_db))
    recipe = tiny_recipe(tiny_qwen, method="grpo", model={"max_length": 1400},
                         training={"max_steps": 2, "batch_size": 2, "save_steps": 100},
                         grpo={"num_generations": 2, "max_completion_length": 8})
    result = grpo.train(recipe, str(pairs), tmp_path / "grpo", db=str(demo_db), from_run=tmp_path / "sft")
    assert result["steps"] == 2 and result["first_reward"] is not None
    log = [json.loads(line) for line in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    assert all("rewards/execution_reward/mean" in e for e in log if "reward" in e)
    assert (tmp_path / "grpo" / "adapter" / "adapter_config.json").exists()
    assert len(result["reward_by_epoch"]) == 1 and 0 <= result["reward_by_epoch"][0] <= 1.2


def test_grpo_rewards_are_averaged_per_epoch():
    from slimsql.train.grpo import by_epoch

    log = [{"step": 1, "epoch": 0.5, "reward": 0.2}, {"step": 2, "epoch": 1.0, "reward": 0.4, "loss": 0.1},
           {"step": 3, "epoch": 1.5, "reward": 0.6}, {"step": 4, "epoch": 2.0, "reward": 1.0},
           {"step": 4, "epoch": 2.0, "dev_ex": 0.5}]
    assert by_epoch(log) == [0.3, 0.8]
    resumed = log[:3] + [{"step": 3, "epoch": 1.5, "reward": 0.8}] + log[3:]  # logged again after a resume
    assert by_epoch(resumed) == [0.3, 0.9]
    assert by_epoch(log, "missing") == []


# -- a fine-tuned model is asked as it was taught ---------------------------------------------

def test_a_registered_fine_tune_is_asked_with_its_training_prompt(monkeypatch):
    from slimsql import cli, models

    class Found:
        style, samples, prune_tokens = "strict-chatml", 3, 500

    monkeypatch.setattr(models, "find_local", lambda name: Found() if name == "ft-q05-lora" else None)
    parser = cli.build_parser()
    for command in (["ask", "--db", "x.sqlite", "q"], ["eval", "spider", "--out", "o"], ["serve", "--db", "x.sqlite"]):
        args = parser.parse_args(command + ["--model", "ft-q05-lora"])
        settings = cli.settings_from_args(args)
        assert (settings.style, settings.samples, settings.prune_tokens) == ("strict-chatml", 3, 500), command
    args = parser.parse_args(["ask", "--db", "x.sqlite", "q", "--model", "ft-q05-lora", "--style", "compact",
                              "--samples", "0"])
    settings = cli.settings_from_args(args)
    assert (settings.style, settings.samples, settings.prune_tokens) == ("compact", 0, 500)  # flags win
    args = parser.parse_args(["ask", "--db", "x.sqlite", "q", "--model", "qwen2.5-coder-0.5b"])
    assert cli.settings_from_args(args).style == "sqlite-expert"  # other models: the defaults


def test_a_resumed_run_keeps_its_best_score(tmp_path):
    pytest.importorskip("transformers")
    recipe = tiny_recipe(Path("unused"), data={"eval_examples": 2})
    folder = run.begin(tmp_path / "r", recipe, resume=False, method="lora", source={"data": "d", "db": None})
    folder.update(best={"step": 40, "dev_ex": 0.9, "dev_examples": 2})
    _, dev_ex, _ = run.callbacks(folder, recipe, [], None, "r", lambda m: None, run.settings_for(recipe))
    assert dev_ex.best == 0.9
    with pytest.raises(InputError, match="trained on"):
        run.check_begin(tmp_path / "r", recipe, resume=True, source={"data": "other", "db": None})


# -- GRPO on prompts with mixed rewards (grpo.select: mixed) -----------------------------------

def _scripted_execution(self, prompts, completions, example_id, **_):
    """Execution rewards by example id ``I-J``: J % 3 == 0 always right, 1 always wrong, 2 mixed
    (every other completion right)."""
    kinds = [int(key.split("-")[1]) % 3 for key in example_id]
    return [1.0 if kind == 0 else 0.0 if kind == 1 else float(i % 2 == 0) for i, kind in enumerate(kinds)]


def test_grpo_trains_only_on_screened_prompts_with_mixed_rewards(tiny_qwen, demo_db, tmp_path, monkeypatch):  # noqa: F811
    from slimsql.train import grpo

    monkeypatch.setattr(grpo.Rewards, "execution", _scripted_execution)
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS, repeat=2)  # 12 prompts, 4 of them mixed
    recipe = tiny_recipe(tiny_qwen, method="grpo", model={"max_length": 1400}, data={"max_examples": 3},
                         training={"max_steps": 2, "batch_size": 2, "save_steps": 100},
                         grpo={"num_generations": 2, "max_completion_length": 4, "select": "mixed"})
    grpo.train(recipe, str(pairs), tmp_path / "grpo", db=str(demo_db))
    record = json.loads((tmp_path / "grpo" / "train.json").read_text())
    found = record["data"]["screen"]
    assert found["kept"] == record["data"]["kept"] == 3 and len(found["kept_ids"]) == 3
    assert all(int(key.split("-")[1]) % 3 == 2 for key in found["kept_ids"])
    skipped = found["skipped"]["all right"] + found["skipped"]["all wrong"]
    assert found["screened"] == skipped + 3 <= 12 and record["data"]["candidates"] == 12
    assert found["execution_reward_kept"] == 0.5


def test_grpo_screen_that_finds_no_mixed_prompt_is_one_error(tiny_qwen, demo_db, tmp_path, monkeypatch):  # noqa: F811
    from slimsql.train import grpo

    monkeypatch.setattr(grpo.Rewards, "execution", lambda self, p, completions, example_id, **_: [0.0] * len(completions))
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    recipe = tiny_recipe(tiny_qwen, method="grpo", model={"max_length": 1400}, data={"max_examples": 2},
                         training={"max_steps": 1, "batch_size": 2},
                         grpo={"num_generations": 2, "max_completion_length": 4, "select": "mixed", "screen_limit": 3})
    with pytest.raises(InputError, match="none of the 3 screened prompts had mixed execution rewards"):
        grpo.train(recipe, str(pairs), tmp_path / "grpo", db=str(demo_db))


def test_a_resumed_grpo_run_keeps_its_screened_prompts(tmp_path):
    from slimsql.train import grpo

    folder = run.RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write({"data": {"screen": {"kept_ids": ["a", "c"]}}})
    rows = [{"prompt": [], "example_id": key} for key in "abcd"]

    class NoScreen:  # a new screen would sample the model: it must not happen
        def __getattr__(self, name):
            raise AssertionError("screened again")

    recipe = recipes.from_dict({"method": "grpo", "data": {"max_examples": 2}, "training": {"batch_size": 4},
                                "grpo": {"select": "mixed"}}, "r")
    kept = grpo._selected(folder, NoScreen(), NoScreen(), rows, None, recipe, 2, resume=True)
    assert [row["example_id"] for row in kept] == ["a", "c"]


@pytest.mark.parametrize("spec,message", [
    ({"grpo": {"select": "some"}}, "grpo.select"),
    ({"grpo": {"select": "mixed"}}, "needs data.max_examples"),
])
def test_grpo_selection_is_checked_in_the_recipe(spec, message):
    with pytest.raises(InputError, match=message):
        recipes.from_dict({"method": "grpo", "training": {"batch_size": 4}, **spec}, "r")


def test_a_bfloat16_recipe_trains_in_float32_on_a_cpu_without_bfloat16(monkeypatch):
    from slimsql.train import model

    recipe = recipes.load("qwen2.5-coder-0.5b/lora")
    assert recipe.model.dtype == "bfloat16"
    monkeypatch.setattr(model, "has_cuda", lambda: False)
    monkeypatch.setattr(model, "cpu_has_bfloat16", lambda: False)
    assert model.training_dtype(recipe) == "float32" and "no bfloat16 arithmetic" in model.dtype_note(recipe)
    monkeypatch.setattr(model, "cpu_has_bfloat16", lambda: True)
    assert model.training_dtype(recipe) == "bfloat16" and model.dtype_note(recipe) is None
    monkeypatch.setattr(model, "cpu_has_bfloat16", lambda: False)
    monkeypatch.setattr(model, "has_cuda", lambda: True)  # a GPU computes in bfloat16 whatever the CPU
    assert model.training_dtype(recipe) == "bfloat16"


def test_a_grpo_run_plots_its_reward_by_step_and_epoch(tmp_path):
    pytest.importorskip("matplotlib")
    folder = run.RunFolder(tmp_path / "run")
    folder.path.mkdir()
    for step in range(1, 7):
        folder.log({"step": step, "epoch": step / 3, "loss": 0.1 * step, "reward": step / 6})
    path = run.plot_loss(folder)
    assert path == folder.path / "loss.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
