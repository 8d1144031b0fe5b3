"""A local Ray with Serve for the tests (started once per session, 127.0.0.1), and the apps the tests talk to.

Each distinct configuration is its own Serve application at its own route prefix (the default one at "/"), kept
for the session: a protocol test that needs a token or a smaller limit gets that app without redeploying the
others. Apps of the protocol suite run CPU replicas of the tiny random decoder, one torch thread each.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import httpx

TESTS_DIR = Path(__file__).resolve().parent
SERVER_DIR = TESTS_DIR.parent
# Logical CPUs Ray schedules: the apps of a session together (their replicas reserve a fraction each); the
# machine's real cores are what they share.
RAY_NUM_CPUS = 8
OBJECT_STORE_MB = 128
MAX_VARIANT_APPS = 2


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayServe:
    def __init__(self):
        import ray
        from ray import serve

        sys.path.insert(0, str(SERVER_DIR))
        from lambda_decoder.serve import start_local_ray

        # Workers import lambda_decoder and the tests' fakes (ray_fakes) by name.
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p)
        t0 = time.monotonic()
        start_local_ray(RAY_NUM_CPUS, OBJECT_STORE_MB, "warning")
        self.port = free_port()
        from lambda_decoder.ray_app import serve_logging

        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": self.port},
                    logging_config=serve_logging("warning"))
        self.started_s = time.monotonic() - t0
        self.ray, self.serve = ray, serve
        self.apps: dict[str, str] = {}  # key → base URL, oldest first
        self.app_names: dict[str, str] = {}
        self.clients: list[httpx.Client] = []

    def deploy(self, name: str, settings, opts, decoder_factory=None, route_prefix: str | None = None) -> str:
        """Deploys (or redeploys) application `name`; returns its base URL once its ingress sees every replica
        ready (or the model failed to load)."""
        from lambda_decoder.ray_app import build_app

        prefix = route_prefix or f"/{name}"
        self.serve.run(build_app(settings, opts, decoder_factory), name=name, route_prefix=prefix)
        url = f"http://127.0.0.1:{self.port}{'' if prefix == '/' else prefix}"
        auth = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # replicas report every 0.5 s, the ingress reads them every 0.25 s
            try:
                status = httpx.get(url + "/v1/health", timeout=10).json().get("status")
                if status == "error":
                    return url
                replicas = httpx.get(url + "/v1/info", headers=auth, timeout=10).json()["replicas"]
                if status == "ok" and sum(r["ready"] for r in replicas) == opts.replicas:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"app {name}: not all {opts.replicas} replicas ready within 60 s")

    def protocol_app(self, decoder="tiny", **settings) -> str:
        """The app for a protocol test: the tiny random decoder (or settings['model']) with these settings; the
        default settings get 2 decoder replicas at "/", others 1 replica at their own prefix."""
        from lambda_decoder.config import Settings
        from lambda_decoder.ray_app import RayOptions

        if decoder not in ("tiny", None):
            raise TypeError("the Ray kind builds its decoders from settings; pass settings, not a decoder object")
        key = repr(sorted(settings.items()))
        if key not in self.apps:
            default = not settings
            name = "protocol" if default else "p" + hashlib.sha256(key.encode()).hexdigest()[:10]
            s = Settings(**{"tiny_random": "model" not in settings, "device": "cpu", "threads": 1,
                            "log_level": "warning", **settings})
            opts = RayOptions(replicas=2 if default else 1, replica_gpus=0, replica_cpus=0.25)
            # A decoder replica holds ~0.9 GB (torch, diffusers): keep the default app and the last variants only.
            variants = [k for k in self.apps if k != repr([])]
            while not default and len(variants) >= MAX_VARIANT_APPS:
                old = variants.pop(0)
                self.serve.delete(self.app_names.pop(old))
                del self.apps[old]
            self.apps[key] = self.deploy(name, s, opts, route_prefix="/" if default else None)
            self.app_names[key] = name
        return self.apps[key]

    def client(self, url: str) -> httpx.Client:
        c = httpx.Client(base_url=url, timeout=120)
        self.clients.append(c)
        return c

    def decoder_replica_actors(self, app: str) -> list:
        """The live Decoder replica actors of an application (for killing one)."""
        names = [a["name"] for a in self.ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith(f"SERVE_REPLICA::{app}#Decoder#")]
        return [self.ray.get_actor(n, namespace="serve") for n in names]

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.serve.shutdown()
        self.ray.shutdown()
