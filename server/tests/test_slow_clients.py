"""Issue 12, defect 5: slow clients are timed out and connections are capped (http_guard.py), tested against a real
uvicorn process with raw sockets: a bounded slowloris (60 connections trickling headers for a few seconds), an
HTTP/0.9 request line, a body that stops arriving, and the connection cap.

The server's timeouts are shortened through LAMBDA_DECODER_* variables, which a server without them ignores
(so this file fails, rather than errors, against one).
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.request

import pytest

from conftest import ServerProcess

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 40
ORIGIN = "https://app.example"
# Timers fire on the event loop: allow for a loaded 2-core machine, not for a missing timeout.
SLACK = 1.5


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess("--cors-origin", ORIGIN, env={
        "LAMBDA_DECODER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "LAMBDA_DECODER_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "LAMBDA_DECODER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    })
    yield srv
    srv.stop()


def connect(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def closed_by_peer(s: socket.socket) -> bool:
    """Reads what is there (non-blocking); True once the server has closed the connection."""
    try:
        while s.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def read_until_closed(s: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when that happened (seconds from now)."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {timeout} s; got {data[:200]!r}") from None
    return data, time.monotonic() - t0


def health_ok(srv) -> bool:
    with urllib.request.urlopen(srv.url + "/v1/health", timeout=10) as r:
        return r.status == 200


def test_bounded_slowloris_is_closed_after_the_header_timeout(server):
    n = 60  # 20 over the cap
    socks = []
    t0 = time.monotonic()
    closed_at: dict[int, float] = {}
    for i in range(n):
        s = connect(server)
        socks.append(s)
        try:
            s.sendall(b"POST /v1/decode HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError:  # over the cap: already closed
            closed_at[i] = time.monotonic() - t0
        s.setblocking(False)
    next_byte = t0
    deadline = t0 + HEADER_TIMEOUT + SLACK + 2
    while len(closed_at) < n and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_byte:  # a header line every 0.5 s: slow, never finished
            for i, s in enumerate(socks):
                if i not in closed_at:
                    try:
                        s.send(b"X-Slow: 1\r\n")
                    except OSError:
                        closed_at[i] = time.monotonic() - t0
            next_byte += 0.5
        open_socks = [s for i, s in enumerate(socks) if i not in closed_at]
        readable, _, _ = select.select(open_socks, [], [], 0.05)
        for s in readable:
            if closed_by_peer(s):
                closed_at[socks.index(s)] = time.monotonic() - t0
    for s in socks:
        s.close()
    times = sorted(closed_at.values())
    print(f"\nslowloris: {len(times)}/{n} closed; first {times[0]:.2f} s, last {times[-1]:.2f} s; "
          f"{sum(t < 1 for t in times)} within 1 s (over the cap)" if times else "\nslowloris: none closed")
    assert len(closed_at) == n, f"only {len(closed_at)} of {n} slow connections were closed"
    assert times[-1] < HEADER_TIMEOUT + SLACK, times[-1]
    # The ones over the cap at once; the others when their headers were late, not before.
    assert sum(t < 1.0 for t in times) >= n - MAX_CONNECTIONS
    assert sum(t > HEADER_TIMEOUT - 0.5 for t in times) >= MAX_CONNECTIONS - 5
    assert health_ok(server)


def test_http09_request_line_is_closed_after_the_header_timeout(server):
    s = connect(server)
    s.sendall(b"GET /v1/health\r\n")  # HTTP/0.9: no version, no headers, waits for the reply
    data, after = read_until_closed(s, HEADER_TIMEOUT + SLACK + 5)
    print(f"\nHTTP/0.9 request line closed after {after:.2f} s")
    assert after < HEADER_TIMEOUT + SLACK
    s.close()


def test_body_that_stops_arriving_gets_408_json_with_cors(server):
    s = connect(server)
    s.sendall(b"POST /v1/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Origin: " + ORIGIN.encode() + b"\r\nContent-Length: 500\r\n\r\n{\"image_embeds\": [")
    data, after = read_until_closed(s, BODY_TIMEOUT + SLACK + 5)
    s.close()
    print(f"\nstalled body answered and closed after {after:.2f} s")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), data[:300]
    assert b"access-control-allow-origin: " + ORIGIN.encode() in head.lower()
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert after < BODY_TIMEOUT + SLACK


def test_body_nobody_reads_is_bounded_too(server):
    # /v1/health answers 405 to a POST without reading its body; the guard closes the connection anyway.
    s = connect(server)
    s.sendall(b"POST /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\nabc")
    data, after = read_until_closed(s, BODY_TIMEOUT + SLACK + 5)
    s.close()
    assert data.startswith(b"HTTP/1.1 405"), data[:200]
    assert after < BODY_TIMEOUT + 1 + SLACK


def test_connection_cap_makes_room_by_closing_idle_keep_alive_connections(server):
    idle = []
    for _ in range(MAX_CONNECTIONS):
        s = connect(server)
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.setblocking(False)
        idle.append(s)
    # All slots hold idle keep-alive connections (uvicorn closes those after 5 s); a new client still gets in.
    assert health_ok(server)
    time.sleep(0.2)
    assert sum(closed_by_peer(s) for s in idle) >= 1
    for s in idle:
        s.close()
