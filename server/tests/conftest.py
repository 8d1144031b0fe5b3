"""Fixtures: the tiny random decoder (built once), in-process apps around it, and a real uvicorn subprocess."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

SERVER_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SERVER_DIR))

from lambda_decoder.app import create_app  # noqa: E402
from lambda_decoder.config import FORMATS, Settings  # noqa: E402
from lambda_decoder.decoder import Decoder, DecodeResult  # noqa: E402

DIM = 32  # the tiny λ model's embedding dimension, and --tiny-random's default


def embeds(value: float = 0.1, dim: int = DIM) -> list[float]:
    return [value * ((i % 7) - 3) for i in range(dim)]


def small(**fields) -> dict:
    """A cheap valid request: 64×64, 2 steps (seconds on a busy 2-core CPU)."""
    body = {"image_embeds": embeds(), "width": 64, "height": 64, "num_inference_steps": 2, "seed": 1}
    body.update(fields)
    return body


@pytest.fixture(scope="session")
def tiny_decoder() -> Decoder:
    return Decoder.load(Settings(tiny_random=True, device="cpu"))


# Settings that change the decoder itself: with one of these a test gets a decoder of its own.
DECODER_SETTINGS = {"model", "negative_embeds", "tiny_seed", "embed_dim"}


@pytest.fixture
def make_local_client(tiny_decoder):
    """make_local_client(decoder="tiny", **settings) → a TestClient on an in-process app with those settings.
    decoder: "tiny" (the shared one, or one built from the decoder settings given), an object (a fake), or None
    (load from the settings at startup)."""
    clients = []

    def make(decoder="tiny", **settings) -> TestClient:
        if decoder == "tiny":
            if DECODER_SETTINGS & set(settings):
                decoder = Decoder.load(Settings(**{"tiny_random": "model" not in settings, "device": "cpu", **settings}))
            else:
                decoder = tiny_decoder
        client = TestClient(create_app(Settings(**settings), decoder=decoder))
        client.__enter__()  # runs the lifespan
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


# The protocol suite runs against every kind of server: the single-process app (in-process, FastAPI's TestClient)
# and the Ray Serve app (a local Ray on 127.0.0.1, over HTTP). Tests that need the in-process app (fake decoders,
# its queue internals) use make_local_client instead.
SERVER_KINDS = ["local", "ray"]


def pytest_collection_modifyitems(items):
    """Marks everything that needs Ray (`-m ray` / `-m "not ray"`): the Ray kind of the protocol suite and
    test_ray_serve.py."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (callspec and callspec.params.get("server_kind") == "ray") or item.path.name == "test_ray_serve.py":
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server_kind(request) -> str:
    if request.param == "ray" and not os.environ.get("LAMBDA_DECODER_REQUIRE_RAY"):
        pytest.importorskip("ray.serve", reason="ray[serve] is not installed (CI installs it and requires it)")
    return request.param


@pytest.fixture(scope="session")
def ray_serve():
    """A local Ray with Serve (started once; see ray_support.py)."""
    from ray_support import RayServe

    rs = RayServe()
    print(f"\nlocal Ray + Serve started in {rs.started_s:.1f} s")
    yield rs
    rs.close()


@pytest.fixture
def make_client(server_kind, request):
    """make_client(decoder="tiny", **settings) → a client of a server with those settings, of the kind under test.
    Both answer like httpx (TestClient is httpx's)."""
    if server_kind == "local":
        return request.getfixturevalue("make_local_client")
    rs = request.getfixturevalue("ray_serve")
    return lambda decoder="tiny", **settings: rs.client(rs.protocol_app(decoder, **settings))


@pytest.fixture
def client(make_client):
    return make_client()


class GatedDecoder:
    """Stands in for Decoder: each decode blocks until `gate` is set, so queue states can be held. While it
    waits it calls on_step(0) every 10 ms: no progress, but a cancelled job stops there as a real one would."""

    model_id, device, dtype, embed_dim, negative_default_source = "gated-fake", "cpu", "float32", DIM, "zeros"
    size_multiple = 64

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def decode(self, p, on_step=None):
        self.started.release()
        deadline = time.monotonic() + 30
        while not self.gate.wait(0.01):
            assert time.monotonic() < deadline, "test never opened the gate"
            if on_step:
                on_step(0)
        buf = io.BytesIO()
        Image.new("RGB", (p.width, p.height), (10, 20, 30)).save(buf, format="PNG")
        return DecodeResult(buf.getvalue(), FORMATS["png"], p.seed or 0, 1.0, "zeros")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python3 -m lambda_decoder --tiny-random` on a free loopback port, as users run it."""

    def __init__(self, *args: str, startup_timeout: float = 120, env: dict[str, str] | None = None):
        """env: extra LAMBDA_DECODER_* variables (settings a server without that option simply ignores)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.devnull, "w") if os.environ.get("QUIET_SERVER") else None
        cmd = [sys.executable, "-m", "lambda_decoder", "--tiny-random", "--device", "cpu",
               "--port", str(self.port), "--log-level", "warning", *args]
        self.proc = subprocess.Popen(cmd, cwd=SERVER_DIR, stdout=self.log, stderr=self.log, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} during startup")
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not become healthy in {startup_timeout} s")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
        return self.proc.returncode


@pytest.fixture
def server_process():
    """start(*extra_args) → a running ServerProcess, stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        s = ServerProcess(*args, env=env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def info(url: str) -> dict:
    """GET /v1/info of a server on `url`."""
    with urllib.request.urlopen(url + "/v1/info", timeout=10) as r:
        return json.load(r)


def wait_for(condition, timeout: float, what: str) -> float:
    """Polls condition() every 50 ms; returns the seconds it took, fails after `timeout`."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - t0
