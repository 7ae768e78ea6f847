"""`python3 -m albert_pytorch serve`: the application under uvicorn on one machine, or as a Ray Serve
deployment of replicas, each with its own batcher, on a local or existing Ray cluster.

SIGTERM (or Ctrl-C): readiness turns 503, the listening socket closes (new connections are refused), every
accepted request is answered, and the process exits 0 within `--shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import numpy as np
import uvicorn

from ..config import AlbertConfig
from .app import Metrics, ServeError, ServeOptions, ServerState, create_app
from .connections import ConnectionLimits, accept_queue_length, default_max_connections, guarded_protocol
from .engine import Encoder, Engine, EngineOptions, Timings, read_model_dir

logger = logging.getLogger("albert_pytorch.serving")


def ready_line(options: ServeOptions, host: str, port: int, where: str = "") -> str:
    engine = options.engine
    backend = ("PyTorch" + (" bf16" if engine.bf16 else "") if engine.backend == "torch"
               else f"ONNX Runtime ({engine.provider}" + (", int8)" if engine.quantize == "int8" else ")"))
    return (f"serving {options.model_name} at http://{host}:{port} ({backend}{where}): POST /predict, "
            f"POST /v2/models/{options.model_name}/infer, GET / to try it, /docs for the API")


def serve(options: ServeOptions, announce: Callable[[str], None] = print) -> int:
    """Serve until SIGTERM or Ctrl-C; returns the exit code (0 after a clean drain, 1 if the model failed to
    load, which stops the server). A model directory it cannot read is refused before it binds."""
    model_files = read_model_dir(options.engine)
    listening = _bound(options)
    return _serve_http(options, listening, lambda metrics: Engine(options.engine, metrics, model_files), "",
                       announce)


def _bound(options: ServeOptions) -> socket.socket:
    listening = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((options.host, options.port))
    return listening


def _serve_http(options: ServeOptions, listening: socket.socket, make_engine: Callable[[Metrics], Engine],
                where: str, announce: Callable[[str], None]) -> int:
    """The app under uvicorn behind the connection guard, on `listening`, until SIGTERM or Ctrl-C drains it."""
    port = listening.getsockname()[1]

    def loaded(metrics: Metrics) -> Engine:
        try:
            engine = make_engine(metrics)
        except Exception:
            server.should_exit = True  # a server without its model only answers 503: stop, exit 1
            raise
        settle_garbage_collector()
        announce(ready_line(options, options.host, port, where))
        return engine

    app = create_app(options, loaded)
    limits = ConnectionLimits(options.max_connections or default_max_connections(), options.head_timeout,
                              options.body_timeout)
    closed = app.state.server.metrics.connections_closed
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=options.shutdown_timeout,
                            lifespan="on", access_log=False,
                            http=guarded_protocol(limits, lambda reason: closed.labels(reason).inc()))
    server = DrainingServer(config, app.state.server, listening)
    server.run(sockets=[listening])
    return 0 if app.state.server.phase != "failed" else 1


# Allocations between two of the collector's youngest-generation passes (Python's default is 700). Requests allocate
# many short-lived objects, and every tenth pass goes one generation deeper: with 700 clients in flight, collections
# took a third of the event loop (docs/benchmarks.md, "Serving under clients that ignore Retry-After").
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Once the model and the framework are loaded: move every object alive now (hundreds of thousands, which live as
    long as the process) out of the cyclic collector's sight (`gc.freeze`), and let the youngest generation grow to
    GC_YOUNG_THRESHOLD before a pass. Reference counting still frees what requests leave behind at once; the
    collector only finds cycles, later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# Seconds past --shutdown_timeout after which a drain that has not ended ends the process anyway (exit 1): what
# is left then is a model batch or a tokenization already running, which the drain cannot interrupt.
DRAIN_MARGIN_S = 5.0
# Seconds the server keeps accepting after SIGTERM, at most, to take what the kernel had already connected.
ACCEPT_BACKLOG_S = 2.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose first SIGTERM or SIGINT also marks the app as draining (503 on readiness and on
    any request still arriving over an open connection) before uvicorn stops accepting and drains; a drained
    shutdown then ends the process with 0 (uvicorn itself re-raises the signal, which reads as a crash).
    The drain is the server's promise to whoever stops it (a Kubernetes grace period follows it): the process
    is gone within --shutdown_timeout plus DRAIN_MARGIN_S, however loaded the host."""

    def __init__(self, config: uvicorn.Config, state: ServerState, listening: socket.socket | None = None):
        super().__init__(config)
        self.state, self.listening = state, listening
        self.deadline: threading.Timer | None = None
        self.accepted_before_signal: int | None = None  # connections the server must take before it stops

    def handle_exit(self, sig: int, frame) -> None:
        self.state.phase = "draining"
        if self.accepted_before_signal is None and self.listening is not None:
            self.accepted_before_signal = self.config.http.accepted + accept_queue_length(self.listening)
        if self.deadline is None:
            limit = (self.config.timeout_graceful_shutdown or 0) + DRAIN_MARGIN_S
            self.deadline = threading.Timer(limit, _overran, args=(limit,))
            self.deadline.daemon = True
            self.deadline.start()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets=None) -> None:
        """uvicorn's shutdown, once every connection the kernel completed before the signal has been taken (each
        is answered 503 with Connection: close, as the app is draining): closing the listening socket first
        would reset them, a failure the client cannot tell from a crash."""
        if self.accepted_before_signal is not None:
            deadline = time.monotonic() + ACCEPT_BACKLOG_S
            while self.config.http.accepted < self.accepted_before_signal and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _overran(limit: float) -> None:
    logger.error("the drain did not end within %.0f s (--shutdown_timeout plus %.0f s); exiting now", limit,
                 DRAIN_MARGIN_S)
    os._exit(1)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` None starts a local Ray instance; a fixed count or autoscaling bounds."""

    address: str | None = None
    num_replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None


class RemoteEngine:
    """The model replicas of a Ray Serve deployment, seen by the HTTP app as one engine: each replica tokenizes
    and batches what it is sent. A replica that dies while answering makes its request a 503 (retry: another
    replica answers)."""

    def __init__(self, options: EngineOptions, handle, model_files: tuple[AlbertConfig, object]):
        config, self.tokenizer = model_files
        self.handle, self.is_regression = handle, config.is_regression
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.max_input_length = options.max_input_length or config.max_position_embeddings
        self.encoder = Encoder(self.tokenizer, self.max_input_length)  # /tokenize and /decode, answered here

    def start(self) -> None:
        """The replicas run their own batchers."""

    async def stop(self) -> None:
        """Ray stops the replicas."""

    def overloaded(self) -> bool:
        """Each replica bounds its own queue; the front has none to watch."""
        return False

    async def predict(self, sequences: list[tuple[str, str | None]], truncate: bool,
                      gone: Callable[[], Awaitable[bool]]) -> tuple[np.ndarray, Timings]:
        import ray.exceptions

        try:
            return await self.handle.predict.remote(sequences, truncate)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
            raise ServeError(503, f"a model replica stopped while answering ({type(err).__name__}); retry",
                             "unhealthy", {"Retry-After": "1"}) from None


class ModelReplica:
    """One Ray Serve replica of the model: an `Engine` with its own batcher."""

    def __init__(self, options: EngineOptions):
        self.engine = Engine(options)
        self.started = False

    async def predict(self, sequences: list[tuple[str, str | None]], truncate: bool) -> tuple[np.ndarray, Timings]:
        if not self.started:
            self.engine.start()
            self.started = True
        return await self.engine.predict(sequences, truncate, _never_gone)


async def _never_gone() -> bool:
    return False  # the HTTP front watches the client; a replica answers what it was sent


def model_deployment(options: ServeOptions, scale: RayOptions):
    """The model replicas as a Ray Serve application without HTTP of its own (each replica loads the model and
    batches on its own; a fixed count or autoscaling bounds)."""
    from ray import serve as ray_serve

    if scale.min_replicas is not None or scale.max_replicas is not None:
        low = scale.min_replicas if scale.min_replicas is not None else 1
        high = scale.max_replicas if scale.max_replicas is not None else max(low, scale.num_replicas)
        width = {"autoscaling_config": {"min_replicas": low, "max_replicas": high}}
    else:
        width = {"num_replicas": scale.num_replicas}
    # enough requests per replica in flight for its batcher to fill a batch
    model = ray_serve.deployment(ModelReplica, max_ongoing_requests=4 * options.engine.max_batch_requests, **width)
    return model.bind(options.engine)


def serve_on_ray(options: ServeOptions, scale: RayOptions, announce: Callable[[str], None] = print) -> int:
    """The model replicas on Ray (a local instance, or the cluster at `scale.address`) behind this process's own
    HTTP server, the one `serve` runs: Ray's HTTP proxy is not started, so every answer, a dead replica's
    included, passes the same guard and comes in the documented shape. Runs until SIGTERM or Ctrl-C drains it,
    then takes the deployment down."""
    import ray
    from ray import serve as ray_serve

    model_files = read_model_dir(options.engine)
    listening = _bound(options)  # a port in use is refused before Ray starts
    ray.init(address=scale.address or "local", include_dashboard=False, log_to_driver=False)
    try:
        ray_serve.start(proxy_location="Disabled")
        handle = ray_serve.run(model_deployment(options, scale), name="albert", route_prefix=None)
        replicas = (f"{scale.min_replicas}-{scale.max_replicas} replicas" if scale.max_replicas
                    else f"{scale.num_replicas} replica{'s' if scale.num_replicas > 1 else ''}")
        return _serve_http(options, listening, lambda metrics: RemoteEngine(options.engine, handle, model_files),
                           f", Ray Serve, {replicas}", announce)
    finally:
        ray_serve.shutdown()
        ray.shutdown()
