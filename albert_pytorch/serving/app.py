"""The HTTP application: the routes TEI's and Triton's clients call, over one `Engine`.

TEI: `POST /predict`, `GET /health`, `/info`, `/metrics` (TEI's metric names), its `x-*-time` headers and
`{"error", "error_type"}` bodies. The Open Inference Protocol (KServe v2, Triton's HTTP API, its binary
tensor extension included): `GET /v2`, `/v2/health/live|ready`, `/v2/models/{name}[/ready]`,
`POST /v2/models/{name}/infer` with BYTES `TEXT` [N] (and `TEXT_PAIR`) -> FP32 `logits` and
`probabilities` [N, labels]; `{"error"}` bodies. `GET /` is a page to try it; `/docs` the OpenAPI page.

Bad input never reaches a batch: 400 malformed JSON or empty input, 413 a body over the payload limit or
more inputs than allowed, 422 a wrong shape or type or an over-long input (with `truncate` off), 429 when the
concurrency limit is reached (after a second: `REFUSAL_DELAY_S`), 503 while loading or draining, 424 when inference
fails. Bodies over `BACKGROUND_PARSE_BYTES` are parsed, long texts tokenized and `/tokenize` and `/decode`
answered in threads at the least scheduling priority, so that short inference requests take the cores first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..threads import lower_thread_priority
from .engine import Engine, EngineOptions, InferenceFailed, InputTooLong, QueueTimeout, probabilities
from .page import PAGE

logger = logging.getLogger("albert_pytorch.serving")

V2_INPUTS = ("TEXT", "TEXT_PAIR")
V2_OUTPUTS = ("logits", "probabilities")


@dataclass(frozen=True)
class ServeOptions:
    """The HTTP side of `serve`: where it listens and what it admits."""

    engine: EngineOptions
    host: str = "127.0.0.1"
    port: int = 8080
    served_model_name: str | None = None  # the v2 model name; default the model folder's name
    api_key: str | None = None
    payload_limit: int = 2_000_000  # bytes of a request body
    max_client_batch_size: int = 32  # inputs in one request
    max_concurrent_requests: int = 512  # requests in flight; more are refused with 429 (see REFUSAL_DELAY_S)
    shutdown_timeout: float = 30.0  # seconds SIGTERM waits for accepted requests
    max_connections: int | None = None  # open connections; default what the process's file limit allows
    head_timeout: float = 10.0  # seconds a request head may take to arrive
    body_timeout: float = 30.0  # seconds a body may take to arrive once its head has

    @property
    def model_name(self) -> str:
        return self.served_model_name or Path(self.engine.model_dir).resolve().name


class ServeError(Exception):
    """A request answered with `status`: TEI's routes say `{"error", "error_type"}`, v2's `{"error"}`."""

    def __init__(self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.error_type, self.headers = status, message, error_type, headers or {}


class Metrics:
    """TEI's metric names, in a registry of the app's own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("te_request_count", "inference requests received", registry=r)
        self.successes = Counter("te_request_success", "inference requests answered", registry=r)
        self.failures = Counter("te_request_failure", "inference requests refused or failed", ["err"], registry=r)
        self.duration = Histogram("te_request_duration", "seconds a request took", registry=r)
        self.tokenization = Histogram("te_request_tokenization_duration", "seconds tokenizing", registry=r)
        self.queue = Histogram("te_request_queue_duration", "seconds waiting for a batch", registry=r)
        self.inference = Histogram("te_request_inference_duration", "seconds in the model's call", registry=r)
        buckets = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
        self.batch_size = Histogram("te_batch_next_size", "rows in a model call", buckets=buckets, registry=r)
        self.batch_tokens = Histogram("te_batch_next_tokens", "padded tokens in a model call",
                                      buckets=tuple(64 * b for b in buckets) + (65536,), registry=r)
        self.queue_size = Gauge("te_queue_size", "requests waiting for a batch", registry=r)
        self.connections_closed = Counter("albert_connection_closed", "connections the server closed before an "
                                          "answer: slow or idle clients, over-large heads, evictions at the cap",
                                          ["reason"], registry=r)

    def observe(self, timings) -> None:
        """Where an answered request's time went (TEI's and v2's routes alike)."""
        self.tokenization.observe(timings.tokenization)
        self.queue.observe(timings.queue)
        self.inference.observe(timings.inference)


@dataclass
class ServerState:
    """What a route needs to know about the server: its phase, its engine, what is in flight."""

    options: ServeOptions
    metrics: Metrics
    phase: str = "loading"  # loading, ready, draining, failed
    engine: Engine | None = None
    in_flight: int = 0
    received: int = 0  # inference requests that reached the app
    answered: int = 0  # of those, the ones answered (any status)
    started: set = field(default_factory=set)  # event loops the engine's batcher runs on
    # at the least priority, off the event loop: bodies over BACKGROUND_PARSE_BYTES parsed, /tokenize and /decode
    # answered (two threads, as the engine's tokenizer pool has: the tokenizer lets go of the GIL)
    background: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        2, thread_name_prefix="albert-background", initializer=lower_thread_priority))

    async def in_background(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` in the background threads, awaited without holding the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.background, function, *args)

    def ready_engine(self) -> Engine:
        if self.phase != "ready" or self.engine is None:
            raise ServeError(503, f"the model is {self.phase if self.phase != 'ready' else 'loading'}; retry shortly",
                             "unhealthy", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        if loop not in self.started:  # the batcher runs on the loop that serves, whichever starts the app
            self.engine.start()
            self.started.add(loop)
        return self.engine


def create_app(options: ServeOptions, load: Callable[[Metrics], Engine]) -> FastAPI:
    """The application; `load(metrics)` builds the engine in a worker thread once the server is up, which
    answers 503 until then. `app.state.server` holds the `ServerState`."""
    metrics = Metrics()
    state = ServerState(options, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().run_in_executor(None, _load_into, state, load)
        yield
        if state.phase != "failed":  # the exit code tells a failed load from a drain
            state.phase = "draining"
        with contextlib.suppress(Exception):
            await loading
        if state.engine is not None:
            await state.engine.stop()
        state.background.shutdown(wait=False, cancel_futures=True)
        logger.info("stopped: answered %d of the %d inference requests that reached it", state.answered,
                    state.received)

    # no trailing-slash redirects: a wrong path is a 404 in our error shape, not a 307 to follow
    app = FastAPI(title="albert_pytorch serve", version=__version__, lifespan=lifespan, redirect_slashes=False,
                  description="ALBERT text classification: TEI's /predict and the Open Inference Protocol (v2). "
                              "TEI's rule for \"inputs\": a text; a list of two texts is one pair; a list of three "
                              "or more is a batch of single texts; a batch of pairs is [[a, b], [c, d]].")
    app.state.server = state
    _add_guards(app, state)
    _add_tei_routes(app, state)
    _add_v2_routes(app, state)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    for route in [r for r in app.routes if isinstance(r, APIRoute) and "GET" in r.methods]:
        # HEAD wherever GET is, as HTTP asks (load balancers probe with it); uvicorn sends no body for it
        app.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)
    return app


def _load_into(state: ServerState, load: Callable[[Metrics], Engine]) -> None:
    try:
        state.engine = load(state.metrics)
    except Exception as err:
        state.phase = "failed"
        logger.error("the model could not be loaded: %s", err, exc_info=logger.isEnabledFor(logging.DEBUG))
        raise
    if state.phase == "loading":
        state.phase = "ready"


# -- admission: auth, limits, errors -------------------------------------------------------------------

_OPEN_PATHS = ("/health", "/v2/health/live", "/v2/health/ready", "/")  # the page holds no data; its calls send the key


def _add_guards(app: FastAPI, state: ServerState) -> None:
    if state.options.api_key:
        app.add_middleware(ApiKeyMiddleware, key=state.options.api_key)

    @app.exception_handler(ServeError)
    async def refused(request: Request, err: ServeError) -> JSONResponse:
        return _error_response(request, err)

    @app.exception_handler(StarletteHTTPException)
    async def framework(request: Request, err: StarletteHTTPException) -> JSONResponse:  # 404, 405 in our shape
        kind = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "validation")
        return _error_response(request, ServeError(err.status_code, str(err.detail), kind, dict(err.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error_response(request, ServeError(422, "invalid request: " + "; ".join(
            str(e.get("msg")) for e in err.errors()), "validation"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:  # never a traceback to the client
        logger.exception("unexpected error on %s", request.url.path)
        return _error_response(request, ServeError(500, f"internal error ({type(err).__name__})", "backend"))


class ApiKeyMiddleware:
    """`Authorization: Bearer <key>` on every route but the health checks and the page, compared in constant
    time (a plain ASGI middleware: FastAPI's decorator form costs every request a task)."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                error = ServeError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "unauthorized")
                await _error_response(Request(scope), error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error_response(request: Request, err: ServeError) -> JSONResponse:
    body = {"error": err.message} if request.url.path.startswith("/v2") else {"error": err.message,
                                                                            "error_type": err.error_type}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


# Seconds a request refused at --max_concurrent_requests waits for its 429. With 700 clients that ignored
# Retry-After, answering at once let refusals take the event loop: 234 answers in 15 s against 17,690 at 64
# clients (docs/benchmarks.md).
REFUSAL_DELAY_S = 1.0


class Slot:
    """An inference request's place among the `--max_concurrent_requests` in flight, taken only once its body
    is in and checked, so a slow upload holds a connection (bounded by --body_timeout) but never a slot."""

    def __init__(self, state: ServerState):
        self.state, self.held = state, False

    async def check(self) -> None:
        """Refuse, before the body is read, what `engine` would refuse now (503 while not ready, 429 at the
        limit). A 429 waits REFUSAL_DELAY_S first: clients that ignore Retry-After and ask again at once would
        otherwise spend the event loop on refusals and starve the requests it admitted."""
        state = self.state
        state.ready_engine()
        if state.in_flight >= state.options.max_concurrent_requests:
            await asyncio.sleep(REFUSAL_DELAY_S)
            raise ServeError(429, f"model is overloaded: {state.in_flight} requests in flight (the limit is "
                                  f"{state.options.max_concurrent_requests}); retry shortly", "overloaded",
                             {"Retry-After": "1"})

    async def engine(self) -> Engine:
        """The engine, if it is ready and a slot is free (else 503 or 429)."""
        await self.check()
        self.state.in_flight += 1
        self.held = True
        return self.state.engine

    def release(self) -> None:
        if self.held:
            self.state.in_flight -= 1
            self.held = False


@contextlib.asynccontextmanager
async def admitted(state: ServerState) -> AsyncIterator[Slot]:
    """An inference request, counted: its outcome lands in exactly one of the metrics' series."""
    state.received += 1
    slot = Slot(state)
    try:
        async with _counted(state.metrics):
            yield slot
    finally:
        slot.release()
        state.answered += 1


@contextlib.asynccontextmanager
async def _counted(metrics: Metrics) -> AsyncIterator[None]:
    metrics.requests.inc()
    start = time.perf_counter()
    try:
        yield
    except ServeError as err:
        metrics.failures.labels(err.error_type).inc()
        raise
    except asyncio.CancelledError:  # the client went away, or the drain ended: counted, one line, no traceback
        metrics.failures.labels("cancelled").inc()
        logger.info("a request was cancelled before its answer (the client left, or the server stopped)")
        raise
    except InputTooLong as err:
        metrics.failures.labels("validation").inc()
        raise ServeError(422, str(err), "validation") from None
    except InferenceFailed as err:
        metrics.failures.labels("backend").inc()
        raise ServeError(424, str(err), "backend") from None
    except QueueTimeout as err:
        metrics.failures.labels("overloaded").inc()
        raise ServeError(503, str(err), "overloaded", {"Retry-After": "1"}) from None
    except Exception:  # answered 500 by the app's handler
        metrics.failures.labels("internal").inc()
        raise
    else:
        metrics.successes.inc()
        metrics.duration.observe(time.perf_counter() - start)


async def read_body(request: Request, limit: int) -> bytes:
    """The body; 413 over `limit` bytes (before reading it, when the length is declared)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"the body has {declared} bytes, over the payload limit of {limit}", "payload_too_large")
    try:
        body = await request.body()
    except ClientDisconnect:
        logger.info("a client left while sending its body")
        raise ServeError(499, "the client closed the connection before sending the whole body", "cancelled") from None
    if len(body) > limit:
        raise ServeError(413, f"the body has {len(body)} bytes, over the payload limit of {limit}", "payload_too_large")
    return body


# A body over this many bytes is parsed in `ServerState.background`, so that a client's megabytes of JSON (1-2 ms on
# the event loop for 1.8 MB) wait for the cores behind other requests' work; a smaller one parses in less time
# than the hand-off to a thread takes.
BACKGROUND_PARSE_BYTES = 256 * 1024


async def read_json(request: Request, state: ServerState) -> Any:
    """The body as JSON: 413 over the payload limit, 400 if malformed."""
    return await parsed(await read_body(request, state.options.payload_limit), state)


async def parsed(body: bytes, state: ServerState) -> Any:
    """`parse_json(body)`, in the server's background threads if the body is large."""
    if len(body) <= BACKGROUND_PARSE_BYTES:
        return parse_json(body)
    return await state.in_background(parse_json, body)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ServeError(422, "the body is not UTF-8 text", "validation") from None
    except json.JSONDecodeError as err:
        raise ServeError(400, f"malformed JSON: {err.msg} at line {err.lineno}, column {err.colno}",
                         "validation") from None
    except ValueError as err:  # an integer literal past Python's 4,300-digit limit
        raise ServeError(400, f"malformed JSON: {err}", "validation") from None
    except RecursionError:
        raise ServeError(400, "malformed JSON: nested too deeply", "validation") from None


def checked_text(text: str, what: str) -> str:
    """A request's text, refused (400) when empty or blank and (422) when it is not Unicode text: a lone
    surrogate such as "\\ud800" is valid JSON but no tokenizer can encode it. Both checks stop early (or take no
    time: an ASCII text holds no surrogate) rather than copy a text of megabytes on the event loop."""
    if not text or text.isspace():
        raise ServeError(400, f"{what} is empty", "empty")
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ServeError(422, f"{what} is not valid Unicode ({err.reason}: {text[err.start:err.end]!r} at "
                              f"character {err.start})", "validation") from None
    return text


# -- TEI ---------------------------------------------------------------------------------------------

_PREDICT_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"], "properties": {
        "inputs": {"description": "a text, a pair [text, text_pair], or a batch [[text], [text, text_pair], ...]"},
        "truncate": {"type": "boolean", "default": False},
        "raw_scores": {"type": "boolean", "default": False}}}}}}}


def _add_tei_routes(app: FastAPI, state: ServerState) -> None:
    options = state.options

    @app.get("/health", summary="200 when the model is loaded and serving, 503 otherwise")
    async def health() -> Response:
        if state.phase != "ready":
            raise ServeError(503, f"the model is {state.phase}", "unhealthy")
        if state.engine is not None and state.engine.overloaded():
            raise ServeError(503, f"the model is overloaded: requests waited over --max_queue_wait "
                                  f"({options.engine.max_queue_wait:g} s) for it", "unhealthy")
        return Response(status_code=200)

    @app.get("/info", summary="the model, its labels and the server's limits")
    async def info() -> dict:
        engine = state.engine
        id2label = {str(i): label for i, label in enumerate(engine.labels)} if engine else None
        return {"model_id": options.model_name, "model_dtype": "float32", "version": __version__,
                "model_type": {"classifier": {"id2label": id2label,
                                              "label2id": {v: int(k) for k, v in (id2label or {}).items()}}},
                "problem_type": ("regression" if engine.is_regression else "single_label_classification")
                if engine else None,
                "backend": options.engine.backend, "phase": state.phase,
                "max_input_length": engine.max_input_length if engine else None,
                "max_concurrent_requests": options.max_concurrent_requests,
                "max_batch_tokens": options.engine.max_batch_tokens,
                "max_batch_requests": options.engine.max_batch_requests,
                "max_client_batch_size": options.max_client_batch_size, "payload_limit": options.payload_limit}

    @app.get("/metrics", summary="Prometheus metrics, TEI's names")
    async def metrics() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type="text/plain; version=0.0.4")

    @app.post("/predict", summary="labels and scores, as text-embeddings-inference answers them",
              openapi_extra=_PREDICT_SCHEMA)
    async def predict(request: Request) -> Response:
        async with admitted(state) as slot:
            await slot.check()
            body = await read_json(request, state)
            sequences, batched, truncate, raw_scores = parse_tei_request(body, options.max_client_batch_size)
            engine = await slot.engine()
            logits, timings = await engine.predict(sequences, truncate, request.is_disconnected)
            state.metrics.observe(timings)
            results = [_tei_scores(row, engine, raw_scores) for row in logits]
            total = timings.tokenization + timings.queue + timings.inference
            headers = {"x-total-time": _ms(total), "x-tokenization-time": _ms(timings.tokenization),
                       "x-queue-time": _ms(timings.queue), "x-inference-time": _ms(timings.inference)}
            return JSONResponse(results if batched else results[0], headers=headers)

    @app.post("/tokenize", summary="the tokens of each text, as text-embeddings-inference lists them")
    async def tokenize(request: Request) -> Response:
        body = await read_json(request, state)
        texts = _texts(_member(body, "inputs"), options.max_client_batch_size)
        engine = state.ready_engine()
        add_special = _flag(body, "add_special_tokens", True)
        return JSONResponse(await state.in_background(engine.encoder.tokens, texts, add_special))

    @app.post("/decode", summary="token ids back into text, as text-embeddings-inference decodes them")
    async def decode(request: Request) -> Response:
        body = await read_json(request, state)
        ids = _member(body, "ids")
        engine = state.ready_engine()
        ids = _id_lists(ids, engine.tokenizer.vocab_size, options.max_client_batch_size)
        skip_special = _flag(body, "skip_special_tokens", True)
        return JSONResponse(await state.in_background(engine.encoder.decode, ids, skip_special))


def _texts(value: Any, max_inputs: int) -> list[str]:
    """/tokenize's "inputs": a text or a list of texts, each checked."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ServeError(422, f'"inputs" must be a text or a list of texts, got {json.dumps(value)[:80]}', "validation")
    if not texts:
        raise ServeError(400, '"inputs" is empty', "empty")
    _within_client_batch(len(texts), max_inputs)
    return [checked_text(text, "an input text") for text in texts]


def _id_lists(value: Any, vocabulary: int, max_inputs: int) -> list[list[int]]:
    """/decode's "ids": a list of token ids or a list of such lists, each id in the vocabulary."""
    def is_ids(item: Any) -> bool:
        return isinstance(item, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in item)

    lists = [value] if is_ids(value) and value else value
    if not isinstance(lists, list) or not lists or not all(map(is_ids, lists)):
        raise ServeError(422, '"ids" must be a list of token ids or a list of such lists, got '
                              f"{json.dumps(value)[:80]}", "validation")
    _within_client_batch(len(lists), max_inputs, "id lists")
    outside = next((i for ids in lists for i in ids if not 0 <= i < vocabulary), None)
    if outside is not None:
        raise ServeError(422, f"token id {outside} is not in the vocabulary (0 to {vocabulary - 1})", "validation")
    return lists


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ServeError(422, f'"{name}" must be true or false, got {json.dumps(value)[:40]}', "validation")
    return value


def _member(body: Any, key: str) -> Any:
    """A JSON object's `key` (422 if the body is no object or lacks it)."""
    if not isinstance(body, dict) or key not in body:
        raise ServeError(422, f'expected a JSON object with "{key}"', "validation")
    return body[key]


def _within_client_batch(count: int, max_inputs: int, what: str = "inputs") -> None:
    if count > max_inputs:
        raise ServeError(413, f"{count} {what}, more than the {max_inputs} one request may carry "
                              "(--max_client_batch_size)", "validation")


def parse_tei_request(body: Any, max_inputs: int) -> tuple[list[tuple[str, str | None]], bool, bool, bool]:
    """(sequences, whether the inputs were a batch, truncate, raw_scores), as TEI reads `inputs`: a string;
    a pair [a, b]; or a batch whose items are [a] or [a, b] (or plain strings)."""
    inputs = _member(body, "inputs")
    truncate, raw_scores = _flag(body, "truncate", False), _flag(body, "raw_scores", False)
    if isinstance(inputs, str):
        sequences, batched = [_sequence([inputs])], False
    elif isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs):
        sequences, batched = [_sequence(inputs)], False
    elif isinstance(inputs, list):
        sequences, batched = [_sequence(item if isinstance(item, list) else [item]) for item in inputs], True
    else:
        raise ServeError(422, f'"inputs" must be a text, a pair or a list of them, got {type(inputs).__name__}',
                         "validation")
    if not sequences:
        raise ServeError(400, '"inputs" is empty', "empty")
    _within_client_batch(len(sequences), max_inputs)
    return sequences, batched, truncate, raw_scores


def _sequence(item: list) -> tuple[str, str | None]:
    if not 1 <= len(item) <= 2 or not all(isinstance(x, str) for x in item):
        raise ServeError(422, "each input is a text or [text] or [text, text_pair], got "
                              f"{json.dumps(item, ensure_ascii=False)[:80]} (as TEI reads \"inputs\": a list of two "
                              "texts is one pair, a list of three or more is a batch of single texts)", "validation")
    return checked_text(item[0], "an input text"), (checked_text(item[1], "an input's text_pair")
                                                    if len(item) == 2 else None)


def _tei_scores(logits: np.ndarray, engine: Engine, raw_scores: bool) -> list[dict]:
    """[{label, score}] highest first: softmax over the classes (or the raw logits); a regression model's
    value as it is, never squashed."""
    scores = logits if engine.is_regression or raw_scores else probabilities(logits[None, :])[0]
    ranked = sorted(zip(engine.labels, scores.tolist(), strict=True), key=lambda pair: -pair[1])
    return [{"label": label, "score": score} for label, score in ranked]


def _ms(seconds: float) -> str:
    return str(round(seconds * 1000))


# -- the Open Inference Protocol (KServe v2) ---------------------------------------------------------------

def _add_v2_routes(app: FastAPI, state: ServerState) -> None:
    options = state.options

    def check_name(name: str) -> None:
        if name != options.model_name:
            raise ServeError(404, f"unknown model {name!r}; this server serves {options.model_name!r}", "not_found")

    @app.get("/v2", summary="server metadata")
    async def server_metadata() -> dict:
        return {"name": "albert_pytorch", "version": __version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if state.phase == "ready" else 503)

    @app.get("/v2/models/{name}", summary="model metadata")
    @app.get("/v2/models/{name}/versions/{version}", include_in_schema=False)
    async def model_metadata(name: str, version: str = "1") -> dict:
        check_name(name)
        engine = state.engine
        labels = len(engine.labels) if engine else -1
        names = ("logits",) if engine is not None and engine.is_regression else V2_OUTPUTS
        return {"name": name, "versions": ["1"], "platform": f"albert_pytorch_{options.engine.backend}",
                "inputs": [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in V2_INPUTS],
                "outputs": [{"name": n, "datatype": "FP32", "shape": [-1, labels]} for n in names]}

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready", include_in_schema=False)
    async def model_ready(name: str, version: str = "1") -> Response:
        check_name(name)
        return Response(status_code=200 if state.phase == "ready" else 503)

    @app.post("/v2/models/{name}/infer", summary="logits and probabilities for BYTES TEXT [N] (and TEXT_PAIR)")
    @app.post("/v2/models/{name}/versions/{version}/infer", include_in_schema=False)
    async def infer(name: str, request: Request, version: str = "1") -> Response:
        check_name(name)
        async with admitted(state) as slot:
            await slot.check()
            header, tensors = await read_v2_request(request, state)
            texts, pairs = v2_texts(header, tensors, options.max_client_batch_size)
            engine = await slot.engine()
            sequences = [(t, p) for t, p in zip(texts, pairs or [None] * len(texts), strict=True)]
            logits, timings = await engine.predict(sequences, False, request.is_disconnected)
            state.metrics.observe(timings)
            outputs = {"logits": logits}
            if not engine.is_regression:  # a softmax over one column is always 1: a regressor's score is its logit
                outputs["probabilities"] = probabilities(logits).astype(np.float32)
            return v2_response(header, options.model_name, outputs)


async def read_v2_request(request: Request, state: ServerState) -> tuple[dict, dict[str, bytes]]:
    """The JSON header and, with the binary tensor extension, each input's raw bytes."""
    body = await read_body(request, state.options.payload_limit)
    json_size = request.headers.get("inference-header-content-length")
    size = int(json_size) if json_size and json_size.isdigit() else len(body)
    if size > len(body):
        raise ServeError(400, f"Inference-Header-Content-Length is {size}, but the body has {len(body)} bytes",
                         "validation")
    header = await parsed(body[:size], state)
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ServeError(400, 'expected a JSON object with an "inputs" list', "validation")
    parameters(header, "the request")
    tensors, offset = {}, size
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict):
            continue  # named in v2_texts' error
        binary = parameters(tensor, f"input {tensor.get('name')!r}").get("binary_data_size")
        if binary is None:
            continue
        if not isinstance(binary, int) or isinstance(binary, bool) or binary < 0:
            raise ServeError(422, f"input {tensor.get('name')!r}: binary_data_size must be a byte count, got "
                                  f"{json.dumps(binary)[:40]}", "validation")
        if offset + binary > len(body):
            raise ServeError(400, f"input {tensor.get('name')!r} declares {binary} bytes of binary data, but the body "
                                  f"has {len(body) - offset} left", "validation")
        tensors[tensor.get("name")] = body[offset:offset + binary]
        offset += binary
    return header, tensors


def parameters(item: dict, where: str) -> dict:
    """A v2 object's "parameters": absent, or an object (422 otherwise)."""
    value = item.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServeError(422, f'{where}: "parameters" must be an object, got {type(value).__name__}', "validation")
    return value


def v2_texts(header: dict, binary: dict[str, bytes], max_inputs: int) -> tuple[list[str], list[str] | None]:
    """The TEXT (and TEXT_PAIR) strings of a v2 request, each checked for name, type, shape and content."""
    given = {}
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict) or tensor.get("name") not in V2_INPUTS:
            name = tensor.get("name") if isinstance(tensor, dict) else tensor
            raise ServeError(422, f"unknown input {name!r}: this model takes BYTES TEXT [N] and optionally "
                                  "TEXT_PAIR [N]", "validation")
        if tensor.get("datatype") != "BYTES":
            raise ServeError(422, f"input {tensor['name']} has datatype {tensor.get('datatype')!r}; expected BYTES",
                             "validation")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) for d in shape) or (
                len(shape) > 1 and any(d != 1 for d in shape[1:])):
            raise ServeError(422, f"input {tensor['name']} has shape {shape}; expected [N] (or [N, 1])", "validation")
        if tensor["name"] in given:
            raise ServeError(422, f"input {tensor['name']} is given twice", "validation")
        values = _bytes_elements(binary[tensor["name"]]) if tensor["name"] in binary else _flat(tensor.get("data"))
        if len(values) != shape[0]:
            raise ServeError(422, f"input {tensor['name']} has {len(values)} elements for shape {shape}", "validation")
        given[tensor["name"]] = [_text(v, tensor["name"]) for v in values]
    if "TEXT" not in given:
        raise ServeError(422, "the request has no TEXT input", "validation")
    texts, pairs = given["TEXT"], given.get("TEXT_PAIR")
    if not texts:
        raise ServeError(400, "TEXT is empty", "empty")
    if pairs is not None and len(pairs) != len(texts):
        raise ServeError(422, f"TEXT has {len(texts)} elements and TEXT_PAIR {len(pairs)}", "validation")
    _within_client_batch(len(texts), max_inputs)
    return texts, pairs


def _flat(data: Any) -> list:
    if not isinstance(data, list):
        raise ServeError(422, f'an input\'s "data" must be a list, got {type(data).__name__}', "validation")
    return [x for item in data for x in (item if isinstance(item, list) else [item])]


def _bytes_elements(raw: bytes) -> list[bytes]:
    """The binary extension's BYTES layout: each element a 4-byte little-endian length, then its bytes."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ServeError(422, "BYTES binary data ends inside an element's length", "validation")
        length = int.from_bytes(raw[offset:offset + 4], "little")
        if offset + 4 + length > len(raw):
            raise ServeError(400, f"BYTES binary data: element {len(values)} declares {length} bytes, but "
                                  f"{len(raw) - offset - 4} are left", "validation")
        values.append(raw[offset + 4:offset + 4 + length])
        offset += 4 + length
    return values


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ServeError(422, f"an element of {name} is not UTF-8 text", "validation") from None
    if not isinstance(value, str):
        raise ServeError(422, f"an element of {name} is {type(value).__name__}, not text", "validation")
    return checked_text(value, f"an element of {name}")


def v2_response(header: dict, model_name: str, outputs: dict[str, np.ndarray]) -> Response:
    """The requested outputs (all when none are named), as JSON data or, where asked, binary tensor data."""
    requested = header.get("outputs") or [{"name": n} for n in outputs]
    if not isinstance(requested, list):
        raise ServeError(422, f'"outputs" must be a list, got {type(requested).__name__}', "validation")
    all_binary = bool(parameters(header, "the request").get("binary_data_output"))
    described, binary = [], []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in outputs:
            raise ServeError(422, f"unknown output {name!r}: this model gives {', '.join(outputs)}", "validation")
        array = outputs[name]
        entry = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if all_binary or parameters(item, f"output {name!r}").get("binary_data"):
            raw = array.astype("<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    result = {"model_name": model_name, "model_version": "1", "outputs": described}
    if "id" in header:
        result["id"] = header["id"]
    text = json.dumps(result).encode()
    if not binary:
        return Response(text, media_type="application/json")
    return Response(text + b"".join(binary), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(text))})
