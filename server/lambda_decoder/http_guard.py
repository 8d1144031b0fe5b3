"""Slow and numerous clients: what nginx does in front of an app and uvicorn (0.54, h11) does not do by itself.

uvicorn times out idle keep-alive connections (--timeout-keep-alive) and caps header size (h11's 16 KiB), but it
waits forever for a request line and headers that arrive a byte at a time (slowloris), or for an HTTP/0.9 style
request line that never gets its blank line, and its --limit-concurrency answers 503 only once a request's headers
are in (and as text/plain) — a connection that never finishes its headers is never counted out. So this protocol
adds, on top of uvicorn's own h11 protocol:

- client_header_timeout: a request's line and headers must be complete within `header_timeout` seconds of its
  first byte (of the connection's opening for the first request); otherwise the connection is closed.
- a backstop body timeout: once the headers are in, the body must be complete within `body_timeout` + 1 s. The
  app itself answers 408 at `body_timeout` while it reads a body (validation.read_body in app.py); this only
  catches bodies nobody reads (e.g. after a 401), which would otherwise keep the connection open.
- a connection cap: beyond `max_connections` open connections, an idle keep-alive connection is closed to make
  room (as nginx does), else the new connection is closed at once.

It hooks only uvicorn's documented protocol interface (connection_made, data_received, connection_lost) and reads
the h11 connection state; the request handling itself is uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("lambda_decoder")

# The app answers 408 when a body is late; the connection-level backstop waits this much longer so that reply wins.
BODY_BACKSTOP_EXTRA_S = 1.0


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args, header_timeout: float, body_timeout: float, max_connections: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_for: object = None  # the h11 client state the armed deadline is about

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._close_an_idle_connection():
            self.connections.discard(self)  # at once: closing completes on the next loop iteration
            transport.close()
            _log_refusal(self.max_connections)
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle until the next request's first byte: uvicorn's keep-alive timeout applies, not ours.
        if self.conn.their_state is h11.IDLE:
            self._disarm()

    # --- deadlines ---------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Arms the deadline of what the client must send next: headers (state IDLE) or body (SEND_BODY)."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            timeout = self.header_timeout
        elif state is h11.SEND_BODY:
            timeout = self.body_timeout + BODY_BACKSTOP_EXTRA_S
        else:  # the request is in (or the connection is done): nothing to wait for from the client
            self._disarm()
            return
        if self._deadline is None or self._deadline_for is not state:
            self._disarm()
            self._deadline_for = state
            self._deadline = self.loop.call_later(timeout, self._expire, state, timeout)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._deadline_for = None

    def _expire(self, state, timeout: float) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not state:
            return
        what = "request line and headers" if state is h11.IDLE else "body"
        log.info("closing %s: its %s did not arrive within %g s", _peer(self.client), what, timeout)
        self.transport.close()

    def _close_an_idle_connection(self) -> bool:
        for other in list(self.connections):
            if other is not self and getattr(other, "timeout_keep_alive_task", None) is not None:
                other.timeout_keep_alive_handler()
                return True
        return False


_refusals = {"count": 0, "logged_at": float("-inf")}


def _log_refusal(limit: int) -> None:
    """One warning per 10 s at most, with the count: a flood of connections must not flood the log too."""
    _refusals["count"] += 1
    now = time.monotonic()
    if now - _refusals["logged_at"] >= 10:
        log.warning("closed %d new connection(s): %d connections open (the limit)", _refusals["count"], limit)
        _refusals.update(count=0, logged_at=now)


def _peer(client) -> str:
    return "%s:%d" % client if client else "a client"
