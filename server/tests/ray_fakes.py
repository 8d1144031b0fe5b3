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
