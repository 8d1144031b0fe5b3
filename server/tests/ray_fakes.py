"""Stand-ins for the decoder inside Ray Serve replicas (other processes): imported there by name, so they live in
a module of their own that needs nothing but lambda_decoder and Pillow."""

from __future__ import annotations

import io
import os
import time

from PIL import Image

from lambda_decoder.config import FORMATS
from lambda_decoder.decoder import DecodeResult

DIM = 32


class FileGatedDecoder:
    """Each decode blocks until the file `gate` exists (the test creates it: a gate other processes can see).
    While it waits it calls on_step(0) every 10 ms: no progress, but a cancelled job stops there as a real one
    would."""

    model_id, device, dtype, embed_dim, negative_default_source = "gated-fake", "cpu", "float32", DIM, "zeros"
    size_multiple = 4

    def __init__(self, gate: str):
        self.gate = gate

    def decode(self, p, on_step=None):
        deadline = time.monotonic() + 120
        while not os.path.exists(self.gate):
            assert time.monotonic() < deadline, "the test never opened the gate"
            if on_step:
                on_step(0)
            time.sleep(0.01)
        buf = io.BytesIO()
        Image.new("RGB", (p.width, p.height), (10, 20, 30)).save(buf, format="PNG")
        return DecodeResult(buf.getvalue(), FORMATS["png"], p.seed or 0, 1.0, "zeros")


def file_gated(gate: str) -> FileGatedDecoder:
    return FileGatedDecoder(gate)


class DeviceTimedDecoder:
    """A GPU replica as the host sees it: each step takes `step_s` of device time during which the host's CPU is
    idle (a sleep), with on_step after each step as in a real decode. On a 2-core CI machine, CPU-bound tiny
    decoders cannot show replica scaling: Serve's proxy, ingress, controller and raylet take ~25 % of the two
    cores, so one replica already competes with them (measured idle: 1.27-1.54× whatever the work per request).
    With device time the burst test measures what it is about: Serve spreading requests over replicas."""

    model_id, device, dtype, embed_dim, negative_default_source = "device-timed-fake", "cpu", "float32", DIM, "zeros"
    size_multiple = 4

    def __init__(self, step_s: float):
        self.step_s = step_s

    def decode(self, p, on_step=None):
        for i in range(p.num_inference_steps):
            time.sleep(self.step_s)
            if on_step:
                on_step(i + 1)
        buf = io.BytesIO()
        Image.new("RGB", (p.width, p.height), (10, 20, 30)).save(buf, format="PNG")
        return DecodeResult(buf.getvalue(), FORMATS["png"], p.seed or 0, self.step_s * p.num_inference_steps * 1000, "zeros")


def device_timed(step_s: float) -> DeviceTimedDecoder:
    return DeviceTimedDecoder(step_s)
