"""The decode queue: one decode at a time per device, a bounded FIFO of waiting requests, cancellation of
abandoned work (client gone, shutdown), and Retry-After estimated from the queued requests' own work.

Nothing here knows about HTTP except ApiError. Used by the FastAPI app's LocalBackend, in this process or in each
Ray Serve decoder replica (ray_app.DecoderReplica).
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from .validation import ApiError

log = logging.getLogger("lambda_decoder")

# Retry-After before any decode has finished and while the running one has not finished a step: one second a
# request, as a guess that only lasts until the first step is timed.
UNKNOWN_DECODE_S = 1.0


class DecodeCancelled(Exception):
    """Raised in the decoding thread between two steps (or instead of starting) when a job is cancelled."""

    CLIENT_GONE = "client_gone"
    SHUTDOWN = "shutdown"

    def __init__(self, reason: str, steps_done: int = 0):
        super().__init__(f"decode cancelled ({reason}) after {steps_done} step(s)")
        self.reason = reason
        self.steps_done = steps_done

    def __reduce__(self):  # pickled whole: a Ray Serve replica raises it for the ingress
        return DecodeCancelled, (self.reason, self.steps_done)


def shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": "10"})


class Job:
    """One decode request in the queue: its work (megapixel-steps, see DecodeParams.work), its step count, its
    progress, and its cancellation. `cancel` is called on the event loop; the decoding thread reads the reason
    between steps (`step_done`), so an abandoned decode stops after at most one more step."""

    def __init__(self, work: float, steps: int):
        self.work = work
        self.steps = steps
        self.steps_done = 0
        self.started_at: float | None = None
        self.cancel_reason: str | None = None
        self._turn: asyncio.Future | None = None  # set while waiting; resolved when this job may run
        self._queue: DecodeQueue | None = None
        self._on_cancel: list[Callable[[], object]] = []

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        if self._queue is not None:
            self._queue._forget_waiting(self)
        for callback in self._on_cancel:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Also run `callback` when the job is cancelled (at once if it already is): the Ray backend cancels the
        call to the decoder replica that runs this job."""
        if self.cancel_reason is not None:
            callback()
        else:
            self._on_cancel.append(callback)

    def check(self) -> None:
        if self.cancel_reason is not None:
            raise DecodeCancelled(self.cancel_reason, self.steps_done)

    def step_done(self, steps_done: int) -> None:
        """The decoder's on_step callback (decoding thread)."""
        self.steps_done = steps_done
        self.check()


class DecodeTimeModel:
    """Learns how long a decode takes from the decodes that finished: seconds ≈ overhead + rate × work, with work
    in megapixel-steps (× UNet passes), by least squares over recent decodes (older ones weigh less, so a warm-up
    or a change of load fades out). With one size seen so far it is the plain ratio (seconds per megapixel-step)."""

    def __init__(self, decay: float = 0.8):
        self.decay = decay
        self._s = [0.0] * 5  # Σw, Σw·x, Σw·x², Σw·y, Σw·x·y

    def observe(self, work: float, seconds: float) -> None:
        s = [v * self.decay for v in self._s]
        for i, v in enumerate((1.0, work, work * work, seconds, work * seconds)):
            s[i] += v
        self._s = s

    def coefficients(self) -> tuple[float, float] | None:
        """(overhead seconds, seconds per megapixel-step), or None before the first decode."""
        n, sx, sxx, sy, sxy = self._s
        if n == 0 or sx <= 0:
            return None
        spread = n * sxx - sx * sx
        if spread > 1e-6 * n * sxx:  # different sizes seen: fit both
            rate = (n * sxy - sx * sy) / spread
            overhead = (sy - rate * sx) / n
            if overhead < 0:  # through the origin
                return 0.0, max(0.0, sxy / sxx)
            if rate < 0:  # bigger was not slower (noise): a constant
                return sy / n, 0.0
            return overhead, rate
        return 0.0, sy / sx

    def predict(self, work: float) -> float | None:
        c = self.coefficients()
        return None if c is None else c[0] + c[1] * work

    @property
    def seconds_per_megapixel_step(self) -> float | None:
        c = self.coefficients()
        return None if c is None else c[1]


class DecodeWorker:
    """The one thread that runs decodes. A daemon thread rather than a ThreadPoolExecutor, whose threads the
    interpreter joins at exit: a decode stuck in one long operation must not keep a stopping server alive."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="decode", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], object]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((fn, loop, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            fn, loop, future = item
            try:
                outcome = (True, fn())
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting request
                outcome = (False, e)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the loop is closed: the server is gone, nobody waits for this
                pass


def _settle(future: asyncio.Future, ok: bool, value) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class DecodeQueue:
    """One decode at a time (one pipeline per device), at most `max_waiting` more waiting in arrival order;
    beyond that 429 with Retry-After. A waiting job that is cancelled leaves at once (its slot is free); a
    running one stops at its next step. All methods run on the event loop."""

    def __init__(self, max_waiting: int, model: DecodeTimeModel | None = None, clock=time.monotonic):
        self.max_waiting = max_waiting
        self.model = model or DecodeTimeModel()
        self.clock = clock
        self.draining = False
        self._running: Job | None = None
        self._waiting: deque[Job] = deque()
        self._worker = DecodeWorker()

    # --- counts and estimates -------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return 0 if self._running is None else 1

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def length(self) -> int:
        return self.running + self.waiting

    @property
    def capacity(self) -> int:
        return 1 + self.max_waiting

    def _estimate(self, job: Job) -> float:
        predicted = self.model.predict(job.work)
        if predicted is not None:
            return predicted
        running = self._running
        if running is not None and running.steps_done and running.started_at is not None:
            # Nothing finished yet: the running decode's own pace, in seconds per megapixel-step.
            work_done = running.work * running.steps_done / running.steps
            return (self.clock() - running.started_at) / work_done * job.work
        return UNKNOWN_DECODE_S

    def _remaining(self, job: Job) -> float:
        elapsed = self.clock() - (job.started_at or self.clock())
        if job.steps_done:  # its own pace so far
            return elapsed / job.steps_done * (job.steps - job.steps_done)
        return max(0.0, self._estimate(job) - elapsed)

    def estimated_wait_s(self) -> float:
        """Seconds until the decodes now queued are done: the running one's remaining time, then every waiting
        one's own estimate (from its size and steps)."""
        total = self._remaining(self._running) if self._running is not None else 0.0
        return total + sum(self._estimate(job) for job in self._waiting)

    def retry_after(self) -> int:
        return max(1, math.ceil(self.estimated_wait_s()))

    # --- running ------------------------------------------------------------------------------------------------

    async def run(self, job: Job, fn: Callable[[], object]):
        """Waits for the device, then runs fn() (which should call job.step_done after every step) in the
        decoding thread. Raises ApiError 429/503, or DecodeCancelled when the job was cancelled."""
        if self.draining:
            raise shutting_down()
        if self.length >= self.capacity:
            raise ApiError(
                429,
                "queue_full",
                f"{self.running} decode running and {self.waiting} waiting (limit {self.max_waiting}); retry later",
                {"Retry-After": str(self.retry_after())},
            )
        job._queue = self
        if self._running is None and not self._waiting:
            self._running = job
        else:
            job._turn = asyncio.get_running_loop().create_future()
            self._waiting.append(job)
            try:
                await job._turn  # resolved by _next(), or DecodeCancelled by cancel()
            except BaseException:
                self._forget_waiting(job)
                if self._running is job:  # the turn came just as this request was abandoned: pass it on
                    self._next()
                raise
        try:
            job.check()  # cancelled while it was being handed the device
            job.started_at = self.clock()
            result = await self._worker.submit(fn)
            self.model.observe(job.work, self.clock() - job.started_at)
            return result
        except BaseException:
            # Also when this coroutine itself is cancelled (uvicorn's shutdown timeout): stop the thread's work.
            job.cancel(DecodeCancelled.SHUTDOWN if self.draining else DecodeCancelled.CLIENT_GONE)
            raise
        finally:
            self._next()

    def _next(self) -> None:
        """The device is free: hand it to the first waiting job."""
        self._running = None
        if self._waiting:
            job = self._waiting.popleft()
            self._running = job
            if job._turn is not None and not job._turn.done():
                job._turn.set_result(None)

    def _forget_waiting(self, job: Job) -> None:
        if job in self._waiting:
            self._waiting.remove(job)
            if job._turn is not None and not job._turn.done():
                job._turn.set_exception(DecodeCancelled(job.cancel_reason or DecodeCancelled.CLIENT_GONE))

    def drain(self, grace_s: float) -> None:
        """Shutdown: refuse new work, cancel every waiting job now, give the running one grace_s seconds to finish
        and then cancel it (it stops at its next step)."""
        self.draining = True
        for job in list(self._waiting):
            job.cancel(DecodeCancelled.SHUTDOWN)
        running = self._running
        if running is not None:
            asyncio.get_running_loop().call_later(grace_s, running.cancel, DecodeCancelled.SHUTDOWN)

    def close(self) -> None:
        self._worker.close()  # does not wait: a decode still running dies with the process
