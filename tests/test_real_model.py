"""End to end with the real embedded model (installed by .ci/run).

These check the real path: model assembly and verification, the chat template
read from the GGUF file, llama.cpp generation (greedy and sampled candidates),
and the transformers backend on the same weights.
"""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

import slimsql
from slimsql.backends import GenerationConfig

from .conftest import LOGPROB_TOLERANCE, assert_same_distribution, distribution_gap, require_model, sha256

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def llama():
    require_model()
    from slimsql.backends.llama_cpp import LlamaCppBackend

    return LlamaCppBackend()


def test_chat_template_comes_from_the_model(llama):
    prompt = llama._format(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]).prompt
    # Qwen2.5's own ChatML template, as stored in the GGUF metadata.
    assert prompt == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert "{%" in llama.metadata["tokenizer.chat_template"]


def test_model_tokens_round_trip_and_load_is_timed(llama):
    tokens = llama.model.tokenize(b"SELECT count(*) FROM orders", add_bos=False, special=False)
    assert llama.model.detokenize(tokens).decode() == "SELECT count(*) FROM orders"
    assert llama.count_tokens("SELECT count(*) FROM orders") == len(tokens)
    assert 0 < llama.load_seconds < 120


def test_answers_demo_questions(llama, demo_db):
    before = sha256(demo_db)
    conn = slimsql.connect(demo_db, backend=llama)
    answer = conn.ask("How many products are there?")
    assert answer.rows == [(46,)], answer.sql
    answer = conn.ask("How many orders were cancelled?")
    assert answer.rows == [(254,)], answer.sql
    assert answer.model == "qwen2.5-coder-0.5b" and answer.tokens["completion"] > 0
    assert sha256(demo_db) == before


def test_greedy_is_deterministic_and_sampling_gives_n(llama):
    # texts are compared only between calls on one loaded model from one cache state (each call
    # here starts from an empty KV cache): the same arithmetic, so the same tokens on any CPU
    messages = [{"role": "user", "content": "Write a SQL query that counts rows in table t."}]

    def fresh(config):
        llama._forget()
        return llama.generate(messages, config)

    greedy = fresh(GenerationConfig(n=2, max_tokens=24))
    assert len(greedy) == 2 and greedy[0].text == greedy[1].text
    assert fresh(GenerationConfig(max_tokens=24))[0].text == greedy[0].text
    sampled = fresh(GenerationConfig(n=3, temperature=1.2, seed=7, max_tokens=24))
    assert len(sampled) == 3 and len({c.text for c in sampled}) > 1
    again = fresh(GenerationConfig(n=3, temperature=1.2, seed=7, max_tokens=24))
    assert [c.text for c in again] == [c.text for c in sampled]  # seeded


def test_candidates_are_decoded_together(llama):
    messages = [{"role": "user", "content": "Write a SQL query that counts the rows of table t per year."}]
    llama._forget()
    greedy = llama.generate(messages, GenerationConfig(max_tokens=24))[0]
    config = GenerationConfig(n=6, temperature=0.9, seed=3, max_tokens=24)
    together = llama.generate(messages, config)
    assert len(together) == 6 and len({c.text for c in together}) > 1
    assert all(c.logprob is not None and c.logprob <= 0 and c.completion_tokens > 0 for c in together)
    # candidate 0 is the greedy one: one by one, from the greedy call's cache state, it is decoded with
    # the greedy call's arithmetic. (Decoded together with 5 others, its text is not compared: a batch
    # of another size sums in another order, and a near tie may fall either way, by CPU.)
    llama.parallel = False
    try:
        llama._forget()
        one_by_one = llama.generate(messages, config)
    finally:
        llama.parallel = True
    assert len(one_by_one) == 6 and one_by_one[0].text == greedy.text
    assert llama._cached[:5] == llama.prompt_tokens(messages)[:5]  # the prompt stays cached, generated tokens do not


def test_a_later_stage_makes_the_samples_one_call_makes(llama):
    messages = [{"role": "user", "content": "Write a SQL query that lists the names in table t by year."}]
    config = GenerationConfig(n=5, temperature=0.9, seed=3, max_tokens=24)
    llama.parallel = False  # one sequence per decode: the same arithmetic in both calls, so exact equality
    try:
        whole = llama.generate(messages, config)
        rest = llama.generate(messages, replace(config, skip=2))
    finally:
        llama.parallel = True
    assert len({c.text for c in whole}) > 1 and len(rest) == 3
    assert [c.text for c in rest] == [c.text for c in whole[2:]]  # candidate i keeps its seed
    together = llama.generate(messages, replace(config, skip=2))
    assert len(together) == 3 and all(c.completion_tokens > 0 and c.logprob <= 0 for c in together)


def test_a_new_process_loads_and_answers_without_a_word_from_llama_cpp(demo_db):
    # llama.cpp's ~1,800 log lines per load go to the quiet callback (a C function here), with the preload
    require_model()
    out = subprocess.run([sys.executable, "-m", "slimsql", "ask", "--db", str(demo_db), "--json", "--preset", "fast",
                          "How many products are there?"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert json.loads(out.stdout)["rows"] == [[46]]


def test_public_api_one_liner(demo_db):
    require_model()
    answer = slimsql.connect(str(demo_db)).ask("How many products?")
    assert answer.rows == [(46,)]


@pytest.mark.transformers
def test_transformers_backend_same_weights(demo_db):
    require_model()
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from slimsql.backends.transformers import TransformersBackend

    backend = TransformersBackend()
    text = backend.tokenizer.apply_chat_template([{"role": "user", "content": "U"}], tokenize=False,
                                                 add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")
    answer = slimsql.connect(demo_db, backend=backend, preset="fast").ask("How many products are there?")
    assert answer.rows == [(46,)], answer.sql


def test_a_preloaded_model_is_taken_by_the_backend_that_asks_for_it(llama):
    from slimsql.backends import llama_cpp

    assert llama_cpp.preload(None)
    assert not llama_cpp.preload(None)  # one load at a time
    job = llama_cpp._preloaded
    backend = llama_cpp.LlamaCppBackend()
    assert llama_cpp._preloaded is None and job[2] is not None
    _, model, _, context, _ = job[2]  # llama.cpp's handles, loaded in the thread
    assert backend.preloaded and (backend.model.model, backend._ctx.ctx) == (model, context)  # taken, not loaded again
    messages = [{"role": "user", "content": "Write a SQL query that counts rows in table t."}]
    answer = backend.model.tokenize(b"SELECT count(*) FROM t;", add_bos=False, special=False)

    def fresh(loaded, asked=messages):  # from an empty KV cache: the same batch shapes in every load
        loaded._forget()
        return loaded.logprobs(asked, answer)

    # the same model as a load of its own: the same distributions, token by token, within floating-point
    # noise (sampled texts are not compared: they part at a near tie wherever the arithmetic differs)
    assert_same_distribution(fresh(backend), fresh(llama))
    other_question = [{"role": "user", "content": "Write a SQL query that lists the names in table t."}]
    assert distribution_gap(fresh(backend, other_question), fresh(llama)) > 10 * LOGPROB_TOLERANCE
    candidates = backend.generate(messages, GenerationConfig(n=3, temperature=0.8, seed=3, max_tokens=24))
    assert len(candidates) == 3 and all(c.completion_tokens > 0 for c in candidates)
    # other settings than the preload's: the backend loads its own and lets the preload go
    assert llama_cpp.preload(None, 1)
    job = llama_cpp._preloaded
    other = llama_cpp.LlamaCppBackend(n_threads=2)
    assert llama_cpp._preloaded is None and not other.preloaded and not job[1].is_alive()
    assert (other.model.model, other._ctx.ctx) != (backend.model.model, backend._ctx.ctx)
    assert_same_distribution(fresh(other), fresh(backend))


def test_loaded_handles_are_wrapped_as_the_library_wraps_its_own(llama):
    # _load goes through the bindings alone (a thread can run it before llama-cpp-python's wrappers
    # are imported); _wrap must then build those wrappers as their own constructors would
    import llama_cpp
    from llama_cpp import _internals

    from slimsql.backends import llama_cpp as backend

    path = str(llama.model_path)
    own_model = _internals.LlamaModel(path_model=path, params=llama_cpp.llama_model_default_params(), verbose=True)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_threads, params.n_threads_batch = 256, 64, 64, 1, 1
    own_context = _internals.LlamaContext(model=own_model, params=params, verbose=True)
    model, context = backend._wrap(backend._load(path, 1, 256, 64, 1))
    try:
        assert set(vars(model)) == set(vars(own_model)) and set(vars(context)) == set(vars(own_context))
        text = b"SELECT name FROM singer"
        assert model.tokenize(text, add_bos=False, special=False) == own_model.tokenize(text, add_bos=False,
                                                                                         special=False)
        assert (model.n_vocab(), model.metadata()) == (own_model.n_vocab(), own_model.metadata())
        assert context.n_ctx() == own_context.n_ctx() == 256 and context.memory is not None
    finally:
        model.close()
        own_model.close()
    assert context.ctx is None and model.model is None  # closing the model frees its context first
    with pytest.raises(ValueError, match="failed to load"):
        backend._load(str(llama.model_path) + ".missing", 1, 256, 64, 1)
