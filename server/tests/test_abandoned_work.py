"""Issue 12, defect 3: abandoned work is cancelled. A client that disconnects has its decode stopped at the next
step (running) or its queue slot freed at once (waiting); CPU servers cap the work per request lower; SIGTERM
stops the server within a stated bound. Real uvicorn processes, raw sockets to disconnect for real; the
disconnect tests run against the Ray Serve app too (Serve's proxy cancels the call to the decoder replica).
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from urllib.parse import urlsplit

from conftest import DIM, ServerProcess, info, small, wait_for
from lambda_decoder.config import SHUTDOWN_MARGIN_S

# A decode that lasts: 128 px, 50 steps, guidance on (2 UNet passes a step). With the tiny random decoder on a CPU
# a step takes 0.1 s (idle machine) to over 1 s (busy 2-core machine), so the whole decode takes 5 s to a minute:
# long enough to be caught running, and each step short enough for a prompt cancellation.
LONG = small(width=128, height=128, num_inference_steps=50, seed=3)


def send_decode(url: str, body: dict) -> socket.socket:
    """Sends a whole POST /v1/decode and returns the socket without reading the reply (close it to leave)."""
    data = json.dumps(body).encode()
    where = urlsplit(url)
    s = socket.create_connection((where.hostname, where.port), timeout=10)
    head = (f"POST {where.path}/v1/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    s.sendall(head + data)
    return s


class RayApp:
    """The Ray Serve app with one decoder replica (so that a second request waits behind the first)."""

    def __init__(self, ray_serve):
        from lambda_decoder.config import Settings
        from lambda_decoder.ray_app import RayOptions

        self.url = ray_serve.deploy("abandoned", Settings(tiny_random=True, device="cpu", threads=1, log_level="warning"),
                                    RayOptions(replicas=1, replica_gpus=0, replica_cpus=0.25))


@pytest.fixture(scope="module")
def server(server_kind, request):
    if server_kind == "ray":
        yield RayApp(request.getfixturevalue("ray_serve"))
        return
    srv = ServerProcess()
    yield srv
    srv.stop()


def test_client_that_disconnects_has_its_running_decode_cancelled(server):
    a = send_decode(server.url, LONG)
    wait_for(lambda: info(server.url)["queue"]["running"] == 1, 60, "the long decode started")
    # Once a step is done the estimate is the decode's own pace; before, it is at most UNKNOWN_DECODE_S (1 s).
    wait_for(lambda: info(server.url)["queue"]["estimated_wait_s"] > 3, 60, "the long decode has a few seconds left")
    remaining = info(server.url)["queue"]["estimated_wait_s"]
    a.close()
    freed = wait_for(lambda: info(server.url)["queue"]["running"] == 0, 30, "the abandoned decode stopped")
    print(f"\nabandoned decode: {remaining:.1f} s left, device free {freed:.2f} s after the client left")
    # Cancelled at its next step: far sooner than it would have finished.
    assert freed < min(10.0, remaining / 2), (freed, remaining)
    # The server goes on serving.
    r = urllib.request.urlopen(urllib.request.Request(
        server.url + "/v1/decode", data=json.dumps(small(num_inference_steps=1)).encode(),
        headers={"Content-Type": "application/json"}), timeout=60)
    assert r.status == 200


def test_client_that_disconnects_while_waiting_frees_its_slot_at_once(server):
    a = send_decode(server.url, LONG)
    wait_for(lambda: info(server.url)["queue"]["running"] == 1, 60, "the long decode started")
    b = send_decode(server.url, small(num_inference_steps=1))
    wait_for(lambda: info(server.url)["queue"]["waiting"] == 1, 10, "the second request waits")
    b.close()
    freed = wait_for(lambda: info(server.url)["queue"]["waiting"] == 0, 10, "the abandoned slot was freed")
    print(f"\nwaiting slot freed {freed:.2f} s after its client left")
    assert freed < 2.0
    assert info(server.url)["queue"]["running"] == 1  # the running decode is not disturbed
    a.close()
    wait_for(lambda: info(server.url)["queue_length"] == 0, 30, "the queue emptied")


# --- per-device caps (in-process) ---------------------------------------------------------------------------------


class FakeGpuDecoder:
    model_id, device, dtype, embed_dim, negative_default_source = "fake-gpu", "cuda", "float16", DIM, "zeros"
    size_multiple = 64


def test_cpu_servers_get_smaller_default_caps(make_local_client):
    make_client = make_local_client
    cpu = make_client()
    limits = cpu.get("/v1/info").json()["limits"]
    assert (limits["max_side"], limits["max_steps"]) == (512, 50)
    r = cpu.post("/v1/decode", json=small(width=1024, height=1024))
    assert r.status_code == 422 and "limit of 512" in r.json()["error"]["message"], r.text
    r = cpu.post("/v1/decode", json=small(num_inference_steps=100))
    assert r.status_code == 422 and "[1, 50]" in r.json()["error"]["message"], r.text

    gpu = make_client(decoder=FakeGpuDecoder()).get("/v1/info").json()["limits"]
    assert (gpu["max_side"], gpu["max_steps"]) == (1024, 100)

    # Explicit settings win over the device's defaults (rounded down to the model's size multiple).
    explicit = make_client(max_side=1023, max_steps=70).get("/v1/info").json()["limits"]
    assert (explicit["max_side"], explicit["max_steps"]) == (1020, 70)


# --- bounded shutdown (a real process and a real SIGTERM) ------------------------------------------------------------------


def _post(url: str, body: dict, out: dict, key: str) -> None:
    req = urllib.request.Request(url + "/v1/decode", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            out[key] = (r.status, r.read(), time.monotonic())
    except urllib.error.HTTPError as e:
        out[key] = (e.code, e.read(), time.monotonic())


def test_sigterm_stops_the_server_within_the_grace_plus_margin(server_process):
    grace = 2.0
    # Through the environment: a server without the setting still starts (and then fails the bound below).
    srv = server_process(env={"LAMBDA_DECODER_SHUTDOWN_GRACE": str(grace)})
    out: dict = {}
    running = threading.Thread(target=_post, args=(srv.url, LONG, out, "running"))
    running.start()
    wait_for(lambda: info(srv.url)["queue"]["running"] == 1, 60, "the long decode started")
    waiting = threading.Thread(target=_post, args=(srv.url, small(), out, "waiting"))
    waiting.start()
    wait_for(lambda: info(srv.url)["queue"]["waiting"] == 1, 10, "a request waits")

    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        rc = srv.proc.wait(60)
    finally:
        stopped = time.monotonic() - t0
        running.join(60)
        waiting.join(60)
    print(f"\nSIGTERM with grace {grace} s: waiting request answered after {out['waiting'][2] - t0:.2f} s, "
          f"running one after {out['running'][2] - t0:.2f} s, process gone after {stopped:.2f} s")
    bound = grace + SHUTDOWN_MARGIN_S
    assert stopped < bound, f"the server took {stopped:.1f} s to stop (bound {bound} s)"
    assert rc in (0, -signal.SIGTERM)
    # The waiting request is told at once; the running one, too long for the grace, is cancelled and told so.
    for key in ("waiting", "running"):
        status, body, _ = out[key]
        assert status == 503 and json.loads(body)["error"]["code"] == "shutting_down", (key, status, body[:200])
    assert out["waiting"][2] - t0 < 1.5
    assert grace - 0.5 < out["running"][2] - t0 < bound
