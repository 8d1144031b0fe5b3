"""Request validation for POST /v1/decode, shared by every front end (the FastAPI app, the Hugging Face handler,
a Ray Serve deployment): Content-Type → body bytes → JSON → DecodeParams, or an ApiError naming the field and the
limit. Nothing here imports torch or an HTTP framework, and nothing here can raise anything but ApiError for
any input: the property test in tests/test_hostile_requests.py throws random JSON at every field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

import numpy as np

from . import config as C


class ApiError(Exception):
    """An error reply: HTTP status, a stable machine-readable code, a message for humans."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def __reduce__(self):  # pickled whole: a Ray Serve replica raises it for the ingress to answer
        return ApiError, (self.status, self.code, self.message, self.headers)


@dataclass(frozen=True)
class RequestLimits:
    """What this server accepts; comes from the loaded model (embed_dim, side_multiple), the device (the default
    caps) and the settings. See config.resolve_limits."""

    embed_dim: int
    side_multiple: int
    max_side: int
    max_steps: int
    max_guidance: float = C.MAX_GUIDANCE

    @property
    def min_side(self) -> int:
        return self.side_multiple


@dataclass(frozen=True)
class DecodeParams:
    image_embeds: np.ndarray  # float32 [D]
    negative_image_embeds: np.ndarray | None  # float32 [D], None: the server's default
    seed: int | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    format: str

    @property
    def unet_passes(self) -> int:
        """UNet evaluations per step: diffusers runs the negative too (a batch of 2) when guidance_scale > 1."""
        return 2 if self.guidance_scale > 1 else 1

    @property
    def work(self) -> float:
        """Megapixel-steps (× UNet passes): what a decode's time is proportional to, for Retry-After."""
        return self.width * self.height / 1e6 * self.num_inference_steps * self.unet_passes


FIELDS = {
    "image_embeds",
    "negative_image_embeds",
    "seed",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "format",
}

# No field takes an integer anywhere near this long (a seed has ≤ 19 digits). Python's own limit (4300 digits,
# sys.set_int_max_str_digits) would otherwise surface as a message about the interpreter.
MAX_INT_DIGITS = 1000


# ---------------------------------------------------------------------------------------------------------------
# Transport: Content-Type, bytes → JSON


def check_content_type(value: str | None) -> None:
    """Only `application/json` (charset, if given, UTF-8). Anything else is 415: a `text/plain` POST is a CORS
    "simple request" that any web page can make a visitor's browser send without a preflight; requiring JSON
    forces the preflight, which only the configured origins pass."""
    media_type, *params = (value or "").split(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json":
        got = f"got {describe(value)}" if value else "none was given"
        raise ApiError(415, "unsupported_media_type", f"Content-Type must be application/json, {got}")
    for param in params:
        name, _, v = param.partition("=")
        if name.strip().lower() == "charset" and v.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise ApiError(415, "unsupported_media_type", f"Content-Type application/json must be UTF-8, got charset {describe(v.strip())}")


def _parse_int(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS:
        raise ValueError(f"an integer has {len(digits)} digits (no field takes more than {MAX_INT_DIGITS})")
    return int(digits)


def parse_json(raw: bytes):
    """UTF-8 JSON text → a Python value; 400 invalid_json for anything that is not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_json", f"the body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        return json.loads(text, parse_int=_parse_int)
    except RecursionError:
        # Python's parser recurses once per nesting level; the protocol's bodies are 2 deep.
        raise ApiError(400, "invalid_json", "the body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, and _parse_int's refusal
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# Fields


def describe(v) -> str:
    """A short, safe rendering of any JSON value for an error message: never recursive, never huge, ASCII-safe
    for surrogates (repr escapes them)."""
    if isinstance(v, dict):
        return f"an object with {len(v)} key(s)"
    if isinstance(v, list):
        return f"a list of {len(v)} item(s)"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**30:
        # Not str(v): Python refuses to print integers over 4300 digits.
        return f"an integer of about {int(abs(v).bit_length() * math.log10(2)) + 1} digits"
    if isinstance(v, str) and len(v) > 40:
        return repr(v[:40]) + f"... ({len(v)} characters)"
    return repr(v)


def one_line(text: str, limit: int = 300) -> str:
    """An exception's message for an error reply: one line, bounded."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, f"invalid_{field}", f"{field}: {message}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


F32_MAX = float(np.finfo(np.float32).max)


def parse_embedding(value, field: str, dim: int) -> np.ndarray:
    """A list of D numbers, or base64 of D little-endian f32 (4·D bytes); finite values in f32 range only."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(field, "not valid base64 (standard alphabet, padded)") from None
        if len(raw) != 4 * dim:
            raise _invalid(field, f"expected {dim} little-endian f32 ({4 * dim} bytes), got {len(raw)} bytes")
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif isinstance(value, list):
        if len(value) != dim:
            raise _invalid(field, f"expected {dim} numbers, got {len(value)}")
        if not all(_is_number(x) for x in value):
            raise _invalid(field, "every element must be a number")
        # JSON integers are unbounded; beyond f32's range (and certainly beyond f64's, where the conversion
        # itself overflows) they would become ±inf or garbage. Compared exactly, before any conversion.
        for i, x in enumerate(value):
            if _is_int(x) and abs(x) > F32_MAX:
                raise _invalid(field, f"element {i} ({describe(x)}) is outside the f32 range")
        arr = np.asarray(value, dtype=np.float64)
        if np.isfinite(arr).all() and np.abs(arr).max(initial=0.0) > F32_MAX:
            raise _invalid(field, "a value is outside the f32 range")
        arr = arr.astype(np.float32)
    else:
        raise _invalid(field, f"expected a list of {dim} numbers or a base64 string of {dim} f32, got {describe(value)}")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise _invalid(field, f"element {bad} is {arr[bad]} (NaN and ±Infinity are not accepted)")
    return arr


def _side(body: dict, name: str, limits: RequestLimits) -> int:
    v = body.get(name, C.DEFAULT_SIDE)
    m = limits.side_multiple
    if not _is_int(v):
        raise _invalid("size", f"{name} must be an integer, got {describe(v)}")
    if v < m or v % m:
        raise _invalid("size", f"{name} must be a positive multiple of {m}, got {describe(v)} (the model's size multiple is {m})")
    if v > limits.max_side:
        raise _invalid("size", f"{name} {describe(v)} is over this server's limit of {limits.max_side}")
    return v


def parse_request(body, limits: RequestLimits) -> DecodeParams:
    """Validates a decoded JSON body; every problem is an ApiError (422, or 400 when it is not an object)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        # Strict on purpose: a misspelt "steps" would otherwise silently decode 50 steps.
        shown = ", ".join(describe(k) if len(k) > 40 or not k.isprintable() else k for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ApiError(422, "unknown_field", f"unknown field(s): {shown}{more}")
    if "image_embeds" not in body:
        raise _invalid("image_embeds", "required")
    image = parse_embedding(body["image_embeds"], "image_embeds", limits.embed_dim)
    negative = None
    if body.get("negative_image_embeds") is not None:
        negative = parse_embedding(body["negative_image_embeds"], "negative_image_embeds", limits.embed_dim)

    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= C.MAX_SEED):
        raise _invalid("seed", f"must be an integer in [0, 2^63-1], got {describe(seed)}")

    width = _side(body, "width", limits)
    height = _side(body, "height", limits)

    steps = body.get("num_inference_steps", C.DEFAULT_STEPS)
    if not _is_int(steps) or not 1 <= steps <= limits.max_steps:
        raise _invalid("num_inference_steps", f"must be an integer in [1, {limits.max_steps}], got {describe(steps)}")

    guidance = body.get("guidance_scale", C.DEFAULT_GUIDANCE)
    # Compared before any conversion: an unbounded JSON integer compares exactly, NaN fails both bounds.
    if not _is_number(guidance) or not 0 <= guidance <= limits.max_guidance:
        raise _invalid("guidance_scale", f"must be a number in [0, {limits.max_guidance:g}], got {describe(guidance)}")

    fmt = body.get("format", C.DEFAULT_FORMAT)
    if not isinstance(fmt, str) or fmt not in C.FORMATS:
        raise _invalid("format", f"must be one of {', '.join(C.FORMATS)}, got {describe(fmt)}")

    return DecodeParams(image, negative, seed, width, height, steps, float(guidance), fmt)


def parse_body(raw: bytes, content_type: str | None, limits: RequestLimits) -> DecodeParams:
    """The whole request check after auth and the body size: Content-Type (415), JSON (400), fields (422)."""
    check_content_type(content_type)
    return parse_request(parse_json(raw), limits)
