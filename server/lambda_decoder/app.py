"""The HTTP side: FastAPI app with bearer auth, CORS, body limit, bounded decode queue and JSON errors.

Order of checks on POST /v1/decode (cheapest first, nothing queued that will be rejected):
auth (401) → model ready (503) → body size (413) → JSON (400) → fields (422) → queue room (429) → decode.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from . import PROTOCOL_VERSION
from . import config as C
from .decoder import ApiError, Decoder, parse_request

log = logging.getLogger("lambda_decoder")

# Reply headers a browser page may read (CORS hides all but a few by default).
EXPOSED_HEADERS = ["X-Seed", "X-Decode-Ms", "X-Queue-Ms", "X-Negative-Embeds", "Retry-After"]


class DecodeQueue:
    """One decode at a time (one pipeline per device), at most `max_waiting` more waiting; beyond: 429.

    The single-thread executor is what really serialises decodes: even if an awaiting request is cancelled
    its decode finishes before the next starts. The lock only orders the waiters and keeps the counts.
    """

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self.draining = False
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._avg_s: float | None = None  # moving average of decode time, for Retry-After

    @property
    def length(self) -> int:
        return self.running + self.waiting

    @property
    def capacity(self) -> int:
        return 1 + self.max_waiting

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead times the average decode."""
        return max(1, math.ceil((self._avg_s or 1.0) * max(1, self.length)))

    async def run(self, fn, *args):
        if self.draining:
            raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "10"})
        if self.length >= self.capacity:
            raise ApiError(
                429,
                "queue_full",
                f"{self.running} decode running and {self.waiting} waiting (limit {self.max_waiting}); retry later",
                {"Retry-After": str(self.retry_after())},
            )
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        try:
            if self.draining:  # shutdown began while this request waited: only the running decode finishes
                raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "10"})
            self.running += 1
            t0 = time.perf_counter()
            try:
                return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
            finally:
                self.running -= 1
                dt = time.perf_counter() - t0
                self._avg_s = dt if self._avg_s is None else 0.8 * self._avg_s + 0.2 * dt
        finally:
            self._lock.release()

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class State:
    """What the app holds: settings, the decoder (None while loading) and the queue."""

    def __init__(self, settings: C.Settings, decoder: Decoder | None):
        self.settings = settings
        self.decoder = decoder
        self.load_error: str | None = None
        self.queue = DecodeQueue(settings.max_waiting)

    def load(self) -> None:
        try:
            self.decoder = Decoder.load(self.settings)
        except Exception as e:  # reported by /v1/health and every decode, not a crash loop
            log.exception("cannot load the decoder")
            self.load_error = f"{type(e).__name__}: {e}"

    def ready_decoder(self) -> Decoder:
        if self.decoder is not None:
            return self.decoder
        if self.load_error:
            raise ApiError(503, "model_failed", f"the model could not be loaded: {self.load_error}")
        raise ApiError(503, "loading", "the model is still loading", {"Retry-After": "5"})


def error_response(e: ApiError) -> JSONResponse:
    headers = dict(e.headers)
    if e.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def create_app(settings: C.Settings, decoder: Decoder | None = None) -> FastAPI:
    """The app. Without `decoder` the model loads in a background thread at startup (health says 503 until
    then), so the port answers at once even when the real model takes minutes to load."""
    state = State(settings, decoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.decoder is None:
            threading.Thread(target=state.load, name="load-model", daemon=True).start()
        yield
        state.queue.close()

    # The protocol is documented by hand in openapi.yaml; FastAPI's generated schema would describe less.
    app = FastAPI(title="lambda-eclipse decoder", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.lambda_state = state

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, e: ApiError):
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(ApiError(e.status_code, code, str(e.detail), dict(e.headers or {})))

    def check_auth(request: Request) -> None:
        if not settings.token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "unauthorized", "this endpoint requires an Authorization: Bearer token")
        if not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise ApiError(401, "unauthorized", "the token is not valid for this endpoint")

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        too_big = ApiError(413, "body_too_large", f"the body is larger than this server's limit of {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, "invalid_request", "Content-Length is not a number")
            if int(declared) > limit:
                raise too_big
        # Chunked bodies have no Content-Length: count while reading.
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/v1/health")
    async def health():
        if state.queue.draining:
            return JSONResponse({"status": "shutting_down"}, status_code=503)
        if state.decoder is not None:
            return {"status": "ok"}
        if state.load_error:
            return JSONResponse({"status": "error", "message": state.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/v1/info")
    async def info(request: Request):
        check_auth(request)
        d, q = state.decoder, state.queue
        return {
            "protocol": PROTOCOL_VERSION,
            "ready": d is not None,
            "model": d.model_id if d else settings.model,
            "embedding_dim": d.embed_dim if d else None,
            "device": d.device if d else None,
            "dtype": d.dtype if d else None,
            "negative_default": d.negative_default_source if d else None,
            "formats": list(C.FORMATS),
            "defaults": {
                "width": C.DEFAULT_SIDE,
                "height": C.DEFAULT_SIDE,
                "num_inference_steps": C.DEFAULT_STEPS,
                "guidance_scale": C.DEFAULT_GUIDANCE,
                "format": C.DEFAULT_FORMAT,
            },
            "limits": {
                "min_side": C.SIDE_MULTIPLE,
                "side_multiple": C.SIDE_MULTIPLE,
                "max_side": settings.max_side,
                "max_steps": settings.max_steps,
                "max_guidance_scale": C.MAX_GUIDANCE,
                "max_body_bytes": settings.max_body_bytes,
                "max_waiting": settings.max_waiting,
            },
            "queue_length": q.length,
            "queue": {"running": q.running, "waiting": q.waiting, "capacity": q.capacity},
            "auth": bool(settings.token),
        }

    @app.post("/v1/decode")
    async def decode(request: Request):
        check_auth(request)
        decoder = state.ready_decoder()
        raw = await read_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None
        params = parse_request(
            body, embed_dim=decoder.embed_dim, max_side=settings.max_side, max_steps=settings.max_steps
        )
        queued_at = time.perf_counter()
        started: list[float] = []

        def work():
            started.append(time.perf_counter())
            return decoder.decode(params)

        try:
            result = await state.queue.run(work)
        except ApiError:
            raise
        except Exception as e:
            # Caught here, not by a global handler: Starlette sends unhandled errors from outside the CORS
            # middleware, and a browser could then not read the message.
            if type(e).__name__ == "OutOfMemoryError":
                raise ApiError(503, "out_of_memory", "the GPU ran out of memory; try a smaller image", {"Retry-After": "5"}) from e
            log.exception("decode failed")
            raise ApiError(500, "decode_failed", f"the decode failed: {type(e).__name__}: {e}") from e
        queue_ms = ((started[0] if started else queued_at) - queued_at) * 1000
        return Response(
            content=result.image_bytes,
            media_type=result.content_type,
            headers={
                "X-Seed": str(result.seed),
                "X-Decode-Ms": f"{result.decode_ms:.1f}",
                "X-Queue-Ms": f"{queue_ms:.1f}",
                "X-Negative-Embeds": result.negative_source,
                "Cache-Control": "no-store",
            },
        )

    return app
