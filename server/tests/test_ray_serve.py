"""The Ray Serve app (lambda_decoder/ray_app.py) beyond the protocol suite (which runs against it too, see
conftest.py's server kinds): saturation → 429 + Retry-After, two replicas serving a burst faster than one, a
replica killed mid-burst, the command line, and the deployment files.

A local Ray on 127.0.0.1 (ray_support.py), CPU replicas of the tiny random decoder with one torch thread each.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import ray_fakes
from conftest import SERVER_DIR, free_port, info, small, wait_for

if not os.environ.get("LAMBDA_DECODER_REQUIRE_RAY"):  # CI sets it: there a missing ray fails instead
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed")
import ray  # noqa: E402

from lambda_decoder.config import Settings  # noqa: E402
from lambda_decoder.ray_app import RayOptions  # noqa: E402

TINY = dict(tiny_random=True, device="cpu", threads=1, log_level="warning")


def post(url: str, body: dict, timeout: float = 120) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url + "/v1/decode", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --- saturation --------------------------------------------------------------------------------------------------


def test_saturated_replicas_answer_429_with_retry_after(ray_serve, tmp_path):
    """2 replicas × (1 running + 1 waiting) hold 4 requests; the 5th is told 429 at once, with Retry-After."""
    gate = tmp_path / "open"
    url = ray_serve.deploy("gated", Settings(**TINY, max_waiting=1), RayOptions(replicas=2, replica_gpus=0, replica_cpus=0.25),
                           decoder_factory=functools.partial(ray_fakes.file_gated, str(gate)))
    out: dict[int, tuple] = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, post(url, small(seed=i)))) for i in range(4)]
    for t in threads:
        t.start()
    held = lambda: (lambda q: (q["running"], q["waiting"]))(info(url)["queue"])
    wait_for(lambda: held() == (2, 2), 30, "both replicas decoding one request and holding one more")
    i = info(url)
    assert i["queue"]["capacity"] == 4 and i["queue_length"] == 4
    assert [(r["running"], r["waiting"]) for r in i["replicas"]] == [(1, 1), (1, 1)], i["replicas"]

    status, headers, body = post(url, small(seed=9))
    assert status == 429, (status, body)
    err = json.loads(body)["error"]
    assert err["code"] == "queue_full" and "all 2 decoder replicas are full" in err["message"], err
    assert int(headers["retry-after"]) >= 1
    # An invalid request is still told what is wrong, not that the replicas are busy.
    status, _, body = post(url, small(width=66))
    assert status == 422 and json.loads(body)["error"]["code"] == "invalid_size"

    gate.touch()
    for t in threads:
        t.join(60)
    assert sorted(s for s, _, _ in out.values()) == [200] * 4, out
    assert len({h["x-replica"] for _, h, _ in out.values()}) == 2  # both replicas served
    wait_for(lambda: info(url)["queue_length"] == 0, 10, "the queues emptied")
    assert post(url, small(seed=10))[0] == 200


# --- a burst: two replicas against one ------------------------------------------------------------------------------

BURST_REQUESTS = 100
BURST_CONCURRENCY = 20
# Each request is 8 steps of 40 ms device time (ray_fakes.DeviceTimedDecoder: a GPU replica as the host sees it).
# CPU-bound tiny decoders cannot show scaling on a 2-core machine: there the ratio is 2d/(d + o), with o the CPU
# that Serve's proxy, ingress, controller and raylet take beside the decodes, and measured on an idle 2-core
# machine it stayed at 1.27-1.54 for d from 0.3 s to 1.5 s (it reached 1.7 only under other load, which the
# replicas' processes out-competed). With device time, one replica serves at most 1/0.32 s and two at twice that.
BURST_BODY = dict(width=64, height=64, num_inference_steps=8)
BURST_STEP_S = 0.04
MAX_RETRY_SLEEP_S = 2.0


def burst(url: str, first_seed: int) -> dict:
    """BURST_REQUESTS at BURST_CONCURRENCY; a 429 is honoured (Retry-After, capped) and retried. Returns the final
    statuses, the replicas that served, throughput and latency."""

    def one(i: int):
        t0 = time.perf_counter()
        while True:
            status, headers, body = post(url, small(seed=first_seed + i, **BURST_BODY))
            if status != 429:
                return status, headers.get("x-replica"), time.perf_counter() - t0, body[:200]
            time.sleep(min(MAX_RETRY_SLEEP_S, int(headers["retry-after"])))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(BURST_CONCURRENCY) as pool:
        answers = list(pool.map(one, range(BURST_REQUESTS)))
    wall = time.perf_counter() - t0
    latencies = sorted(s for status, _, s, _ in answers if status == 200)
    pct = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) if latencies else None
    return {
        "statuses": dict(Counter(status for status, _, _, _ in answers)),
        "replicas": dict(Counter(r for status, r, _, _ in answers if status == 200)),
        "problems": [(status, body) for status, _, _, body in answers if status != 200][:5],
        "wall_s": round(wall, 2),
        "decodes_per_s": round(len(latencies) / wall, 2),
        "p50_s": pct(0.50),
        "p99_s": pct(0.99),
    }


def test_two_replicas_serve_a_burst_faster_than_one(ray_serve):
    """100 requests at concurrency 20 against 1 and against 2 replicas (device-timed, see BURST_STEP_S), interleaved (1, 2, 2, 1) so that a
    change in the machine's other load weighs on both alike. Queues long enough for the whole concurrency
    (max_waiting 20): this compares decode throughput, not 429 policy."""
    settings = Settings(**TINY, max_waiting=BURST_CONCURRENCY)
    timed = functools.partial(ray_fakes.device_timed, BURST_STEP_S)
    one = ray_serve.deploy("one", settings, RayOptions(replicas=1, replica_gpus=0, replica_cpus=0.5), decoder_factory=timed)
    two = ray_serve.deploy("two", settings, RayOptions(replicas=2, replica_gpus=0, replica_cpus=0.5), decoder_factory=timed)
    for url in (one, two):  # warm-up: first-decode allocations, the ingress's handle
        for i in range(4):
            assert post(url, small(seed=i, **BURST_BODY))[0] == 200
    runs = {"one": [], "two": []}
    for name, url in (("one", one), ("two", two), ("two", two), ("one", one)):
        r = burst(url, first_seed=1000 * len(runs[name]))
        print(f"\n{name} replica(s): {json.dumps(r)}")
        runs[name].append(r)
    for r in runs["one"] + runs["two"]:
        assert r["statuses"] == {200: BURST_REQUESTS}, r  # no 5xx, no request lost
    for r in runs["two"]:
        assert len(r["replicas"]) == 2 and min(r["replicas"].values()) >= BURST_REQUESTS // 4, r["replicas"]
    rate = {k: sum(r["decodes_per_s"] for r in v) / len(v) for k, v in runs.items()}
    ratio = rate["two"] / rate["one"]
    print(f"throughput: 1 replica {rate['one']:.2f}/s, 2 replicas {rate['two']:.2f}/s, ratio {ratio:.2f}")
    assert ratio >= 1.6, (ratio, runs)
    ray_serve.serve.delete("one")
    ray_serve.serve.delete("two")


# --- a replica killed mid-burst --------------------------------------------------------------------------------------


def test_killed_replica_is_replaced_and_no_request_is_lost(ray_serve):
    """A decoder replica is killed (ray.kill, as an OOM kill or a lost node would) while both hold requests:
    every request still ends 200 (sent again to the other replica, same seed) or a clear 503; Serve starts a
    replacement that serves again."""
    url = ray_serve.deploy("kill", Settings(**TINY), RayOptions(replicas=2, replica_gpus=0, replica_cpus=0.25))
    before = {r["id"] for r in info(url)["replicas"]}
    assert len(before) == 2
    answers: list = []
    done = threading.Event()

    def one(i: int):
        while True:  # a 429 (the survivor alone holds 9) is honoured and retried, as a client would
            status, headers, body = post(url, small(seed=i, num_inference_steps=4))
            if status != 429:
                break
            time.sleep(min(MAX_RETRY_SLEEP_S, int(headers["retry-after"])))
        answers.append((status, headers.get("x-replica"), headers.get("x-seed"), body))

    with ThreadPoolExecutor(8) as pool:  # 8 at a time: within what even one replica holds (9)
        futures = [pool.submit(one, i) for i in range(60)]
        wait_for(lambda: len(answers) >= 10 and info(url)["queue"]["waiting"] >= 2, 60, "both replicas busy")
        victim = ray_serve.decoder_replica_actors("kill")[0]
        ray.kill(victim, no_restart=True)
        killed_at = time.monotonic()
        for f in futures:
            f.result(timeout=300)
    statuses = Counter(status for status, _, _, _ in answers)
    print(f"\nkilled a replica mid-burst: statuses {dict(statuses)}, "
          f"{info(url)['retried_after_lost_replica']} request(s) sent again to the other replica")
    assert set(statuses) <= {200, 503}, statuses
    for status, _, _, body in answers:
        if status == 503:
            assert json.loads(body)["error"]["code"] == "replica_unavailable", body
    assert statuses[200] >= 50, statuses
    # The killed replica held requests: they were sent again, and kept their seed.
    assert info(url)["retried_after_lost_replica"] >= 1
    for status, _, seed, _ in answers:
        assert status != 200 or seed is not None
    # Serve replaces it.
    replaced = wait_for(lambda: len([r for r in info(url)["replicas"] if r["ready"]]) == 2
                        and {r["id"] for r in info(url)["replicas"]} != before, 120, "a replacement replica")
    print(f"replacement replica serving {time.monotonic() - killed_at:.1f} s after the kill ({replaced:.1f} s after the burst)")
    new = {r["id"] for r in info(url)["replicas"]} - before
    served = {post(url, small(seed=100 + i))[1].get("x-replica") for i in range(12)}
    assert served & new, (served, new)
    ray_serve.serve.delete("kill")


# --- autoscaling -----------------------------------------------------------------------------------------------------


def test_autoscaling_adds_a_replica_when_requests_pile_up(ray_serve):
    """min 1, max 2 replicas, target 1 ongoing request per replica: 6 requests kept in flight on one replica make
    Serve start a second, which then serves (and the ingress admits what both hold)."""
    url = ray_serve.deploy("autoscale", Settings(**TINY), RayOptions(
        min_replicas=1, max_replicas=2, target_ongoing_requests=1, upscale_delay_s=0, downscale_delay_s=600,
        replica_gpus=0, replica_cpus=0.25))
    assert len(info(url)["replicas"]) == 1
    served: list = []
    stop = threading.Event()

    def client(k: int):
        i = 0
        while not stop.is_set():
            status, headers, _ = post(url, small(seed=1000 * k + i, num_inference_steps=4))
            assert status == 200, status
            served.append(headers["x-replica"])
            i += 1

    t0 = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(client, k) for k in range(6)]
        try:
            wait_for(lambda: sum(r["ready"] for r in info(url)["replicas"]) == 2, 120, "a second replica")
            scaled_after = time.monotonic() - t0
            before = len(served)
            wait_for(lambda: len(set(served[before:])) == 2, 30, "both replicas serving")
        finally:
            stop.set()
        for c in clients:
            c.result(timeout=120)
    i = info(url)
    print(f"\nautoscaling: 2nd replica ready {scaled_after:.1f} s into the load; {len(served)} decodes, capacity now "
          f"{i['queue']['capacity']}")
    assert i["queue"]["capacity"] == 18
    ray_serve.serve.delete("autoscale")


def test_ray_options_are_checked():
    for bad, needle in [(dict(replicas=0), "replicas"), (dict(min_replicas=1), "both"),
                        (dict(min_replicas=0, max_replicas=2), "1 <= min_replicas"),
                        (dict(min_replicas=3, max_replicas=2), "1 <= min_replicas"),
                        (dict(target_ongoing_requests=0), "target"), (dict(ingress_replicas=0), "ingress")]:
        with pytest.raises(ValueError, match=needle):
            RayOptions(**bad).validate()


# --- the command line --------------------------------------------------------------------------------------------------


def test_command_line_starts_a_local_ray_and_stops_on_sigterm(tmp_path):
    """`python3 -m lambda_decoder.serve --replicas 2 ...`: its own local Ray (no dashboard), serving /v1 from two
    replicas; SIGTERM stops Serve and Ray."""
    port = free_port()
    cmd = [sys.executable, "-m", "lambda_decoder.serve", "--replicas", "2", "--tiny-random", "--device", "cpu",
           "--replica-cpus", "0.5", "--num-cpus", "1", "--port", str(port), "--log-level", "warning"]
    # Its output goes to a file, so that a failed start says why (the last lines are in the assertion).
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=SERVER_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def output_tail() -> str:
        log.flush()
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])

    try:
        def both_replicas_ready():
            assert proc.poll() is None, f"exited with {proc.returncode}; its output ended:\n{output_tail()}"
            try:
                replicas = info(url)["replicas"]
            except OSError:
                return False
            return len(replicas) == 2 and all(r["ready"] for r in replicas)

        started = wait_for(both_replicas_ready, 180, "the Ray Serve app with two replicas")
        print(f"\nlambda_decoder.serve: 2 replicas ready after {started:.1f} s")
        i = info(url)
        assert i["ready"] and i["queue"]["capacity"] == 18
        assert json.load(urllib.request.urlopen(url + "/v1/health", timeout=5)) == {"status": "ok"}
        status, headers, _ = post(url, small())
        assert status == 200 and headers["x-replica"] in {r["id"] for r in i["replicas"]}
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(90) == 0, f"exited with {proc.returncode}; its output ended:\n{output_tail()}"
        print(f"stopped {time.monotonic() - t0:.1f} s after SIGTERM")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# --- the deployment files ------------------------------------------------------------------------------------------------


def test_serve_config_and_rayservice_manifest_build_the_same_application():
    """serve_config.yaml (`serve deploy`) and the KubeRay RayService example name the app builder with arguments
    it accepts, and the manifest's GPU replicas each get a GPU that its worker group provides."""
    from lambda_decoder import ray_app

    config = yaml.safe_load((SERVER_DIR / "serve_config.yaml").read_text())
    manifest = yaml.safe_load((SERVER_DIR / "ray/rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    in_manifest = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    for cfg in (config, in_manifest):
        (app,) = cfg["applications"]
        assert app["import_path"] == "lambda_decoder.ray_app:app_builder" and app["route_prefix"] == "/"
        built = ray_app.app_builder(app["args"])  # validates every argument; raises on an unknown one
        assert built is not None
        assert app["args"]["replica_gpus"] == 1
    assert in_manifest["applications"][0]["args"] == config["applications"][0]["args"]
    (workers,) = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpus = int(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus >= 1 and workers["maxReplicas"] * gpus >= config["applications"][0]["args"]["max_replicas"]
    with pytest.raises(ValueError, match="unknown argument"):
        ray_app.app_builder({"replicas": 2, "max_wating": 3})


def test_a_local_ray_that_times_out_at_startup_is_started_once_more_and_other_errors_are_raised(monkeypatch, capsys):
    """Ray waits a fixed 30 s for its raylet; on a busy machine that start can time out. start_local_ray tries
    once more (saying so); any other error, or a second timeout, reaches the caller."""
    from lambda_decoder import serve

    calls = []

    def flaky_init(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", flaky_init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    serve.start_local_ray(1, 64)
    assert len(calls) == 3 and calls[1] == "shutdown" and calls[2]["num_cpus"] == 1
    assert "starting it once more" in capsys.readouterr().err

    def always_times_out(**kwargs):
        raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", always_times_out)
    with pytest.raises(Exception, match="timed out during startup"):
        serve.start_local_ray(1, 64)

    def other_error(**kwargs):
        raise ValueError("object store too small")

    monkeypatch.setattr(ray, "init", other_error)
    with pytest.raises(ValueError, match="object store too small"):
        serve.start_local_ray(1, 64)
