"""Bounded load test: 200 requests at concurrency 20 against a real uvicorn on 127.0.0.1 with the tiny random
decoder on the CPU. The queue holds 1 + 8, so most of the 20 clients are told 429: like a well-behaved client
each waits Retry-After (capped) and tries again until its deadline. Counts every answer (200, the 422s it
provokes on purpose, the 429s; anything else fails), checks every image, and prints the server's RSS at start,
after a warm-up and after the load.

    python3 tests/load_test.py            # from server/: prints the numbers
    python3 -m pytest -m load tests       # the same as a test (part of .ci/test-server.sh)
"""

from __future__ import annotations

import json
import struct
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from conftest import ServerProcess, small

REQUESTS = 200
CONCURRENCY = 20
TIME_LIMIT_S = 300  # the whole run; each request has its own timeout below
REQUEST_TIMEOUT_S = 120
MAX_RETRY_SLEEP_S = 2.0
INVALID_EVERY = 10  # every 10th request asks for a width that is not a multiple of 4 (expect 422)
RSS_GROWTH_LIMIT = 256 << 20  # after warm-up; generous, it catches a leak per request, not allocator noise


def png_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def one_request(url: str, i: int) -> tuple[int, str, float]:
    """One HTTP answer: (status or 0 for a transport error, problem or "", seconds)."""
    body = small(seed=i, num_inference_steps=1)
    if i % INVALID_EVERY == 0:
        body["width"] = 66  # not a multiple of the tiny model's 4
    req = urllib.request.Request(url + "/v1/decode", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            data = r.read()
            problem = "" if png_size(data) == (64, 64) else f"200 with a bad image ({len(data)} bytes)"
            return r.status, problem, time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        payload = e.read()
        problem = ""
        if e.code == 429 and not e.headers.get("Retry-After", "").isdigit():
            problem = "429 without Retry-After"
        elif e.code == 429:
            problem = ""
            time.sleep(min(MAX_RETRY_SLEEP_S, int(e.headers["Retry-After"])))
        elif e.code == 422 and i % INVALID_EVERY:
            problem = f"unexpected 422: {payload[:200]!r}"
        elif e.code not in (422, 429):
            problem = f"unexpected {e.code}: {payload[:200]!r}"
        return e.code, problem, time.perf_counter() - t0
    except OSError as e:
        return 0, f"transport error: {e}", time.perf_counter() - t0


def request_until_answered(url: str, i: int, deadline: float) -> list[tuple[int, str, float]]:
    """Every answer to request i: 429s (each followed by its Retry-After wait), then the final one."""
    answers = [one_request(url, i)]
    while answers[-1][0] == 429 and time.monotonic() < deadline:
        answers.append(one_request(url, i))
    return answers


def run_load(url: str, pid: int) -> dict:
    proc = psutil.Process(pid)
    rss_start = proc.memory_info().rss
    for i in range(3):  # warm-up: first-decode allocations are not a leak
        one_request(url, 10_000 + i + 1)
    rss_warm = proc.memory_info().rss
    t0 = time.perf_counter()
    deadline = time.monotonic() + TIME_LIMIT_S - REQUEST_TIMEOUT_S
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        per_request = list(pool.map(lambda i: request_until_answered(url, i, deadline), range(REQUESTS),
                                    timeout=TIME_LIMIT_S))
    wall = time.perf_counter() - t0
    rss_end = proc.memory_info().rss
    answers = Counter(status for answers in per_request for status, _, _ in answers)
    final = Counter(answers[-1][0] for answers in per_request)
    problems = [p for answers in per_request for _, p, _ in answers if p]
    decode_s = sorted(answers[-1][2] for answers in per_request if answers[-1][0] == 200)
    info = json.load(urllib.request.urlopen(url + "/v1/info", timeout=10))
    return {
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "final_statuses": dict(sorted(final.items())),
        "all_answers": dict(sorted(answers.items())),
        "problems": problems,
        "wall_s": round(wall, 1),
        "decoded_per_s": round(final.get(200, 0) / wall, 2),
        "ok_latency_p50_s": round(decode_s[len(decode_s) // 2], 3) if decode_s else None,
        "ok_latency_max_s": round(decode_s[-1], 3) if decode_s else None,
        "rss_start_mib": round(rss_start / 2**20, 1),
        "rss_warm_mib": round(rss_warm / 2**20, 1),
        "rss_end_mib": round(rss_end / 2**20, 1),
        "rss_growth_bytes": rss_end - rss_warm,
        "queue_length_after": info["queue_length"],
    }


def check(r: dict) -> None:
    assert not r["problems"], r["problems"][:5]
    invalid = REQUESTS // INVALID_EVERY
    # Every valid request is eventually decoded, every invalid one told 422; 429s are only counted.
    assert r["final_statuses"] == {200: REQUESTS - invalid, 422: invalid}, r["final_statuses"]
    assert set(r["all_answers"]) <= {200, 422, 429}, r["all_answers"]
    assert r["wall_s"] < TIME_LIMIT_S
    assert r["queue_length_after"] == 0
    assert r["rss_growth_bytes"] < RSS_GROWTH_LIMIT, f"RSS grew by {r['rss_growth_bytes'] >> 20} MiB under load"


@pytest.mark.load
def test_bounded_load(server_process):
    srv = server_process()
    r = run_load(srv.url, srv.proc.pid)
    print("\nload test:", json.dumps(r))
    check(r)


if __name__ == "__main__":
    srv = ServerProcess()
    try:
        result = run_load(srv.url, srv.proc.pid)
    finally:
        srv.stop()
    print(json.dumps(result, indent=2))
    check(result)
    sys.exit(0)
