"""Hugging Face Inference Endpoints custom handler, reusing lambda_decoder's validation and pipeline.

Put this folder (handler.py, lambda_decoder/, requirements.txt) in a model repository next to the decoder's
unet/ movq/ scheduler/ folders, or point LAMBDA_DECODER_MODEL at a hub id. The toolkit's protocol differs from
/v1/decode: the JSON body is {"inputs": {...the /v1/decode fields...}} (or {"inputs": EMBEDDING, "parameters":
{...the other fields...}}), the reply is the image in the format the `Accept` header asks for, and errors come
back as the toolkit's 400 with our JSON error as the message. For the exact /v1 protocol deploy the Dockerfile
as a custom container instead.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lambda_decoder.config import Settings  # noqa: E402
from lambda_decoder.decoder import Decoder  # noqa: E402
from lambda_decoder.validation import ApiError, parse_request  # noqa: E402


class EndpointHandler:
    def __init__(self, path: str = ""):
        # The repository itself holds the weights when it has a unet/ folder; else the configured model id.
        model = path if path and os.path.isdir(os.path.join(path, "unet")) else None
        self.settings = Settings.from_env(model=model)
        self.decoder = Decoder.load(self.settings)
        self.limits = self.decoder.limits(self.settings)

    def __call__(self, data: dict):
        """Returns a PIL image (the toolkit encodes it); raises ValueError with {"error": ...} JSON on bad input."""
        payload = data.get("inputs", data)
        if not isinstance(payload, dict):
            payload = {"image_embeds": payload, **(data.get("parameters") or {})}
        try:
            params = parse_request(payload, self.limits)
        except ApiError as e:
            raise ValueError(json.dumps(e.body())) from None
        image, _seed, _source = self.decoder.render(params)
        return image
