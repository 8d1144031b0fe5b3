"""The HTTP side: FastAPI app with bearer auth, CORS, body limit, bounded decode queue and JSON errors.

Order of checks on POST /v1/decode (cheapest first, nothing queued that will be rejected):
auth (401) → Content-Type (415) → model ready (503) → body size and time (413, 408) → JSON (400) → fields (422)
→ queue room (429) → decode, cancelled between steps if the client goes away.

The app is the same for every way of running the decoder: what runs the decode is a backend. `LocalBackend` (here)
holds the pipeline and its queue in this process (`python3 -m lambda_decoder`); `ray_app.RayBackend` sends each
decode to one of N decoder replicas of a Ray Serve deployment (`python3 -m lambda_decoder.serve`). Auth, CORS,
body limits, validation, errors and /v1/info are this module's, for both.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from . import PROTOCOL_VERSION
from . import config as C
from .decode_queue import DecodeCancelled, DecodeQueue, Job, shutting_down
from .decoder import Decoder, DecodeResult
from .validation import ApiError, DecodeParams, RequestLimits, check_content_type, one_line, parse_json, parse_request

log = logging.getLogger("lambda_decoder")

# Reply headers a browser page may read (CORS hides all but a few by default).
EXPOSED_HEADERS = ["X-Seed", "X-Decode-Ms", "X-Queue-Ms", "X-Negative-Embeds", "X-Replica", "Retry-After"]
# Logged, never sent: the client closed its connection (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499


@dataclass
class Decoded:
    """A finished decode as a backend hands it to the app: the image, the time it waited for a device, and extra
    reply headers (X-Replica from the Ray backend)."""

    result: DecodeResult
    queue_ms: float
    headers: dict[str, str]


class LocalBackend:
    """The decoder in this process: settings, the decoder (None while loading) and its limits, and the queue.
    A Ray Serve decoder replica (ray_app.DecoderReplica) holds one of these too.

    The backend interface the app uses: `ready()`, `health()`, `model`, `limits`, `queue_info()`, `extra_info()`,
    `decode(params, job)`, `start(loop)`, `stop()`."""

    def __init__(self, settings: C.Settings, decoder: Decoder | None):
        self.settings = settings
        self.decoder: Decoder | None = None
        self.limits: RequestLimits | None = None
        self.load_error: str | None = None
        self.queue = DecodeQueue(settings.max_waiting)
        self.loop: asyncio.AbstractEventLoop | None = None
        if decoder is not None:
            self._use(decoder)

    def _use(self, decoder) -> None:
        self.limits = C.resolve_limits(
            self.settings, device=decoder.device, embed_dim=decoder.embed_dim, side_multiple=decoder.size_multiple
        )
        self.decoder = decoder

    def load(self) -> None:
        try:
            self._use(Decoder.load(self.settings))
        except Exception as e:  # reported by /v1/health and every decode, not a crash loop
            log.exception("cannot load the decoder")
            self.load_error = f"{type(e).__name__}: {e}"

    # --- the backend interface --------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """At app startup: without a decoder the model loads in a background thread (health says 503 until then),
        so the port answers at once even when the real model takes minutes to load."""
        self.loop = loop
        if self.decoder is None and self.load_error is None:
            threading.Thread(target=self.load, name="load-model", daemon=True).start()

    def stop(self) -> None:
        self.queue.close()

    @property
    def model(self):
        """The loaded decoder's description (model_id, embed_dim, device, dtype, negative_default_source), or None."""
        return self.decoder

    def ready(self) -> tuple[Decoder, RequestLimits]:
        if self.decoder is not None and self.limits is not None:
            return self.decoder, self.limits
        if self.load_error:
            raise ApiError(503, "model_failed", f"the model could not be loaded: {self.load_error}")
        raise ApiError(503, "loading", "the model is still loading", {"Retry-After": "5"})

    def health(self) -> tuple[int, dict, dict[str, str]]:
        if self.queue.draining:
            return 503, {"status": "shutting_down"}, {}
        if self.decoder is not None:
            return 200, {"status": "ok"}, {}
        if self.load_error:
            return 503, {"status": "error", "message": self.load_error}, {}
        return 503, {"status": "loading"}, {"Retry-After": "5"}

    def queue_info(self) -> dict:
        q = self.queue
        return {
            "running": q.running,
            "waiting": q.waiting,
            "capacity": q.capacity,
            "estimated_wait_s": round(q.estimated_wait_s(), 3),
            "seconds_per_megapixel_step": q.model.seconds_per_megapixel_step,
        }

    def extra_info(self) -> dict:
        return {}

    async def decode(self, params: DecodeParams, job: Job) -> Decoded:
        """Waits for the device, decodes, stops between steps once `job` is cancelled (DecodeCancelled)."""
        decoder, _ = self.ready()
        queued_at = self.queue.clock()
        result = await self.queue.run(job, lambda: decoder.decode(params, job.step_done))
        return Decoded(result, ((job.started_at or queued_at) - queued_at) * 1000, {})

    def begin_shutdown(self) -> None:
        """SIGTERM/SIGINT (called from the signal handler): waiting requests get 503 now, the running decode
        `shutdown_grace` seconds to finish."""
        if self.loop is None or self.loop.is_closed():
            self.queue.draining = True
            return
        self.loop.call_soon_threadsafe(self.queue.drain, self.settings.shutdown_grace)


class ErrorJSONResponse(JSONResponse):
    """ASCII JSON: a message quoting a hostile value (a lone surrogate, say) can always be encoded."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(e: ApiError) -> JSONResponse:
    headers = dict(e.headers)
    if e.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return ErrorJSONResponse(e.body(), status_code=e.status, headers=headers)


class CatchAll:
    """Turns any exception nothing else handled into the documented JSON 500 `decode_failed`. It sits inside the
    CORS middleware, so that reply carries the CORS headers too: Starlette's own handler for unexpected errors sits
    outside every middleware and answers text/plain, which a browser page cannot even read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for an error reply; uvicorn closes the connection
                raise
            try:
                message = one_line(str(e)) or "no message"
            except Exception:  # an exception whose __str__ fails
                message = "no message"
            await error_response(ApiError(500, "decode_failed", f"unexpected error: {type(e).__name__}: {message}"))(
                scope, receive, send
            )


def create_app(settings: C.Settings, decoder: Decoder | None = None, *, backend=None) -> FastAPI:
    """The app. `backend` runs the decodes (default: a LocalBackend around `decoder`; without `decoder` the model
    loads in a background thread at startup, health saying 503 until then)."""
    state = backend if backend is not None else LocalBackend(settings, decoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start(asyncio.get_running_loop())
        yield
        state.stop()

    # The protocol is documented by hand in openapi.yaml; FastAPI's generated schema would describe less.
    app = FastAPI(title="lambda-eclipse decoder", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.lambda_state = state

    # Added first, so it runs inside CORS (Starlette: the last added middleware is the outermost).
    app.add_middleware(CatchAll)
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
        try:
            async with asyncio.timeout(settings.body_timeout):  # nginx's client_body_timeout, for the whole body
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise too_big
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(
                408,
                "request_timeout",
                f"the body did not arrive within {settings.body_timeout:g} s ({size} bytes received)",
                {"Connection": "close"},
            ) from None
        except ClientDisconnect:  # nobody will read the reply
            raise ApiError(400, "invalid_request", "the client closed the connection before the body was complete") from None
        return b"".join(chunks)

    async def wait_for_disconnect(request: Request) -> None:
        """Returns when the client has gone (the body has been read: the only message left is the disconnect)."""
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def run_while_connected(request: Request, job: Job, decoding):
        """Awaits the backend's decode; if the client disconnects first, cancels the job: a waiting job leaves the
        queue at once, a running one stops at its next step."""
        work = asyncio.ensure_future(decoding)
        gone = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                job.cancel(DecodeCancelled.CLIENT_GONE)
            return await work
        except asyncio.CancelledError:  # this request's task was cancelled (shutdown timeout): stop the decode too
            work.cancel()
            raise
        finally:
            gone.cancel()

    @app.get("/v1/health")
    async def health():
        status, body, headers = state.health()
        return JSONResponse(body, status_code=status, headers=headers)

    @app.get("/v1/info")
    async def info(request: Request):
        check_auth(request)
        d, lim = state.model, state.limits
        queue = state.queue_info()
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
            # Model- and device-dependent values are null until the model is loaded.
            "limits": {
                "min_side": lim.min_side if lim else None,
                "side_multiple": lim.side_multiple if lim else None,
                "max_side": lim.max_side if lim else settings.max_side,
                "max_steps": lim.max_steps if lim else settings.max_steps,
                "max_guidance_scale": C.MAX_GUIDANCE,
                "max_body_bytes": settings.max_body_bytes,
                "max_waiting": settings.max_waiting,
                "max_connections": settings.max_connections,
                "header_timeout_s": settings.header_timeout,
                "body_timeout_s": settings.body_timeout,
                "shutdown_grace_s": settings.shutdown_grace,
            },
            "queue_length": queue["running"] + queue["waiting"],
            "queue": queue,
            "auth": bool(settings.token),
            **state.extra_info(),
        }

    @app.post("/v1/decode")
    async def decode(request: Request):
        check_auth(request)
        check_content_type(request.headers.get("content-type"))
        _, limits = state.ready()
        params = parse_request(parse_json(await read_body(request)), limits)
        job = Job(params.work, params.num_inference_steps)
        try:
            decoded = await run_while_connected(request, job, state.decode(params, job))
        except DecodeCancelled as e:
            if e.reason == DecodeCancelled.SHUTDOWN:
                raise shutting_down() from None
            log.info("client gone: decode cancelled after %d of %d steps", e.steps_done, job.steps)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except ApiError:
            raise
        except Exception as e:
            # Caught here to say what failed; anything else unexpected is CatchAll's.
            if type(e).__name__ == "OutOfMemoryError":
                raise ApiError(503, "out_of_memory", "the GPU ran out of memory; try a smaller image", {"Retry-After": "5"}) from e
            log.exception("decode failed")
            raise ApiError(500, "decode_failed", f"the decode failed: {type(e).__name__}: {one_line(str(e))}") from e
        result = decoded.result
        return Response(
            content=result.image_bytes,
            media_type=result.content_type,
            headers={
                "X-Seed": str(result.seed),
                "X-Decode-Ms": f"{result.decode_ms:.1f}",
                "X-Queue-Ms": f"{decoded.queue_ms:.1f}",
                "X-Negative-Embeds": result.negative_source,
                "Cache-Control": "no-store",
                **decoded.headers,
            },
        )

    return app
