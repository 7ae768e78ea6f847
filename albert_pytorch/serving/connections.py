"""What a cheap client can hold, bounded at the connection: how many connections, how long and how large a
request head may be, how long a body may take to arrive.

uvicorn's own HTTP protocol (httptools) bounds none of these: an idle socket, a head that never ends or a body
that stops arriving each holds a file descriptor and memory for as long as the client likes. `guarded_protocol`
is that protocol with the bounds TEI (hyper) and nginx keep, answered in our error shape:

- at most `max_connections` open; at the cap, the connection that has waited longest for a request head is
  closed to admit the new one (a real client sends its head at once; only idle and slow ones wait);
- a request head must arrive within `head_timeout` seconds of the connection opening (or of its first byte
  after a previous answer) and within `max_head_bytes`: 408 or 431 otherwise;
- a body must arrive within `body_timeout` seconds of its head: 408 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import struct
import time
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger("albert_pytorch.serving")

# File descriptors kept apart from client connections: the model's files, threads' pipes, logs.
_RESERVED_DESCRIPTORS = 64


def default_max_connections() -> int:
    """Client connections this process can hold without running out of file descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 65536
    return max(16, min(limit, 65536) - _RESERVED_DESCRIPTORS)


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_head_bytes: int = 64 * 1024


def error_response(status: int, reason: str, message: str, error_type: str) -> bytes:
    """A whole HTTP/1.1 answer in TEI's error shape, that closes the connection."""
    body = json.dumps({"error": message, "error_type": error_type}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


def guarded_protocol(limits: ConnectionLimits, on_refused=None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits`; `on_refused(kind)` counts what was refused (a metric)."""
    waiting: dict[GuardedProtocol, float] = {}  # connections waiting for a request head, by when they began to

    class GuardedProtocol(HttpToolsProtocol):
        accepted = 0  # connections taken from the listening socket so far
        _timer: asyncio.TimerHandle | None = None  # the running head or body deadline
        _head_bytes = 0  # of the request head being read

        def connection_made(self, transport: asyncio.Transport) -> None:
            type(self).accepted += 1
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._evict_the_longest_waiting()
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            waiting.pop(self, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            reading_head = self in waiting
            if reading_head:
                if self._timer is None:  # the first byte of a request after an answer: its head is on the clock
                    self._start_timer(limits.head_timeout, 408, "Request Timeout",
                                      "the request head did not arrive in time")
                self._head_bytes += len(data)
            super().data_received(data)
            # judged once the parser has had the bytes: a read that ends a small head may carry a large body
            if reading_head and self in waiting and self._head_bytes > limits.max_head_bytes:
                self._refuse(431, "Request Header Fields Too Large",
                             f"the request head is over {limits.max_head_bytes} bytes", "head_too_large")

        def on_headers_complete(self) -> None:
            waiting.pop(self, None)
            self._stop_timer()
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.more_body:
                self._start_timer(limits.body_timeout, 408, "Request Timeout", "the body did not arrive in time")

        def on_message_complete(self) -> None:
            self._stop_timer()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._head_bytes = 0
                waiting[self] = time.monotonic()  # uvicorn's keep-alive timeout closes it if nothing comes

        def shutdown(self) -> None:
            """At the drain: a request whose body is still arriving is answered now (503, in our shape) instead
            of holding the drain until its deadline cancels it, which uvicorn answers with a plain-text 500."""
            cycle = self.cycle
            if cycle is not None and not cycle.response_started and cycle.more_body:
                self._refuse(503, "Service Unavailable", "the server is stopping; retry", "unhealthy")
                return
            super().shutdown()

        def _await_head(self) -> None:
            waiting[self] = time.monotonic()
            self._start_timer(limits.head_timeout, 408, "Request Timeout", "the request head did not arrive in time")

        def _evict_the_longest_waiting(self) -> None:
            oldest = min((c for c in waiting if c is not self), key=waiting.get, default=None)
            if oldest is None:
                self._refuse(503, "Service Unavailable", f"{limits.max_connections} connections are open, every one "
                             "busy; retry shortly", "overloaded")
                return
            oldest._refuse(503, "Service Unavailable", "closed for a new connection: this one sent no request",
                           "overloaded")

        def _start_timer(self, seconds: float, status: int, reason: str, message: str) -> None:
            self._stop_timer()
            self._timer = self.loop.call_later(seconds, self._refuse, status, reason, message, "timeout")

        def _stop_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _refuse(self, status: int, reason: str, message: str, kind: str) -> None:
            """Answer (unless an answer has begun) and close; the app, if it was reading, sees a disconnect."""
            self._stop_timer()
            waiting.pop(self, None)
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(error_response(status, reason, message, kind))
            self.transport.close()
            logger.info("closed a connection: %s", message)
            if on_refused is not None:
                on_refused(kind)

    return GuardedProtocol


def accept_queue_length(listening: socket.socket) -> int:
    """Connections the kernel has completed on `listening` that the server has not accepted yet (Linux's
    TCP_INFO reports a listening socket's accept queue in tcpi_unacked); 0 where that cannot be read."""
    try:
        info = listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (AttributeError, OSError):
        return 0
    return struct.unpack_from("I", info, 24)[0] if len(info) >= 28 else 0
