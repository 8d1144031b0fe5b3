"""The decoder endpoint's protocol (README.md, openapi.yaml) against the tiny random Kandinsky 2.2 decoder."""

from __future__ import annotations

import base64
import io
import json
import math
import signal
import struct
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import DIM, GatedDecoder, embeds, small

SHARED_TINY_DECODER = Path(__file__).resolve().parents[3] / "shared/goldens/kandinsky-tiny/model"


def b64(values) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def error_of(r, status: int, code: str, *needles: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    for n in needles:
        assert n in err["message"], (n, err)
    return err


# --- health, info ---------------------------------------------------------------------------------------------


def test_health_and_info(client):
    assert client.get("/v1/health").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["ready"] is True and info["protocol"] == "1"
    assert info["embedding_dim"] == DIM and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["model"].startswith("tiny-random")
    # The CPU's default caps (a GPU server's are 1024 and 100).
    assert info["limits"]["max_side"] == 512 and info["limits"]["max_steps"] == 50
    # The tiny MoVQ has 2 levels (scale 2): sides are multiples of 2² (the real decoder's: 8² = 64).
    assert info["limits"]["side_multiple"] == 4 and info["limits"]["min_side"] == 4
    assert info["defaults"] == {"width": 512, "height": 512, "num_inference_steps": 50, "guidance_scale": 4.0, "format": "png"}
    # 1 running + 8 waiting per decoder replica (a Ray Serve app lists its replicas; the single process is one).
    replicas = len(info.get("replicas", [None]))
    assert info["queue_length"] == 0 and info["queue"]["capacity"] == 9 * replicas
    assert info["queue"]["estimated_wait_s"] == 0
    assert info["formats"] == ["png", "webp", "jpeg"]
    assert info["negative_default"] == "zeros"


def test_unknown_route_and_method_are_json_errors(client):
    error_of(client.get("/v1/nope"), 404, "not_found")
    error_of(client.get("/v1/decode"), 405, "method_not_allowed")


def test_model_that_fails_to_load_answers_503(make_client):
    c = make_client(decoder=None, model="/nonexistent/decoder-folder")
    for _ in range(600):  # loads in a background thread; the failure comes quickly
        if c.get("/v1/health").json()["status"] != "loading":
            break
        time.sleep(0.05)
    r = c.get("/v1/health")
    assert r.status_code == 503 and r.json()["status"] == "error"
    error_of(c.post("/v1/decode", json=small()), 503, "model_failed", "could not be loaded")


# --- decoding ---------------------------------------------------------------------------------------------


def test_decode_returns_png_of_requested_size(client):
    r = client.post("/v1/decode", json=small(width=128, height=64, seed=5))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (128, 64) and img.mode == "RGB"
    assert r.headers["x-seed"] == "5"
    assert float(r.headers["x-decode-ms"]) > 0
    assert float(r.headers["x-queue-ms"]) >= 0
    assert r.headers["x-negative-embeds"] == "zeros"


def test_same_seed_same_bytes_other_seed_other_bytes(client):
    a = client.post("/v1/decode", json=small(seed=42)).content
    b = client.post("/v1/decode", json=small(seed=42)).content
    c = client.post("/v1/decode", json=small(seed=43)).content
    assert a == b
    assert a != c


def test_server_chosen_seed_is_reported_and_reproducible(client):
    body = small()
    del body["seed"]
    r = client.post("/v1/decode", json=body)
    seed = int(r.headers["x-seed"])
    assert 0 <= seed < 2**53
    again = client.post("/v1/decode", json={**body, "seed": seed})
    assert again.content == r.content


def test_base64_and_list_embeddings_are_the_same_request(client):
    values, negative = embeds(0.3), embeds(-0.05)
    as_list = client.post("/v1/decode", json=small(image_embeds=values, negative_image_embeds=negative))
    as_b64 = client.post("/v1/decode", json=small(image_embeds=b64(values), negative_image_embeds=b64(negative)))
    assert as_list.status_code == as_b64.status_code == 200
    assert as_list.content == as_b64.content
    assert as_list.headers["x-negative-embeds"] == "request"


def test_negative_defaults_to_zeros(client):
    implicit = client.post("/v1/decode", json=small()).content
    explicit = client.post("/v1/decode", json=small(negative_image_embeds=[0.0] * DIM)).content
    assert implicit == explicit


def test_configured_negative_is_the_default(make_client, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    negative = embeds(-0.2)
    path = tmp_path / "embeds.safetensors"  # as `lambda-eclipse prior` writes it: [1, D]
    save_file({"negative_image_embeds": np.asarray([negative], dtype=np.float32)}, str(path))
    c = make_client(negative_embeds=str(path))
    assert c.get("/v1/info").json()["negative_default"] == "configured"
    implicit = c.post("/v1/decode", json=small())
    assert implicit.headers["x-negative-embeds"] == "configured"
    assert implicit.content == c.post("/v1/decode", json=small(negative_image_embeds=negative)).content
    assert implicit.content != c.post("/v1/decode", json=small(negative_image_embeds=[0.0] * DIM)).content


@pytest.mark.parametrize("fmt,ctype,magic", [("webp", "image/webp", b"RIFF"), ("jpeg", "image/jpeg", b"\xff\xd8\xff")])
def test_other_formats(client, fmt, ctype, magic):
    r = client.post("/v1/decode", json=small(format=fmt))
    assert r.status_code == 200 and r.headers["content-type"] == ctype
    assert r.content.startswith(magic)
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)


def test_local_model_folder_loads(make_client):
    """A folder with only unet/ movq/ scheduler/ (no model_index.json) works as --model."""
    c = make_client(model=str(SHARED_TINY_DECODER))
    info = c.get("/v1/info").json()
    assert info["embedding_dim"] == 32 and info["model"] == str(SHARED_TINY_DECODER)
    r = c.post("/v1/decode", json=small())
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (64, 64)


def test_hugging_face_handler(monkeypatch):
    import handler

    h = handler.EndpointHandler(str(SHARED_TINY_DECODER))
    img = h({"inputs": small(width=128)})
    assert img.size == (128, 64)
    # The toolkit's other shape: the embedding as inputs, the rest as parameters.
    params = small()
    img2 = h({"inputs": params.pop("image_embeds"), "parameters": params})
    assert img2.size == (64, 64)
    with pytest.raises(ValueError, match="invalid_size"):
        h({"inputs": small(width=66)})


# --- bad input: every class answered with its status and a message naming the problem -----------------------------


JSON = {"Content-Type": "application/json"}


def test_bad_json_is_400(client):
    error_of(client.post("/v1/decode", content=b"{not json", headers=JSON), 400, "invalid_json", "not valid JSON")
    error_of(client.post("/v1/decode", content=b"\xff\xfe", headers=JSON), 400, "invalid_json", "not UTF-8")
    error_of(client.post("/v1/decode", json=[1, 2]), 400, "invalid_json", "JSON object")


@pytest.mark.parametrize(
    "fields,code,needle",
    [
        ({"image_embeds": embeds()[:-1]}, "invalid_image_embeds", f"expected {DIM} numbers, got {DIM - 1}"),
        ({"image_embeds": embeds() + [0.0]}, "invalid_image_embeds", "got 33"),
        ({"image_embeds": b64(embeds()[:5])}, "invalid_image_embeds", "got 20 bytes"),
        ({"image_embeds": "not base64!"}, "invalid_image_embeds", "base64"),
        ({"image_embeds": embeds()[:-1] + ["x"]}, "invalid_image_embeds", "number"),
        ({"image_embeds": {"a": 1}}, "invalid_image_embeds", "expected a list"),
        ({"image_embeds": b64(embeds()[:-1] + [math.nan])}, "invalid_image_embeds", "element 31 is nan"),
        ({"image_embeds": b64([math.inf] + embeds()[1:])}, "invalid_image_embeds", "element 0 is inf"),
        ({"image_embeds": embeds()[:-1] + [1e39]}, "invalid_image_embeds", "f32 range"),
        ({"negative_image_embeds": [0.0] * 3}, "invalid_negative_image_embeds", "got 3"),
        ({"width": 66}, "invalid_size", "width must be a positive multiple of 4, got 66"),
        ({"height": 0}, "invalid_size", "height must be a positive multiple of 4"),
        ({"width": 64.0}, "invalid_size", "integer"),
        ({"width": 1024}, "invalid_size", "over this server's limit of 512"),
        ({"num_inference_steps": 51}, "invalid_num_inference_steps", "[1, 50], got 51"),
        ({"num_inference_steps": 0}, "invalid_num_inference_steps", "got 0"),
        ({"num_inference_steps": True}, "invalid_num_inference_steps", "got True"),
        ({"guidance_scale": -1}, "invalid_guidance_scale", "[0, 50]"),
        ({"guidance_scale": "4"}, "invalid_guidance_scale", "got '4'"),
        ({"format": "gif"}, "invalid_format", "png, webp, jpeg, got 'gif'"),
        ({"seed": -1}, "invalid_seed", "[0, 2^63-1]"),
        ({"seed": 2**63}, "invalid_seed", "[0, 2^63-1]"),
        ({"steps": 10}, "unknown_field", "steps"),
    ],
)
def test_invalid_fields_are_422(client, fields, code, needle):
    error_of(client.post("/v1/decode", json=small(**fields)), 422, code, needle)


def test_missing_embedding_is_422(client):
    body = small()
    del body["image_embeds"]
    error_of(client.post("/v1/decode", json=body), 422, "invalid_image_embeds", "required")


@pytest.mark.parametrize("literal,shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_non_finite_json_literals_are_422(client, literal, shown):
    # Python's json (like many JSON writers) spells non-finite floats NaN/Infinity; they must not decode.
    values = ", ".join([literal] + [repr(v) for v in embeds()[1:]])
    text = f'{{"image_embeds": [{values}], "width": 64, "height": 64, "num_inference_steps": 2}}'
    error_of(client.post("/v1/decode", content=text.encode(), headers=JSON), 422, "invalid_image_embeds", f"element 0 is {shown}")


def test_body_over_the_limit_is_413(make_client):
    c = make_client(max_body_bytes=2000)
    big = small(image_embeds=[0.123456789] * DIM, padding="x" * 3000)
    error_of(c.post("/v1/decode", json=big), 413, "body_too_large", "2000 bytes")

    # Chunked upload (no Content-Length): counted while read.
    def chunks():
        yield b'{"image_embeds": "'
        for _ in range(10):
            yield b"A" * 400
        yield b'"}'

    error_of(c.post("/v1/decode", content=chunks(), headers=JSON), 413, "body_too_large")
    # Under the limit still works.
    assert c.post("/v1/decode", json=small(image_embeds=b64(embeds()))).status_code == 200


def test_limits_are_configurable(make_client):
    c = make_client(max_side=128, max_steps=3)
    error_of(c.post("/v1/decode", json=small(width=192)), 422, "invalid_size", "limit of 128")
    error_of(c.post("/v1/decode", json=small(num_inference_steps=4)), 422, "invalid_num_inference_steps", "[1, 3]")
    assert c.post("/v1/decode", json=small(width=128, num_inference_steps=3)).status_code == 200


# --- auth -------------------------------------------------------------------------------------------------------


def test_bearer_token(make_client):
    c = make_client(token="s3cret")
    for headers, needle in [({}, "requires"), ({"Authorization": "Bearer wrong"}, "not valid"),
                            ({"Authorization": "Basic czNjcmV0"}, "requires"), ({"Authorization": "Bearer"}, "requires")]:
        r = c.post("/v1/decode", json=small(), headers=headers)
        error_of(r, 401, "unauthorized", needle)
        assert r.headers["www-authenticate"] == "Bearer"
    error_of(c.get("/v1/info"), 401, "unauthorized")
    # Auth is checked before the body is even parsed.
    error_of(c.post("/v1/decode", content=b"{bad"), 401, "unauthorized")
    ok = {"Authorization": "Bearer s3cret"}
    assert c.post("/v1/decode", json=small(), headers=ok).status_code == 200
    assert c.get("/v1/info", headers=ok).json()["auth"] is True
    # Load balancers probe health without a token.
    assert c.get("/v1/health").status_code == 200


# --- CORS -------------------------------------------------------------------------------------------------------


def preflight(c, origin):
    return c.options("/v1/decode", headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    })


def test_cors_preflight_and_exposed_headers(make_client):
    c = make_client(token="t", cors_origins=["https://app.example", "http://127.0.0.1:8080"])
    r = preflight(c, "https://app.example")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()

    other = preflight(c, "https://evil.example")
    assert "access-control-allow-origin" not in other.headers

    # The real request: the page can read the seed and timing, and error messages too.
    auth = {"Authorization": "Bearer t", "Origin": "https://app.example"}
    ok = c.post("/v1/decode", json=small(), headers=auth)
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    exposed = ok.headers["access-control-expose-headers"].lower()
    assert "x-seed" in exposed and "x-decode-ms" in exposed and "retry-after" in exposed
    denied = c.post("/v1/decode", json=small(), headers={"Origin": "https://app.example"})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in c.get("/v1/health", headers={"Origin": "https://evil.example"}).headers


def test_no_cors_origins_means_no_cors_headers(client):
    r = preflight(client, "https://app.example")
    assert "access-control-allow-origin" not in r.headers


# --- queue --------------------------------------------------------------------------------------------------------


def test_queue_full_is_429_with_retry_after(make_local_client):
    """The single process's queue (the Ray app's: test_ray_serve.py)."""
    fake = GatedDecoder()
    c = make_local_client(decoder=fake, max_waiting=1)
    results = {}

    def post(name):
        results[name] = c.post("/v1/decode", json=small(seed=len(results)))

    running = threading.Thread(target=post, args=("running",))
    running.start()
    assert fake.started.acquire(timeout=30)  # the first decode holds the device
    waiting = threading.Thread(target=post, args=("waiting",))
    waiting.start()
    for _ in range(300):
        if c.get("/v1/info").json()["queue"]["waiting"] == 1:
            break
        time.sleep(0.02)
    info = c.get("/v1/info").json()
    counts = {k: info["queue"][k] for k in ("running", "waiting", "capacity")}
    assert counts == {"running": 1, "waiting": 1, "capacity": 2} and info["queue_length"] == 2

    r = c.post("/v1/decode", json=small())
    error_of(r, 429, "queue_full", "1 decode running and 1 waiting")
    assert int(r.headers["retry-after"]) >= 1
    # Invalid requests are still told what is wrong, not that the queue is full.
    error_of(c.post("/v1/decode", json=small(width=100)), 422, "invalid_size")

    fake.gate.set()
    running.join(30)
    waiting.join(30)
    assert results["running"].status_code == 200 and results["waiting"].status_code == 200
    assert c.get("/v1/info").json()["queue_length"] == 0
    assert c.post("/v1/decode", json=small()).status_code == 200


# --- graceful shutdown (real uvicorn process) ---------------------------------------------------------------------------


def _post(url, body, out: dict, key: str):
    req = urllib.request.Request(url + "/v1/decode", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            out[key] = (r.status, r.headers.get("Content-Type"), r.read())
    except urllib.error.HTTPError as e:
        out[key] = (e.code, e.headers.get("Content-Type"), e.read())


def test_sigterm_finishes_the_running_decode(server_process):
    # A grace long enough for the decode below on any CPU: this test is about finishing it, not the bound.
    srv = server_process("--shutdown-grace", "120")
    out: dict = {}
    # Long enough (on a CPU) to be caught running.
    slow = small(width=128, height=128, num_inference_steps=25)
    first = threading.Thread(target=_post, args=(srv.url, slow, out, "running"))
    first.start()
    for _ in range(600):
        info = json.load(urllib.request.urlopen(srv.url + "/v1/info", timeout=5))
        if info["queue"]["running"] == 1:
            break
        time.sleep(0.05)
    assert info["queue"]["running"] == 1, info
    second = threading.Thread(target=_post, args=(srv.url, small(), out, "waiting"))
    second.start()
    for _ in range(200):
        if json.load(urllib.request.urlopen(srv.url + "/v1/info", timeout=5))["queue"]["waiting"] == 1:
            break
        time.sleep(0.05)

    srv.proc.send_signal(signal.SIGTERM)
    first.join(120)
    second.join(120)
    status, ctype, data = out["running"]
    assert status == 200 and ctype == "image/png"
    assert Image.open(io.BytesIO(data)).size == (128, 128)
    status, ctype, data = out["waiting"]
    assert status == 503 and json.loads(data)["error"]["code"] == "shutting_down"
    # uvicorn re-raises the captured signal once shut down, so the exit is the conventional "killed by
    # SIGTERM" (-15), reached only after the running decode was sent.
    assert srv.proc.wait(60) in (0, -signal.SIGTERM)


# --- the documents match the code -------------------------------------------------------------------------------


def test_openapi_documents_every_path_and_error_code():
    import re

    import yaml

    server = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((server / "openapi.yaml").read_text())
    assert spec["openapi"].startswith("3.") and set(spec["paths"]) == {"/v1/decode", "/v1/health", "/v1/info"}
    documented = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["description"]
    readme = (server / "README.md").read_text()
    source = "".join(p.read_text() for p in sorted((server / "lambda_decoder").glob("*.py")))
    codes = set(re.findall(r'ApiError\(\s*\d+,\s*"(\w+)"', source))
    codes |= {"invalid_" + f for f in re.findall(r'_invalid\(\s*"(\w+)"', source)}
    codes |= {"not_found", "method_not_allowed"}
    assert len(codes) > 15
    for code in codes:
        assert code in documented, f"{code} missing from openapi.yaml"
        assert code in readme, f"{code} missing from README.md"
    props = spec["components"]["schemas"]["DecodeRequest"]["properties"]
    from lambda_decoder.validation import FIELDS

    assert set(props) == FIELDS
