"""The decoder endpoint on Ray Serve: the same /v1 app (app.create_app) in front of N decoder replicas.

    HTTP ─► Serve proxy ─► Ingress (the FastAPI app of app.py; auth, CORS, body limits, validation, errors)
                              │  RayBackend: admission (429), a seed for every request, retries on a lost replica
                              ▼
                           DecoderReplica × N (one per GPU): a LocalBackend, i.e. the pipeline and the same
                           DecodeQueue as the single-process server: one decode at a time, max_waiting waiting,
                           cancellation between steps.

Bounded queues. A replica holds 1 running + `max_waiting` waiting decodes, and Serve never sends it more
(`max_ongoing_requests` = 1 + max_waiting). The ingress admits at most what the live replicas hold (their sum,
divided among the ingress replicas); one more request is answered 429 + Retry-After at once, before it reaches a
replica. Serve's own caller-side queue (`max_queued_requests`) stays unbounded: every request passes through it
on its way to a replica, and a bound there rejects bursts while replicas still have room (see Serve's router).

Replica state. Each replica reports its queue (running, waiting, estimated wait) and its model to a small named
actor, the QueueBoard, every REPLICA_HEARTBEAT_S; the ingress reads it every VIEW_REFRESH_S. A replica that stops
reporting (killed, its node gone) drops out after REPLICA_STALE_S. The board gives /v1/info and /v1/health their
numbers, the admission its replica count and Retry-After its estimate.

Cancellation. A client that disconnects has its request cancelled: Serve's proxy cancels the ingress's request,
which cancels the call to the replica (`DeploymentResponse.cancel`): a request still queued in Serve's router is
dropped before it reaches a replica, one waiting in a replica's queue leaves it, a running decode stops after its
current step (the DecodeQueue's Job, as in the single-process server).

Lost replicas. A call whose replica dies (killed, OOM-killed, node lost) is sent again, with the same seed, to
another replica (up to RETRIES_AFTER_LOST_REPLICA times); after that the client gets 503 `replica_unavailable`.
Serve starts a replacement replica meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass

import ray
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, RequestCancelledError

from . import config as C
from .app import Decoded, LocalBackend, create_app
from .decode_queue import DecodeCancelled, Job
from .decoder import DecodeResult
from .validation import ApiError, DecodeParams, RequestLimits

log = logging.getLogger("lambda_decoder")

APP_NAME = "lambda-decoder"
REPLICA_HEARTBEAT_S = 0.5
REPLICA_STALE_S = 3.0
VIEW_REFRESH_S = 0.25
RETRIES_AFTER_LOST_REPLICA = 2
# A lost replica's request is sent again; if Serve has no room for it at once (BackPressureError, only when
# max_queued_requests was set), it tries again for this long before answering 503.
LOST_REPLICA_RETRY_WINDOW_S = 30.0


@dataclass
class RayOptions:
    """How the decoder deployment is laid out (the rest is Settings, shared with the single-process server)."""

    replicas: int = 1  # fixed number of decoder replicas, unless min/max_replicas ask for autoscaling
    min_replicas: int | None = None
    max_replicas: int | None = None
    # Autoscaling target: ongoing requests (running + waiting) per replica. 2 = one decoding, one ready to start.
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 120.0
    # GPUs per decoder replica: None = 1 when the cluster has GPUs, else 0 (CPU replicas).
    replica_gpus: float | None = None
    replica_cpus: float = 1.0
    ingress_replicas: int = 1

    def validate(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {self.replicas}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("autoscaling needs both min_replicas and max_replicas")
        # No scaling to zero: a cold start loads the model (minutes for the real one), and the ingress admits only
        # what running replicas hold, so with none it could only answer 503 `loading`.
        if self.autoscaling and not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {self.min_replicas} and {self.max_replicas}")
        if not self.target_ongoing_requests > 0:
            raise ValueError("target_ongoing_requests must be more than 0")
        if self.ingress_replicas < 1:
            raise ValueError("ingress_replicas must be at least 1")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None


# ---------------------------------------------------------------------------------------------------------------
# The board: where replicas say how busy they are


@dataclass(frozen=True)
class ModelInfo:
    """What the ingress needs to know about the replicas' model (app.create_app's `backend.model`)."""

    model_id: str
    embed_dim: int
    device: str
    dtype: str
    negative_default_source: str
    size_multiple: int


class QueueBoard:
    """Latest report of every decoder replica of one application (a named actor, no CPU)."""

    def __init__(self):
        self._reports: dict[str, tuple[float, dict]] = {}

    def report(self, replica: str, snapshot: dict) -> None:
        self._reports[replica] = (time.monotonic(), snapshot)

    def forget(self, replica: str) -> None:
        self._reports.pop(replica, None)

    def read(self, deploy_id: str, max_age_s: float) -> list[dict]:
        now = time.monotonic()
        for replica, (at, _) in list(self._reports.items()):
            if now - at > max_age_s:
                del self._reports[replica]
        return sorted((s for _, s in self._reports.values() if s["deploy_id"] == deploy_id), key=lambda s: s["replica"])


def queue_board(app_name: str):
    """The application's board, created by whoever asks first (detached: it outlives any one replica)."""
    return (
        ray.remote(QueueBoard)
        .options(name=f"queue_board:{app_name}", namespace="lambda_decoder", get_if_exists=True,
                 lifetime="detached", num_cpus=0)
        .remote()
    )


# ---------------------------------------------------------------------------------------------------------------
# Decoder replicas


@dataclass
class ReplicaReply:
    result: DecodeResult
    queue_ms: float  # waited in the replica's queue
    replica: str


class DecoderReplica:
    """One decoder (one GPU): the single-process server's LocalBackend, called by the ingress through Serve."""

    async def __init__(self, settings: C.Settings, deploy_id: str, decoder_factory=None):
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.deploy_id = deploy_id
        self.backend = LocalBackend(settings, decoder_factory() if decoder_factory else None)
        self.backend.loop = asyncio.get_running_loop()
        if self.backend.decoder is None:
            # Loaded before the constructor returns, so Serve routes nothing here before the model is in. A failure
            # is reported (health "error", decodes 503 model_failed) rather than retried in a crash loop.
            await asyncio.to_thread(self.backend.load)
        self.board = queue_board(context.app_name)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    def snapshot(self) -> dict:
        b, d = self.backend, self.backend.decoder
        status, _, _ = b.health()
        model = None
        if d is not None:
            model = ModelInfo(d.model_id, d.embed_dim, d.device, d.dtype, d.negative_default_source, d.size_multiple)
        return {"deploy_id": self.deploy_id, "replica": self.replica, "ok": status == 200, "load_error": b.load_error,
                "model": model, **b.queue_info()}

    async def _beat(self) -> None:
        while True:
            try:
                self.board.report.remote(self.replica, self.snapshot())
            except Exception:  # the board is being replaced: the next beat finds it again
                log.warning("cannot report to the queue board", exc_info=True)
                self.board = queue_board(serve.get_replica_context().app_name)
            await asyncio.sleep(REPLICA_HEARTBEAT_S)

    async def decode(self, params: DecodeParams) -> ReplicaReply:
        """Waits in this replica's queue and decodes. When Serve cancels the call (the client went away), the
        awaiting below is cancelled: a waiting job leaves the queue, a running one stops after its current step."""
        job = Job(params.work, params.num_inference_steps)
        decoded = await self.backend.decode(params, job)
        return ReplicaReply(decoded.result, decoded.queue_ms, self.replica)

    def __del__(self):
        # Serve calls this on a graceful shutdown (scale-down, redeploy): leave the board at once.
        try:
            self._heartbeat.cancel()
            self.board.forget.remote(self.replica)
        except Exception:
            pass
        self.backend.stop()


# ---------------------------------------------------------------------------------------------------------------
# The ingress side


class RayBackend:
    """The app's backend on the ingress: decodes go to the decoder deployment through its handle."""

    def __init__(self, handle, settings: C.Settings, deploy_id: str, ingress_replicas: int = 1, clock=time.monotonic):
        self.handle = handle
        self.settings = settings
        self.deploy_id = deploy_id
        self.ingress_replicas = ingress_replicas
        self.clock = clock
        self.view: list[dict] = []  # the live replicas' latest reports
        self.model: ModelInfo | None = None
        self.limits: RequestLimits | None = None
        self.limits_error: str | None = None
        self.in_flight = 0
        self.lost_replica_retries = 0
        self._board = None
        self._refresher: asyncio.Task | None = None
        self._view_ready = asyncio.Event()

    # --- the board ---------------------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._refresher = loop.create_task(self._refresh_forever())

    def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()

    async def _refresh_forever(self) -> None:
        app_name = serve.get_replica_context().app_name
        while True:
            try:
                if self._board is None:
                    self._board = queue_board(app_name)
                self.set_view(await self._board.read.remote(self.deploy_id, REPLICA_STALE_S))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("cannot read the queue board", exc_info=True)
                self._board = None
            await asyncio.sleep(VIEW_REFRESH_S)

    def set_view(self, view: list[dict]) -> None:
        self.view = view
        if self.model is None:
            for s in view:
                if s["model"] is not None:
                    self._use(s["model"])
                    break
        self._view_ready.set()

    def _use(self, model: ModelInfo) -> None:
        try:
            self.limits = C.resolve_limits(self.settings, device=model.device, embed_dim=model.embed_dim,
                                           side_multiple=model.size_multiple)
        except ValueError as e:
            self.limits_error = str(e)
        self.model = model

    @property
    def live(self) -> list[dict]:
        return [s for s in self.view if s["ok"]]

    # --- the backend interface ---------------------------------------------------------------------------------

    def ready(self) -> tuple[ModelInfo, RequestLimits]:
        if self.limits_error:
            raise ApiError(503, "model_failed", f"the model could not be loaded: {self.limits_error}")
        if self.model is not None and self.limits is not None and self.live:
            return self.model, self.limits
        errors = [s["load_error"] for s in self.view if s["load_error"]]
        if errors and len(errors) == len(self.view):
            raise ApiError(503, "model_failed", f"the model could not be loaded: {errors[0]}")
        if self.model is not None:
            raise ApiError(503, "loading", "no decoder replica is ready (one is being started)", {"Retry-After": "5"})
        raise ApiError(503, "loading", "the model is still loading", {"Retry-After": "5"})

    def health(self) -> tuple[int, dict, dict[str, str]]:
        if self.live and self.model is not None:
            return 200, {"status": "ok"}, {}
        errors = [s["load_error"] for s in self.view if s["load_error"]]
        if errors and len(errors) == len(self.view):
            return 503, {"status": "error", "message": errors[0]}, {}
        return 503, {"status": "loading"}, {"Retry-After": "5"}

    def capacity(self) -> int:
        """Requests this ingress may have at the replicas: all they hold, shared among the ingress replicas."""
        return math.ceil(sum(s["capacity"] for s in self.live) / self.ingress_replicas)

    def estimated_wait_s(self) -> float:
        """Seconds until the replicas have worked off what they hold: the mean of their own estimates (with one
        replica, exactly the single-process server's figure)."""
        live = self.live
        return sum(s["estimated_wait_s"] for s in live) / len(live) if live else 0.0

    def queue_info(self) -> dict:
        live = self.live
        rates = [s["seconds_per_megapixel_step"] for s in live if s["seconds_per_megapixel_step"] is not None]
        return {
            "running": sum(s["running"] for s in live),
            "waiting": sum(s["waiting"] for s in live),
            "capacity": sum(s["capacity"] for s in live),
            "estimated_wait_s": round(self.estimated_wait_s(), 3),
            "seconds_per_megapixel_step": sum(rates) / len(rates) if rates else None,
        }

    def extra_info(self) -> dict:
        return {
            "replicas": [
                {"id": s["replica"], "ready": s["ok"], "running": s["running"], "waiting": s["waiting"],
                 "capacity": s["capacity"], "estimated_wait_s": s["estimated_wait_s"]}
                for s in self.view
            ],
            # Requests this ingress sent again because their replica was lost (killed, OOM, node gone).
            "retried_after_lost_replica": self.lost_replica_retries,
        }

    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.estimated_wait_s())))

    async def decode(self, params: DecodeParams, job: Job) -> Decoded:
        if self.in_flight >= self.capacity():
            q = self.queue_info()
            raise ApiError(
                429,
                "queue_full",
                f"all {len(self.live)} decoder replicas are full ({q['running']} decoding, {q['waiting']} waiting, "
                f"{1 + self.settings.max_waiting} per replica); retry later",
                {"Retry-After": self.retry_after()},
            )
        if params.seed is None:  # chosen here, so that a retry on another replica draws the same image
            params = dataclasses.replace(params, seed=secrets.randbelow(C.MAX_CHOSEN_SEED + 1))
        self.in_flight += 1
        t0 = self.clock()
        try:
            reply = await self._call_with_retries(params, job)
        finally:
            self.in_flight -= 1
        total_ms = (self.clock() - t0) * 1000
        # Everything but the decode itself was waiting: Serve's routing, the replica's queue, a lost replica.
        queue_ms = max(reply.queue_ms, total_ms - reply.result.decode_ms)
        return Decoded(reply.result, queue_ms, {"X-Replica": reply.replica})

    async def _call_with_retries(self, params: DecodeParams, job: Job) -> ReplicaReply:
        attempt, deadline = 0, None
        while True:
            try:
                return await self._call(params, job)
            except (RayActorError, ActorUnavailableError) as e:
                attempt += 1
                if attempt > RETRIES_AFTER_LOST_REPLICA:
                    raise ApiError(503, "replica_unavailable",
                                   f"the decoder replica was lost {attempt} times ({type(e).__name__}); retry later",
                                   {"Retry-After": "5"}) from None
                self.lost_replica_retries += 1
                log.warning("decoder replica lost (%s); sending the request again (attempt %d)", type(e).__name__, attempt + 1)
            except BackPressureError:
                # Only when an operator set max_queued_requests: a new request is told 429; a retried one waits.
                if attempt == 0:
                    raise ApiError(429, "queue_full", "every decoder replica is full; retry later",
                                   {"Retry-After": self.retry_after()}) from None
                deadline = deadline or self.clock() + LOST_REPLICA_RETRY_WINDOW_S
                if self.clock() > deadline:
                    raise ApiError(503, "replica_unavailable", "the decoder replica was lost and no other had room",
                                   {"Retry-After": self.retry_after()}) from None
                await asyncio.sleep(0.5)

    async def _call(self, params: DecodeParams, job: Job) -> ReplicaReply:
        response = self.handle.decode.remote(params)
        job.on_cancel(response.cancel)  # the client went away: drop the request wherever it is
        try:
            return await response
        except asyncio.CancelledError:  # this request's task was cancelled (Serve's proxy saw the client go)
            response.cancel()
            raise
        except RequestCancelledError:
            raise DecodeCancelled(job.cancel_reason or DecodeCancelled.CLIENT_GONE) from None
        except (RayActorError, ActorUnavailableError, BackPressureError):
            raise
        except Exception as e:
            # The replica raised: hand the app the original error (ApiError, DecodeCancelled, OutOfMemoryError...).
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise


@serve.ingress()
class Ingress:
    """The /v1 app (app.create_app) with a RayBackend."""

    def __init__(self, decoder, settings: C.Settings, deploy_id: str, ingress_replicas: int = 1):
        self._app = create_app(settings, backend=RayBackend(decoder, settings, deploy_id, ingress_replicas))

    def __serve_build_asgi_app__(self):
        return self._app


# ---------------------------------------------------------------------------------------------------------------
# Building the application


def deploy_id_of(settings: C.Settings, decoder_factory=None) -> str:
    """Same decoder settings, same id: replicas of another configuration never count for this ingress."""
    decoder_side = {k: v for k, v in dataclasses.asdict(settings).items()
                    if k in ("model", "tiny_random", "embed_dim", "tiny_seed", "device", "threads", "negative_embeds", "max_waiting")}
    return hashlib.sha256(repr((sorted(decoder_side.items()), repr(decoder_factory))).encode()).hexdigest()[:12]


def serve_logging(log_level: str) -> dict:
    """Serve's logging at our level; its per-request access log (an INFO line in every process a request
    crosses) only at info and below."""
    return {"log_level": log_level.upper(), "enable_access_log": log_level.lower() in ("debug", "info")}


def build_app(settings: C.Settings, opts: RayOptions | None = None, decoder_factory=None):
    """The Serve application: Ingress → Decoder (N replicas). `decoder_factory` (tests): a picklable callable
    returning a decoder object, used instead of loading one from the settings."""
    opts = opts or RayOptions()
    opts.validate()
    settings.validate()
    gpus = opts.replica_gpus
    if gpus is None:
        gpus = 1 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0
    if gpus == 0 and settings.threads is None:
        # A CPU replica computes on the cores it reserved; more torch threads only fight the other replicas.
        settings = dataclasses.replace(settings, threads=max(1, int(opts.replica_cpus)))
    scaling = (
        {"autoscaling_config": {
            "min_replicas": opts.min_replicas,
            "max_replicas": opts.max_replicas,
            "target_ongoing_requests": opts.target_ongoing_requests,
            "upscale_delay_s": opts.upscale_delay_s,
            "downscale_delay_s": opts.downscale_delay_s,
        }}
        if opts.autoscaling
        else {"num_replicas": opts.replicas}
    )
    env = {"OMP_NUM_THREADS": str(settings.threads)} if settings.threads else {}
    logging_config = serve_logging(settings.log_level)
    decoder = serve.deployment(
        DecoderReplica,
        name="Decoder",
        # The replica's own queue: one running, max_waiting waiting. Serve sends it no more than that.
        max_ongoing_requests=1 + settings.max_waiting,
        max_queued_requests=-1,
        # Long enough for a full queue of 512 px decodes (9 × 1.3 s on an H200) to finish on a scale-down.
        graceful_shutdown_timeout_s=60,
        logging_config=logging_config,
        ray_actor_options={"num_gpus": gpus, "num_cpus": opts.replica_cpus, "runtime_env": {"env_vars": env}},
        **scaling,
    ).bind(settings, deploy_id_of(settings, decoder_factory), decoder_factory)
    ingress = serve.deployment(
        Ingress,
        name="Ingress",
        num_replicas=opts.ingress_replicas,
        # Requests one ingress replica handles at once (most just wait for a decoder): the connection cap's analogue.
        max_ongoing_requests=settings.max_connections,
        logging_config=logging_config,
        ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(decoder, settings, deploy_id_of(settings, decoder_factory), opts.ingress_replicas)


RAY_OPTION_NAMES = {f.name for f in dataclasses.fields(RayOptions)}


def app_builder(args: dict):
    """`serve deploy` / `serve run` entry (serve_config.yaml: import_path lambda_decoder.ray_app:app_builder): args
    are Settings fields (as on the command line, underscores for dashes; LAMBDA_DECODER_* env applies too) and
    RayOptions fields."""
    args = dict(args or {})
    unknown = sorted(set(args) - RAY_OPTION_NAMES - set(C.Settings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown argument(s) for the lambda-decoder application: {', '.join(unknown)}")
    opts = RayOptions(**{k: args.pop(k) for k in list(args) if k in RAY_OPTION_NAMES})
    return build_app(C.Settings.from_env(**args), opts)
