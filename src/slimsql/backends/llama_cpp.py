"""llama.cpp through llama-cpp-python: the default, CPU-friendly backend.

The chat template is read from the GGUF file's own metadata and rendered with
llama-cpp-python's Jinja2 formatter. Decoding runs on llama.cpp's own batch API
(not ``create_completion``) for two reasons:

* **Many candidates at the cost of few.** The ``n`` candidates of one prompt are
  decoded together as parallel sequences: the prompt is evaluated once in
  sequence 0, its KV cells are shared with sequences 1..n-1 (``seq_cp`` on a
  unified KV cache), and every decoding step advances all unfinished sequences
  in one batch. Sequences whose tokens so far are identical (frequent: a small
  model is confident about most tokens) share one batch entry, tagged with all
  their sequence ids, so the step computes each distinct continuation once.
  Each sequence has its own sampler chain (candidate 0 greedy when
  ``greedy_first``) seeded by its index, so a call that skips the first few
  (``GenerationConfig.skip``, a vote in stages) draws the others as one call for
  all would. Not bit for bit: llama.cpp's arithmetic differs in its last bits
  with the batch's size, which can flip a token where the model is nearly
  undecided, so even the greedy candidate can differ between ``n = 1`` and ``n = 8``.
* **Prompt cache.** The tokens of the last prompt stay in sequence 0; a prompt
  that shares a prefix with it (the schema, in every prompt style) only
  evaluates the rest. Generated tokens are removed after each call.
* **Persistent prefix cache.** :meth:`remember` evaluates a prompt prefix (the
  schema part, rendered without a question) and saves its state to disk
  (:mod:`slimsql.backends.prefix_cache`); a new process on a database seen before
  loads that state instead of evaluating the schema again.

* **Loading while Python imports.** :func:`preload` (called by the ``slimsql``
  command before it imports the rest of slimsql) loads the model and its context in
  a thread: llama.cpp's load is C code that runs without the GIL, so it overlaps
  the imports on another core. Only llama-cpp-python's ctypes bindings are imported
  before the load starts (:func:`_bindings`); its Python wrappers, numpy and the rest
  come after. The backend takes that load when it asks for the same file and
  settings, and loads its own otherwise.

* **Local LoRA models.** A model exported as a LoRA GGUF (``slimsql train export``)
  loads the unchanged base GGUF and sets the adapter on the context; the adapter's
  SHA-256 is part of the prefix store's model key.

(llama-cpp-python's LlamaRAMCache is not used: its saved states carry the full
logits array, which its capacity does not count, and it grew past 20 GB over a
Spider run.)
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import importlib.util
import os
import sys
import threading
import time
from typing import Sequence

from .. import models
from ..errors import ModelError
from . import Candidate, GenerationConfig, Message, sample_limit
from .prefix_cache import MIN_TOKENS, PrefixStore, shared

#: Sampler settings of llama.cpp's defaults that slimsql keeps (create_completion's).
TOP_K, MIN_P = 40, 0.05
#: A local model's LoRA GGUF is applied at its trained strength (alpha / rank, stored in the file).
LORA_SCALE = 1.0


# -- loading ---------------------------------------------------------------------


def _load_key(path, n_threads: int | None, n_ctx: int, n_batch: int, max_sequences: int) -> tuple:
    """Everything a load depends on: the model file and the context's settings."""
    return (str(path), n_threads or os.cpu_count() or 1, n_ctx, n_batch, max_sequences)


#: The llama_cpp package, made by :func:`_bindings` with its ``__init__`` not yet run: (spec, module).
_unfinished: tuple | None = None


def _bindings():
    """llama-cpp-python's ctypes bindings (its module ``llama_cpp.llama_cpp``), importing as
    little else as possible: all a load needs.

    ``import llama_cpp`` runs the package's ``__init__``, which imports the bindings and then
    its high-level ``Llama`` (numpy, Jinja2, ...) before a load could begin. When the package is not imported yet, its module is made from its spec without
    running ``__init__``, the bindings are imported into it and their names are set on it
    (what the ``__init__``'s ``from .llama_cpp import *`` does); :func:`_finish_import` then
    runs the ``__init__`` on that same module, while the load runs."""
    global _unfinished
    if "llama_cpp" in sys.modules:
        return importlib.import_module("llama_cpp.llama_cpp")
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.loader is None:
        raise ImportError("llama-cpp-python is not installed")
    package = importlib.util.module_from_spec(spec)
    sys.modules["llama_cpp"] = package
    try:
        lib = importlib.import_module("llama_cpp.llama_cpp")
    except BaseException:
        del sys.modules["llama_cpp"]
        raise
    package.__dict__.update({name: value for name, value in vars(lib).items() if not name.startswith("_")})
    _unfinished = (spec, package)
    return lib


def _finish_import() -> None:
    """Run the ``__init__`` of the package :func:`_bindings` left unfinished (nothing if none);
    if it fails, the package is forgotten as a failed import is, and the error raised."""
    global _unfinished
    if _unfinished is None:
        return
    (spec, package), _unfinished = _unfinished, None
    try:
        spec.loader.exec_module(package)
    except BaseException:
        if sys.modules.get("llama_cpp") is package:
            del sys.modules["llama_cpp"]
        raise


@functools.cache
def _quiet_logs() -> None:
    """Drop llama.cpp's log lines (about 1,800 per load; its errors come back as return codes).

    llama-cpp-python's own callback prints a ggml warning as an error (its level table
    predates ggml's renumbering), which its non-verbose load hides by redirecting the
    process's stdout and stderr to /dev/null: not something a thread may do while the
    main thread could print. This callback prints nothing, so nothing is redirected.

    Where it can, the callback is a C function (:func:`_native_noop`): a Python one
    needs the GIL for each of those calls, so a load in the preload thread would wait
    about 1,800 times for the thread that imports."""
    lib = _bindings()
    import llama_cpp._logger  # noqa: F401  (installs its callback on import: ours must come after)

    global _QUIET_CALLBACK, _QUIET_IN_C
    native = _native_noop(lib.llama_log_callback)
    _QUIET_IN_C = native is not None
    _QUIET_CALLBACK = native or lib.llama_log_callback(lambda level, text, user_data: None)  # kept alive here
    lib.llama_log_set(_QUIET_CALLBACK, ctypes.c_void_p(0))
    lib.llama_backend_init()


_QUIET_CALLBACK = None
_QUIET_IN_C = False  # the callback is a C function: log lines take no GIL
#: Machines whose C calling convention passes a call's first arguments in registers and
#: leaves them to the caller, so a C function may be called with more arguments than it reads.
_REGISTER_ARGUMENTS = ("x86_64", "amd64", "aarch64", "arm64")


def _native_noop(callback_type):
    """libc's ``abs`` as a ``callback_type`` (llama.cpp's log callback), or None where that
    is not known to be safe. ``abs`` reads only its first argument (the log level) and
    returns, touching nothing: on the machines of :data:`_REGISTER_ARGUMENTS` a call with
    the callback's three arguments is then harmless (C leaves calling a function through
    another signature undefined; these calling conventions define it), and llama.cpp
    ignores what it returns. No Python runs, so no GIL is taken."""
    if os.name != "posix" or os.uname().machine.lower() not in _REGISTER_ARGUMENTS:
        return None
    try:
        address = ctypes.cast(ctypes.CDLL(None).abs, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None
    return callback_type(address) if address else None


def _load(path: str, threads: int, n_ctx: int, n_batch: int, max_sequences: int) -> tuple:
    """Load the model alone (weights, tokenizer, metadata) and make our decoding context,
    through the bindings only (so a thread can do it before llama-cpp-python's Python
    wrappers are imported): llama.cpp's handles, for :func:`_wrap`.

    Not llama-cpp-python's Llama: that wrapper builds a second context and compiles the
    chat template again, about 0.15 s of every process start."""
    lib = _bindings()
    _quiet_logs()
    model_params = lib.llama_model_default_params()
    model = lib.llama_model_load_from_file(path.encode("utf-8"), model_params)
    if not model:
        raise ValueError(f"failed to load model from file: {path}")
    params = _context_params(lib, threads, n_ctx, n_batch, max_sequences)
    context = lib.llama_init_from_model(model, params)
    if not context:
        lib.llama_model_free(model)
        raise ValueError("failed to create a llama.cpp context")
    return path, model, model_params, context, params


def _context_params(lib, threads: int, n_ctx: int, n_batch: int, max_sequences: int):
    """Our decoding context's settings: one KV cache shared by all sequences (unified)."""
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
    params.n_threads = params.n_threads_batch = threads
    params.n_seq_max, params.kv_unified = max_sequences, True
    return params


def _wrap(loaded: tuple):
    """The handles of :func:`_load` in llama-cpp-python's own model and context wrappers,
    as their constructors would have made them (those constructors also load: these are
    their attributes after the load, in llama-cpp-python 0.3.36, scripts/install-llama.sh;
    ``test_loaded_handles_are_wrapped_as_the_library_wraps_its_own`` checks it)."""
    import llama_cpp
    from llama_cpp import _internals

    path, handle, model_params, context_handle, params = loaded
    model = _internals.LlamaModel.__new__(_internals.LlamaModel)
    model.path_model, model.params, model.verbose = path, model_params, True
    model._exit_stack, model.sampler, model.custom_samplers = contextlib.ExitStack(), None, []
    model.model, model.vocab = handle, llama_cpp.llama_model_get_vocab(handle)
    _free_on_close(model, "model", llama_cpp.llama_model_free)
    return model, _wrap_context(model, context_handle, params)


def _wrap_context(model, handle, params):
    """A context handle of ``model`` (a wrapped model) in llama-cpp-python's context wrapper."""
    import llama_cpp
    from llama_cpp import _internals

    context = _internals.LlamaContext.__new__(_internals.LlamaContext)
    context.model, context.params, context.verbose = model, params, True
    context._exit_stack, context.sampler = contextlib.ExitStack(), None
    context.ctx, context.memory = handle, llama_cpp.llama_get_memory(handle)
    _free_on_close(context, "ctx", llama_cpp.llama_free)
    model._exit_stack.callback(context.close)  # the context is freed before its model
    return context


def _free_on_close(wrapper, attribute: str, free) -> None:
    """On ``wrapper.close()``, free its llama.cpp handle ``attribute`` once (as its own constructor arranges)."""
    def close() -> None:
        handle = getattr(wrapper, attribute)
        if handle is not None:
            free(handle)
            setattr(wrapper, attribute, None)

    wrapper._exit_stack.callback(close)


#: The context settings a backend gets unless told otherwise (and the preload loads with).
#: N_CTX is where the context starts: a prompt and its candidates that need more get a larger
#: one (:meth:`LlamaCppBackend._fit`). Its KV cache is most of what making a context costs
#: (0.05 s at 4,096 tokens, 0.09 s at 8,192: benchmarks/results/llama-costs-*.json), and 4,096
#: holds the demo's or a Spider prompt with 8 candidates of 256 tokens.
N_CTX, N_BATCH, MAX_SEQUENCES = 4096, 512, 16
#: A load begun by :func:`preload`: [key, thread, handles or None].
_preloaded: list | None = None
_preload_lock = threading.Lock()
#: While the preload thread runs with a Python log callback (no C one, :func:`_native_noop`),
#: Python threads switch this often (seconds) instead of every 5 ms: llama.cpp calls the
#: callback about 1,800 times per load, and each call would otherwise wait for the importing thread.
PRELOAD_SWITCH_INTERVAL = 1e-5


def preload(model: str | None, n_threads: int | None = None) -> bool:
    """Start loading registry model ``model`` (None: the default) in a thread, with the
    backend's default settings; True if started. Only a model already assembled and
    verified is loaded this way (no download, no hashing, nothing printed); anything
    else, and any failure, is left to the backend, which loads as usual and reports it.

    Only llama-cpp-python's bindings are imported before the thread starts; the rest of
    the package is imported after it, while the model loads."""
    spec = models.find(model or models.DEFAULT_MODEL)
    path = models.cache_path(spec)
    if not models.is_verified(path, spec.sha256):
        return False
    try:
        return _start_load(_load_key(path, n_threads, N_CTX, N_BATCH, MAX_SEQUENCES))
    finally:  # the rest of llama-cpp-python, while the model loads (and whatever happened before)
        _finish_import()


def _start_load(key: tuple) -> bool:
    """Begin :func:`_load` of ``key`` in a thread (one at a time); True if it started."""
    global _preloaded
    _quiet_logs()  # here, not in the thread: its Python imports would only take turns with the caller's
    job: list = [key, None, None]
    interval = sys.getswitchinterval()
    # a Python log callback takes the GIL once per log line: switch often while it loads
    switch = interval if _QUIET_IN_C else PRELOAD_SWITCH_INTERVAL

    def load() -> None:
        try:
            job[2] = _load(*key)
        except Exception:  # noqa: BLE001 - the backend loads again and reports it
            pass
        finally:
            sys.setswitchinterval(interval)

    with _preload_lock:
        if _preloaded is not None:  # one at a time
            return False
        job[1] = threading.Thread(target=load, name="slimsql-preload", daemon=True)
        sys.setswitchinterval(switch)
        try:
            job[1].start()
        except RuntimeError:  # no thread to be had: the backend loads as usual
            sys.setswitchinterval(interval)
            return False
        _preloaded = job
    return True


def _take_preloaded(key: tuple):
    """The preloaded handles if they were loaded for ``key``; else None (and they are let go)."""
    global _preloaded
    with _preload_lock:
        job, _preloaded = _preloaded, None
    if job is None:
        return None
    wanted, thread, _ = job
    thread.join()
    if wanted == key or job[2] is None:
        return job[2]
    _wrap(job[2])[0].close()  # loaded for other settings: freed (its context first)
    return None


class LlamaCppBackend:
    name = "llama-cpp"

    def __init__(self, model: str | None = None, *, n_threads: int | None = None, n_ctx: int = N_CTX,
                 n_batch: int = N_BATCH, max_sequences: int = MAX_SEQUENCES, parallel: bool = True,
                 progress=None, on_load=None, prefix_cache: bool | None = None, prefix_cache_dir=None, **_):
        resolved = models.resolve(model, progress)
        if resolved.kind == "safetensors":
            raise ModelError(f"{resolved.name} is a safetensors export, for --backend transformers; for llama.cpp "
                             f"export the run as GGUF (slimsql train export RUN --format gguf)")
        try:
            _finish_import()  # a package the bindings left unfinished (a preload, or bindings asked for alone)
            import llama_cpp
            from llama_cpp import _internals
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise ModelError("llama-cpp-python is not installed; install it with: pip install 'slimsql[llama]'") from None
        self._lib, self._internals = llama_cpp, _internals
        self.model_name = resolved.name
        self.model_path = resolved.path
        self.parallel = parallel
        if on_load:
            on_load(resolved)
        start = time.perf_counter()
        key = _load_key(resolved.path, n_threads, n_ctx, n_batch, max_sequences)
        loaded = _take_preloaded(key)
        self.preloaded = loaded is not None  # then load_seconds is the wait for the preload thread
        if loaded is None:
            try:
                loaded = _load(*key)
            except (ValueError, RuntimeError, OSError) as err:
                raise ModelError(f"llama.cpp cannot load {resolved.path}: {err}") from None
        self.model, self._ctx = _wrap(loaded)
        self._threads = key[1]
        self.lora, self._lora_adapter = resolved.lora, None
        if resolved.lora is not None:
            self._apply_lora(resolved.lora)
        self.n_ctx, self.n_batch, self.max_sequences = n_ctx, n_batch, max_sequences
        self._batch = _internals.LlamaBatch(n_tokens=max(n_batch, max_sequences), embd=0,
                                            n_seq_max=max_sequences, verbose=False)
        self._vocab = self.model.vocab
        self._n_vocab = self.model.n_vocab()
        self._cached: list[int] = []  # the tokens held by sequence 0 of the KV cache
        self._candidates = None  # the whole vocabulary's logits, for a grammar's masked draw
        if prefix_cache is None:  # on unless switched off for the whole environment
            prefix_cache = os.environ.get("SLIMSQL_PREFIX_CACHE", "1").lower() not in ("0", "off", "no", "false")
        # a LoRA changes every state: its hash is part of the key, so an adapter never meets the base's states.
        # The context's size is not: a state holds one sequence's cells, which any context large enough takes.
        adapter = {} if resolved.lora is None else {
            "lora": resolved.lora_sha256 or models.sha256_file(resolved.lora), "lora_scale": LORA_SCALE}
        self.store = PrefixStore(PrefixStore.model_key(resolved.path, llama_cpp=llama_cpp.__version__, **adapter),
                                 prefix_cache_dir) if prefix_cache else None
        self._remembered: set[int] = set()  # prefixes (messages) this process already made ready
        self.last_prefill: dict = {}  # the last prompt: tokens reused, evaluated, whether from the store
        self.load_seconds = time.perf_counter() - start
        self.metadata = self.model.metadata()
        template = self.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{resolved.path.name} carries no chat template; use an instruct/chat model")
        eos, bos = self.model.token_eos(), self.model.token_bos()
        text = self.model.token_get_text  # the same lookup Llama uses for its own formatter
        self._format = Jinja2ChatFormatter(template=template, eos_token=text(eos) if eos != -1 else "",
                                           bos_token=text(bos) if bos != -1 else "", stop_token_ids=[eos])

    def _apply_lora(self, path) -> None:
        """Load a LoRA GGUF on the model and set it on our context (applied at run time on the
        unchanged, possibly quantized, base weights; freed with the model)."""
        lib = self._lib
        # (llama.cpp notes each tensor kept off a repacking buffer as a warning: dropped with the rest of its log)
        adapter = lib.llama_adapter_lora_init(self.model.model, str(path).encode("utf-8"))
        if not adapter:
            raise ModelError(f"llama.cpp cannot load the LoRA adapter {path} on {self.model_path.name} "
                             f"(an adapter of another base model?)")
        self._lora_adapter = adapter  # llama.cpp frees it with the model
        self._set_lora()

    def _set_lora(self) -> None:
        """Set the loaded LoRA adapter on our (current) context."""
        lib = self._lib
        adapters = (lib.llama_adapter_lora_p_ctypes * 1)(self._lora_adapter)
        scales = (ctypes.c_float * 1)(LORA_SCALE)
        if lib.llama_set_adapters_lora(self._ctx.ctx, adapters, 1, scales) != 0:
            raise ModelError(f"llama.cpp cannot apply the LoRA adapter {self.lora}")

    def _context_limit(self) -> int:
        """The most tokens a context of ours may hold: the model's training length (or the
        size asked for, if larger)."""
        return max(self.n_ctx, self._lib.llama_model_n_ctx_train(self.model.model))

    def _fit(self, need: int) -> bool:
        """Make the context hold ``need`` tokens; False if the model cannot (its training length).

        A context that is too small is replaced by one of the next power of two tokens (up to
        the training length). What the old one held is dropped: a prefix comes back from the
        persistent store, or is evaluated again."""
        if need <= self.n_ctx:
            return True
        lib, limit = self._lib, self._context_limit()
        if need > limit:
            return False
        size = min(limit, 1 << (need - 1).bit_length())
        params = _context_params(lib, self._threads, size, self.n_batch, self.max_sequences)
        handle = lib.llama_init_from_model(self.model.model, params)
        if not handle:
            raise ModelError(f"llama.cpp could not make a {size}-token context")
        self._ctx.close()
        self._ctx, self.n_ctx, self._cached = _wrap_context(self.model, handle, params), size, []
        if self._lora_adapter is not None:
            self._set_lora()
        return True

    # -- the public interface ----------------------------------------------------

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        prompt = self._format(messages=list(messages)).prompt
        return self.model.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, messages: Sequence[Message], config: GenerationConfig) -> list[Candidate]:
        tokens = self.prompt_tokens(messages)
        wanted = config.n - config.skip
        first = 0 if config.temperature == 0 else config.skip  # the index of the first candidate made here
        runs = 1 if config.temperature == 0 else wanted
        if not self._fit(len(tokens) + config.max_tokens * (runs if self.parallel else 1)):
            raise ModelError(f"the prompt ({len(tokens)} tokens) and {runs} x {config.max_tokens} new tokens do not "
                             f"fit the model's {self._context_limit()}-token context")
        greedy = [config.temperature == 0 or (config.greedy_first and i == 0) for i in range(first, first + runs)]
        seeds = [(config.seed if config.seed is not None else 0x5EED) + i for i in range(first, first + runs)]
        if self.parallel or runs == 1:
            out = self._decode(tokens, greedy, seeds, config)
        else:  # one completion after another: the baseline the parallel path is measured against
            out = [c for i in range(runs) for c in self._decode(tokens, greedy[i:i + 1], seeds[i:i + 1], config)]
        return out * wanted if runs == 1 else out

    def logprobs(self, messages: Sequence[Message], continuation: Sequence[int] = ()):
        """Teacher-forced log-probabilities (temperature 1): row ``i`` of the returned
        ``(len(continuation) + 1, n_vocab)`` array is the model's distribution over the token
        that follows the prompt and ``continuation[:i]``. The prompt goes through the prompt
        cache as :meth:`generate`'s does; the continuation is dropped afterwards.

        Two loads, contexts or backends of one model agree here within a floating-point
        tolerance, where their sampled (or even greedy) texts may part at a near tie."""
        import numpy as np

        tokens = self.prompt_tokens(messages)
        if not self._fit(len(tokens) + len(continuation) + 1):
            raise ModelError(f"the prompt ({len(tokens)} tokens) and {len(continuation)} more do not fit the "
                             f"model's {self._context_limit()}-token context")
        try:
            rows = [self._logprobs(self._prefill(tokens)).copy()]
            for start in range(0, len(continuation), self.n_batch):
                chunk = list(continuation[start:start + self.n_batch])
                self._submit([(t, len(tokens) + start + i, (0,), True) for i, t in enumerate(chunk)])
                rows += [self._logprobs(i).copy() for i in range(len(chunk))]
        finally:
            self._lib.llama_memory_seq_rm(self._ctx.memory, 0, len(self._cached), -1)
        return np.stack(rows)

    def remember(self, messages: Sequence[Message]) -> None:
        """Make the prompt of ``messages`` (a prefix: the schema without a question) ready in
        sequence 0, loading its state from the persistent store or evaluating it, and save it
        there if it is not stored yet. Once per prefix and process; later calls cost nothing."""
        key = hash(tuple((m["role"], m["content"]) for m in messages))
        if key in self._remembered:  # the common case: a later question on the same schema
            return
        self._remembered.add(key)
        tokens = self.prompt_tokens(messages)
        if len(tokens) < MIN_TOKENS or not self._fit(len(tokens) + 1):
            return
        self._prefill(tokens)
        if self.store is None or self.store.covers(tokens):
            return
        if self.store.prepare():
            path = self.store.path_for(tokens)
            array = (self._lib.llama_token * len(tokens))(*tokens)
            if self._lib.llama_state_seq_save_file(self._ctx.ctx, str(path).encode(), 0, array, len(tokens)):
                self.store.commit(path, tokens)

    def _load_prefix(self, tokens: list[int]) -> bool:
        """Load the stored state sharing the longest prefix with ``tokens``, if it beats what
        sequence 0 holds; a state llama.cpp cannot read is removed (and rebuilt later)."""
        if self.store is None:
            return False
        found = self.store.best(tokens)
        if found is None or found[1] <= shared(self._cached, tokens):
            return False
        entry, _ = found
        self._forget()
        capacity = len(entry.tokens)
        out = (self._lib.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        read = self._lib.llama_state_seq_load_file(self._ctx.ctx, str(entry.state).encode(), 0, out, capacity,
                                                   ctypes.byref(count))
        if not read or list(out[:count.value]) != list(entry.tokens):
            self._forget()
            self.store.forget(entry)
            return False
        self._cached = list(entry.tokens)
        self.store.touch(entry)
        return True

    def grammar_accepts(self, grammar: str, text: str) -> bool:
        """Whether ``text`` followed by the end of generation is a sentence of ``grammar``, as
        llama.cpp's own grammar sampler judges it token by token (what decoding would allow)."""
        sampler = self._grammar(grammar)
        try:
            for token in self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False):
                if not self._allowed(sampler, token):
                    return False
                self._lib.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, self.model.token_eos())
        finally:
            self._lib.llama_sampler_free(sampler)

    # -- decoding ----------------------------------------------------------------

    def _sampler(self, greedy: bool, seed: int, config: GenerationConfig):
        sampler = self._internals.LlamaSampler()
        if greedy:
            sampler.add_greedy()
        else:
            sampler.add_top_k(TOP_K)
            sampler.add_top_p(config.top_p, 1)
            sampler.add_min_p(MIN_P, 1)
            sampler.add_temp(config.temperature)
            sampler.add_dist(seed)
        return sampler

    def _grammar(self, grammar: str):
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise ModelError("llama.cpp could not parse the decoding grammar")
        return sampler

    def _allowed(self, grammar, token: int) -> bool:
        """Whether the grammar (in its current state) allows ``token`` next: one token, cheap."""
        lib = self._lib
        data = (lib.llama_token_data * 1)(lib.llama_token_data(id=token, logit=0.0, p=0.0))
        array = lib.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
        lib.llama_sampler_apply(grammar, ctypes.byref(array))
        return data[0].logit != float("-inf")

    def _constrained(self, sampler, grammar, index: int, token: int) -> int:
        """``token`` if the grammar allows it, else a new draw from the tokens the grammar allows.

        Checking the drawn token first and masking the whole vocabulary only when it is
        refused costs one token's check on most steps instead of the vocabulary's; the
        result has the same distribution as drawing from the masked vocabulary (a refused
        draw's probability mass is redistributed in proportion, by the second draw)."""
        if not self._allowed(grammar, token):
            import numpy as np

            logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx.ctx, index), shape=(self._n_vocab,))
            if self._candidates is None:
                self._candidates = self._internals.LlamaTokenDataArray(n_vocab=self._n_vocab)
            self._candidates.copy_logits(logits)
            array = ctypes.byref(self._candidates.candidates)
            self._lib.llama_sampler_apply(grammar, array)
            self._lib.llama_sampler_apply(sampler.sampler, array)
            chosen = self._candidates.candidates.selected
            token = int(self._candidates.candidates.data[chosen].id)
        self._lib.llama_sampler_accept(grammar, token)
        return token

    def _submit(self, items: list[tuple[int, int, Sequence[int], bool]]) -> None:
        """Decode one batch of (token, position, sequence ids, wants_logits)."""
        batch = self._batch.batch
        batch.n_tokens = len(items)
        for j, (token, pos, seqs, logits) in enumerate(items):
            batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = token, pos, len(seqs), logits
            for k, seq in enumerate(seqs):
                batch.seq_id[j][k] = seq
        code = self._lib.llama_decode(self._ctx.ctx, batch)
        if code != 0:
            self._forget()
            raise ModelError(f"llama.cpp could not decode (code {code}); the context may be too small")

    def _forget(self) -> None:
        self._lib.llama_memory_clear(self._ctx.memory, True)
        self._cached = []

    def _prefill(self, tokens: list[int]) -> int:
        """Evaluate ``tokens`` in sequence 0, reusing the cached prefix; returns the
        batch index of the last token's logits."""
        loaded = self._load_prefix(tokens)
        # the last token is always evaluated: its logits start decoding
        keep = min(shared(self._cached, tokens), len(tokens) - 1)
        self.last_prefill = {"reused": keep, "evaluated": len(tokens) - keep, "from_store": loaded}
        self._lib.llama_memory_seq_rm(self._ctx.memory, -1, keep, -1)
        self._cached = tokens[:keep]
        index = 0
        for start in range(keep, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            self._submit([(t, start + i, (0,), start + i == len(tokens) - 1) for i, t in enumerate(chunk)])
            self._cached = tokens[:start + len(chunk)]
            index = len(chunk) - 1
        return index

    def _logprobs(self, index: int):
        """Log-probabilities of every token at batch index ``index`` (temperature 1)."""
        import numpy as np

        logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx.ctx, index), shape=(self._n_vocab,))
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    def _decode(self, tokens: list[int], greedy: list[bool], seeds: list[int],
                config: GenerationConfig) -> list[Candidate]:
        count = len(greedy)
        if count > self.max_sequences:
            raise ModelError(f"at most {self.max_sequences} candidates can be decoded together, asked for {count}")
        start = time.perf_counter()
        samplers = [self._sampler(g, s, config) for g, s in zip(greedy, seeds)]
        grammars: list = []
        try:
            if config.grammar is not None:
                grammars = [self._grammar(config.grammar) for _ in range(count)]
            index = self._prefill(tokens)
            for seq in range(1, count):
                self._lib.llama_memory_seq_cp(self._ctx.memory, 0, seq, -1, -1)
            texts: list[list[int]] = [[] for _ in range(count)]
            logprobs = [0.0] * count
            cut = [False] * count
            limit = [config.max_tokens] * count  # sampled ones shrink once the greedy one is done
            # groups of sequences with identical tokens so far, each with the batch index of its logits
            groups: list[tuple[int, list[int]]] = [(index, list(range(count)))]
            pos = len(tokens)
            while groups:
                step: dict[tuple[int, int], list[int]] = {}
                for index, seqs in groups:
                    table = self._logprobs(index)
                    for seq in seqs:
                        token = samplers[seq].sample(self._ctx, index)
                        if grammars:
                            token = self._constrained(samplers[seq], grammars[seq], index, token)
                        logprobs[seq] += float(table[token])
                        if self._lib.llama_vocab_is_eog(self._vocab, token):
                            if greedy[seq] and count > 1:
                                limit = [m if greedy[i] else sample_limit(len(texts[seq]), m)
                                         for i, m in enumerate(limit)]
                            continue
                        texts[seq].append(token)
                        if len(texts[seq]) < limit[seq]:
                            step.setdefault((index, token), []).append(seq)
                        else:
                            cut[seq] = True
                if not step:
                    break
                self._submit([(token, pos, seqs, True) for (_, token), seqs in step.items()])
                groups = [(j, seqs) for j, seqs in enumerate(step.values())]
                pos += 1
        finally:
            for sampler in samplers:
                sampler.close()
            for grammar in grammars:
                self._lib.llama_sampler_free(grammar)
            # keep the prompt in sequence 0 for the next call; drop everything generated
            self._lib.llama_memory_seq_rm(self._ctx.memory, 0, len(self._cached), -1)
            for seq in range(1, count):
                self._lib.llama_memory_seq_rm(self._ctx.memory, seq, -1, -1)
        seconds = (time.perf_counter() - start) / count
        return [Candidate(text=self.model.detokenize(t).decode("utf-8", errors="replace"), prompt_tokens=len(tokens),
                          completion_tokens=len(t), seconds=seconds, logprob=round(lp, 4), truncated=c)
                for t, lp, c in zip(texts, logprobs, cut)]
