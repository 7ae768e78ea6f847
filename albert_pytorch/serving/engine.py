"""What the server runs: a model backend (ONNX Runtime or PyTorch), the tokenizer, and the dynamic batcher.

The batcher takes tokenized requests in arrival order and forms a batch of whole requests up to
`max_batch_requests` rows and `max_batch_tokens` padded tokens (longest row x rows, what a padded batch
costs), splits it into groups of similar length, runs the model on each, shortest first, in one worker thread
(so the event loop keeps accepting) and hands each request its own rows as soon as they are in. A request whose
client has gone is dropped before it costs the model anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from ..config import AlbertConfig
from ..data import INPUT_NAMES
from ..data.padding import model_inputs
from ..device import Precision, use_threads
from ..errors import UsageError
from ..io import cache_root, sha256_file
from ..modeling import AlbertForSequenceClassification
from ..threads import lower_thread_priority
from ..tokenization import backend_copy, load_tokenizer
from ..weights import WEIGHTS_NAME

logger = logging.getLogger("albert_pytorch.serving")

BACKENDS = ("onnx", "torch")


@dataclass(frozen=True)
class EngineOptions:
    """How to load and batch a model: everything `serve` takes besides the HTTP side."""

    model_dir: str
    backend: str = "onnx"
    onnx: str | None = None  # an exported model to run instead of exporting the directory's weights
    quantize: str | None = None  # "int8": ONNX Runtime's dynamic int8 quantization of the export
    provider: str = "cpu"
    max_batch_requests: int = 32  # rows (sentences or pairs) in one model call
    max_batch_tokens: int = 16384  # padded tokens (longest row x rows) in one model call
    max_input_length: int | None = None  # tokens per input, [CLS] and [SEP] included; default the model's limit
    threads: int | None = None  # the model's intra-op threads; default the idle cores at start (threads.py)
    bf16: bool = False  # the PyTorch backend in bfloat16 autocast
    max_queue_wait: float = 30.0  # seconds a request may wait for a batch before it is answered 503


class Backend:
    """Logits for a padded batch of int64 model inputs; subclasses run it in ONNX Runtime or PyTorch."""

    static_width: int | None = None  # the one length a static export takes

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError


class TorchBackend(Backend):
    def __init__(self, model_dir: Path, config: AlbertConfig, bf16: bool):
        self.model = AlbertForSequenceClassification.from_pretrained(model_dir, config=config).eval()
        self.precision = Precision(torch.bfloat16 if bf16 else None)

    @torch.no_grad()
    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        # module by module: the shared weights' per-forward preparation, which pays in training, costs a
        # single request 4-16% (docs/benchmarks.md, "bf16 training nearer its ceiling")
        with self.precision.autocast(torch.device("cpu")), self.model.implementation("modules"):
            out = self.model(*(torch.from_numpy(inputs[name]) for name in INPUT_NAMES))
        return out.logits.float().numpy()


class OnnxBackend(Backend):
    def __init__(self, onnx_file: Path, provider: str, threads: int):
        from ..deploy.runtime import open_session, static_dims

        self.session = open_session(onnx_file, provider, threads=threads)
        self.static_batch, self.static_width = static_dims(self.session)
        self.output = "logits" if "logits" in [o.name for o in self.session.get_outputs()] else None

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        from ..deploy.runtime import pad_to_batch

        rows, width = inputs["input_ids"].shape
        if self.static_width is not None:  # a static export takes only its own length
            inputs = {k: np.pad(v, [(0, 0), (0, self.static_width - width)]) for k, v in inputs.items()}
        if self.static_batch is None:
            return self.session.run([self.output] if self.output else None, inputs)[0]
        out = []
        for start in range(0, rows, self.static_batch):  # and only its own batch size
            feed = {k: pad_to_batch(v[start:start + self.static_batch], self.static_batch) for k, v in inputs.items()}
            out.append(self.session.run(None, feed)[0][: min(self.static_batch, rows - start)])
        return np.concatenate(out)


def exported_model(model_dir: Path, quantize: str | None) -> Path:
    """The directory's weights exported (dynamic axes) and optimized for ONNX Runtime, in a cache keyed on the
    weights and config: the first start exports, later ones reuse it."""
    from ..deploy.export import export
    from ..deploy.optimize import optimize

    digest = hashlib.sha256()
    for name in (WEIGHTS_NAME, "config.json"):
        digest.update(sha256_file(model_dir / name).encode())
    folder = cache_root() / "serving" / f"{digest.hexdigest()[:20]}"
    target = folder / ("model_int8.onnx" if quantize == "int8" else "model_ort.onnx")
    if not target.is_file():
        logger.info("exporting %s to ONNX for serving (cached in %s)", model_dir, folder)
        exported = export(model_dir, folder, 1, 16, dynamic=True)
        optimize(exported, target, "ort", int8=quantize == "int8")
    return target


def load_backend(options: EngineOptions, config: AlbertConfig) -> Backend:
    model_dir = Path(options.model_dir)
    threads = use_threads(options.threads)  # torch's, and ONNX Runtime's count
    if options.backend == "torch":
        return TorchBackend(model_dir, config, options.bf16)
    if options.bf16:
        raise UsageError("--bf16 is the PyTorch backend's precision: add --backend torch (ONNX Runtime runs fp32, "
                         "or int8 with --quantize int8)")
    onnx_file = Path(options.onnx) if options.onnx else None
    if onnx_file is None and (model_dir / "model.onnx").is_file() and not (model_dir / WEIGHTS_NAME).is_file():
        onnx_file = model_dir / "model.onnx"  # an optimum-layout export folder
    if onnx_file is None:
        onnx_file = exported_model(model_dir, options.quantize)
    elif options.quantize == "int8":
        raise UsageError("--quantize int8 quantizes the export serve makes itself; quantize a given --onnx file "
                         "with `opt_onnx.py --target ort --int8`")
    return OnnxBackend(onnx_file, options.provider, threads)


class InputTooLong(ValueError):
    """An input over the token limit, with `truncate` off."""


# Characters a request's texts may have, in all, to be tokenized on the event loop rather than in a thread.
INLINE_TOKENIZE_CHARS = 2048
# How long /health reports an overload after the last request that waited too long for a batch.
OVERLOAD_MEMORY_S = 10.0


class QueueTimeout(RuntimeError):
    """No batch took the request within `max_queue_wait` (answered 503 with Retry-After)."""


@dataclass
class Encoded:
    """One request's rows, tokenized."""

    ids: list[list[int]]
    types: list[list[int]]

    @property
    def longest(self) -> int:
        return max(len(row) for row in self.ids)


@dataclass
class Timings:
    """Seconds one request spent tokenizing, waiting for its batch, and in the model's call."""

    tokenization: float = 0.0
    queue: float = 0.0
    inference: float = 0.0


def read_model_dir(options: EngineOptions) -> tuple[AlbertConfig, object]:
    """The model directory's config and tokenizer, each checked against the options; `serve` calls it before it
    binds, so a model it cannot serve is one line and an exit, not a server that answers 503 forever."""
    model_dir = Path(options.model_dir)
    if not model_dir.is_dir():
        raise UsageError(f"--model_dir {model_dir}: no such folder (a model directory that train wrote)")
    if options.backend not in BACKENDS:
        raise UsageError(f"--backend {options.backend!r}: choose from {', '.join(BACKENDS)}")
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"--model_dir {model_dir}: no config.json, so not a model directory that train wrote")
    if options.onnx is not None and not Path(options.onnx).is_file():
        raise UsageError(f"--onnx {options.onnx}: no such file")
    if options.onnx is None and not any(
            (model_dir / name).is_file() for name in (WEIGHTS_NAME, "pytorch_model.bin")):
        raise UsageError(f"--model_dir {model_dir}: no weights (model.safetensors or pytorch_model.bin) to export")
    config = AlbertConfig.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    if (options.max_input_length or 0) > config.max_position_embeddings:
        raise UsageError(f"--max_input_length {options.max_input_length} exceeds the model's "
                         f"max_position_embeddings ({config.max_position_embeddings})")
    return config, tokenizer


@dataclass
class _Pending:
    encoded: Encoded
    future: asyncio.Future
    gone: Callable[[], Awaitable[bool]]
    enqueued: float = field(default_factory=time.perf_counter)
    taken: asyncio.Event = field(default_factory=asyncio.Event)  # set when a batch starts with it


class Encoder:
    """The tokenizer as the model reads it: texts and pairs to token ids, cut to `max_input_length` or refused.

    Two copies of the Rust tokenizer (`backend_copy`), one cutting at the limit and one reading whole. It holds no
    model, so tokenizing can run where the model does not (Ray Data's tasks)."""

    def __init__(self, tokenizer, max_input_length: int):
        self.max_input_length = max_input_length
        self._whole, self._truncating = backend_copy(tokenizer), backend_copy(tokenizer)
        self._truncating.enable_truncation(max_input_length, strategy="longest_first")
        self._readable = readable_prefix(self._whole, max_input_length)

    def encode(self, sequences: list[tuple[str, str | None]], truncate: bool) -> Encoded:
        """Token ids of each (text, pair or None); an input over the limit is cut (truncate) or refused.

        A text longer than the model can read is cut to `readable_prefix` before it is tokenized, so a 2 MB
        text costs what a few KB do (and the tokens kept are the same)."""
        cut = [(self._readable(text), None if pair is None else self._readable(pair)) for text, pair in sequences]
        if not truncate:
            for i, ((text, pair), (kept, kept_pair)) in enumerate(zip(sequences, cut, strict=True)):
                if len(kept) < len(text) or (pair is not None and len(kept_pair) < len(pair)):
                    raise InputTooLong(f"input {i} has {len(text) + len(pair or ''):,} characters, far over the "
                                       f"limit of {self.max_input_length} tokens; shorten it or send "
                                       "\"truncate\": true")
        encoder = self._truncating if truncate else self._whole
        encodings = encoder.encode_batch([text if pair is None else (text, pair) for text, pair in cut])
        for i, encoding in enumerate(encodings):
            if len(encoding.ids) > self.max_input_length:
                raise InputTooLong(f"input {i} has {len(encoding.ids)} tokens, over the limit of "
                                   f"{self.max_input_length}; shorten it or send \"truncate\": true")
        return Encoded([e.ids for e in encodings], [e.type_ids for e in encodings])

    def tokens(self, texts: list[str], add_special_tokens: bool) -> list[list[dict]]:
        """TEI's /tokenize: each text's tokens as {id, text, special, start, stop} (character offsets; None for
        the special tokens), up to what the model can read (`readable_prefix`)."""
        encodings = self._whole.encode_batch([self._readable(text) for text in texts],
                                             add_special_tokens=add_special_tokens)
        return [[{"id": token_id, "text": token, "special": bool(special),
                  "start": None if special else start, "stop": None if special else stop}
                 for token_id, token, special, (start, stop) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets,
                                                                    strict=True)]
                for e in encodings]

    def decode(self, ids: list[list[int]], skip_special_tokens: bool) -> list[str]:
        """TEI's /decode: each list of ids back into text."""
        return self._whole.decode_batch(ids, skip_special_tokens=skip_special_tokens)


class Engine:
    """The loaded model, its tokenizer and labels, and the batcher in front of it."""

    def __init__(self, options: EngineOptions, metrics=None, model_files: tuple[AlbertConfig, object] | None = None):
        """`model_files`: what `read_model_dir(options)` gave, where the caller has checked the folder already."""
        self.options, self.metrics = options, metrics
        self.config, self.tokenizer = model_files or read_model_dir(options)
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        self.backend = load_backend(options, self.config)
        # a static export reads its own length and no more
        self.max_input_length = min(options.max_input_length or self.config.max_position_embeddings,
                                    self.backend.static_width or self.config.max_position_embeddings)
        self.encoder = Encoder(self.tokenizer, self.max_input_length)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._last_timeout = -float("inf")
        self._worker: asyncio.Task | None = None
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="albert-model")
        # texts over INLINE_TOKENIZE_CHARS, at the least priority: a short request's work never waits for a core
        # behind another's megabytes
        self._tokenizer_threads = ThreadPoolExecutor(2, thread_name_prefix="albert-tokenizer",
                                                     initializer=lower_thread_priority)

    @property
    def is_regression(self) -> bool:
        return self.config.is_regression

    async def tokenize(self, sequences: list[tuple[str, str | None]], truncate: bool) -> tuple[Encoded, float]:
        """`encode`, with its seconds: on the event loop for a few sentences (tens of microseconds, less than the
        hand-off to a thread, and never behind a long text another request is tokenizing), else in a thread."""
        start = time.perf_counter()
        if sum(len(text) + len(pair or "") for text, pair in sequences) <= INLINE_TOKENIZE_CHARS:
            encoded = self.encoder.encode(sequences, truncate)
        else:
            encoded = await asyncio.get_running_loop().run_in_executor(self._tokenizer_threads, self.encoder.encode,
                                                                       sequences, truncate)
        return encoded, time.perf_counter() - start

    # -- batching -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the batch worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="albert-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        # queued work is dropped (its requests were answered or cancelled by the drain); a batch already running
        # ends on its own, bounded by --max_batch_tokens
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        self._tokenizer_threads.shutdown(wait=False, cancel_futures=True)

    async def predict(self, sequences: list[tuple[str, str | None]], truncate: bool,
                      gone: Callable[[], Awaitable[bool]]) -> tuple[np.ndarray, Timings]:
        """Tokenize, then take a place in a batch: this request's logits, [rows, labels] float32."""
        encoded, tokenization = await self.tokenize(sequences, truncate)
        logits, timings = await self.infer(encoded, gone)
        timings.tokenization = tokenization
        return logits, timings

    async def infer(self, encoded: Encoded, gone: Callable[[], Awaitable[bool]]) -> tuple[np.ndarray, Timings]:
        """This request's logits, [rows, labels] float32, from whichever batch it joins."""
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(encoded, future, gone)
        self._queue.put_nowait(pending)
        if self.metrics is not None:
            self.metrics.queue_size.set(self._queue.qsize())
        try:
            await asyncio.wait_for(pending.taken.wait(), self.options.max_queue_wait)
        except TimeoutError:
            future.cancel()  # the batcher skips it
            self._last_timeout = time.monotonic()
            raise QueueTimeout(f"no batch took this request within {self.options.max_queue_wait:g} s "
                               "(--max_queue_wait): the model is overloaded; retry shortly") from None
        return await future

    def overloaded(self) -> bool:
        """Whether a request timed out waiting for a batch lately (within OVERLOAD_MEMORY_S, or `max_queue_wait`
        if longer): /health then says 503, so a load balancer sends the next ones elsewhere."""
        return time.monotonic() - self._last_timeout < max(OVERLOAD_MEMORY_S, self.options.max_queue_wait)

    async def _work(self) -> None:
        carried: _Pending | None = None
        while True:
            first = carried or await self._queue.get()
            batch, carried = await self._gather(first)
            if batch:
                await self._run(batch)

    async def _gather(self, first: _Pending) -> tuple[list[_Pending], _Pending | None]:
        """Requests in arrival order while they fit the limits; the first that does not waits for the next
        batch. A lone request over the limits runs alone."""
        limits = self.options
        batch, rows, longest = [], 0, 0
        candidate: _Pending | None = first
        while candidate is not None:
            if not candidate.future.done() and not await candidate.gone():
                new_rows = rows + len(candidate.encoded.ids)
                new_longest = max(longest, candidate.encoded.longest)
                if batch and (new_rows > limits.max_batch_requests
                              or new_rows * new_longest > limits.max_batch_tokens):
                    return batch, candidate
                batch.append(candidate)
                rows, longest = new_rows, new_longest
            elif not candidate.future.done():
                candidate.future.cancel()  # its client has gone: it costs the model nothing
            candidate = self._queue.get_nowait() if not self._queue.empty() else None
        return batch, None

    async def _run(self, batch: list[_Pending]) -> None:
        """The batch's length groups, shortest first, one model call each: a request is answered as soon as its
        rows are in, so a short sentence batched beside a long text waits for no forward pass but its own."""
        for pending in batch:
            pending.taken.set()
        rows = Encoded([row for pending in batch for row in pending.encoded.ids],
                       [row for pending in batch for row in pending.encoded.types])
        groups = length_groups([len(row) for row in rows.ids])[::-1]
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(rows.ids))
            self.metrics.batch_tokens.observe(sum(len(g) * len(rows.ids[g[0]]) for g in groups))
            self.metrics.queue_size.set(self._queue.qsize())
        owner = [k for k, pending in enumerate(batch) for _ in pending.encoded.ids]
        first = list(itertools.accumulate((len(pending.encoded.ids) for pending in batch), initial=0))
        missing = [len(pending.encoded.ids) for pending in batch]
        logits = np.zeros((len(rows.ids), len(self.labels)), dtype=np.float32)
        start = time.perf_counter()
        for group in groups:
            try:
                part = await asyncio.get_running_loop().run_in_executor(self._model_thread, self.logits, rows, [group])
            except Exception as err:  # the model failed: every request of the batch not yet answered hears why
                logger.exception("inference failed for a batch of %d rows", len(rows.ids))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(InferenceFailed(f"inference failed: {type(err).__name__}: "
                                                                     f"{err}"))
                return
            logits[group] = part[group]
            for row in group:
                missing[owner[row]] -= 1
            for k in {owner[row] for row in group}:
                pending = batch[k]
                if missing[k] == 0 and not pending.future.done():
                    mine = logits[first[k]:first[k] + len(pending.encoded.ids)].copy()
                    pending.future.set_result((mine, Timings(queue=start - pending.enqueued,
                                                             inference=time.perf_counter() - start)))

    def logits(self, encoded: Encoded, groups: list[list[int]]) -> np.ndarray:
        """The model's logits for the encoded rows, [rows, labels] float32 in their order: one call per group of
        row indices, padded to the group's longest row. The batcher and `predict` both run the model this way."""
        logits = np.zeros((len(encoded.ids), len(self.labels)), dtype=np.float32)
        for rows in groups:
            padded = model_inputs([torch.tensor(encoded.ids[i]) for i in rows],
                                  [torch.tensor(encoded.types[i]) for i in rows], self.tokenizer.pad_token_id)
            logits[rows] = self.backend.logits({k: v.numpy() for k, v in padded.items()})
        return logits


# Normalization (NFKC composes "e" + an accent into one character, drops control characters) can make a text
# shorter than it looks; this factor keeps the bound on the safe side of it.
_NORMALIZATION_MARGIN = 4


def readable_prefix(tokenizer: Tokenizer, max_tokens: int) -> Callable[[str], str]:
    """A function that cuts a text after the character past which no token can be among the first
    `max_tokens`: every token covers at most the vocabulary's longest piece, so a prefix with that many times
    `max_tokens` non-space characters (with a margin for normalization) already holds more tokens than the model
    reads. Space does not count, since the normalizer folds runs of it."""
    longest = max(len(piece.lstrip("\u2581")) for piece in tokenizer.get_vocab()) or 1
    bound = max_tokens * longest * _NORMALIZATION_MARGIN
    past_bound = re.compile(rf"(?:\s*\S){{{bound}}}")

    def cut(text: str) -> str:
        if len(text) <= bound:
            return text
        match = past_bound.match(text)
        return text[:match.end()] if match else text

    return cut


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over each row of [rows, labels] logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def length_groups(lengths: list[int], tolerance: float = 0.25) -> list[list[int]]:
    """Row indices in groups of similar length (each row within `tolerance` of its group's longest), run as one
    model call each: on a CPU a model's work grows with its padded tokens, and one batch of SST-2 sentences
    padded to its longest does about twice the work of its real tokens."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups and lengths[i] >= (1 - tolerance) * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class InferenceFailed(RuntimeError):
    """The model's call failed (answered 424)."""
