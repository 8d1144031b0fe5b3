"""Reference GPU decoder endpoint for lambda-eclipse: λ-ECLIPSE image embedding → Kandinsky 2.2 image.

Protocol: ../README.md and ../openapi.yaml. Modules: `config` (settings, limits, per-device caps), `validation`
(Content-Type, JSON and fields → DecodeParams or ApiError; shared by every front end), `decoder` (the diffusers
pipeline, cancellable between steps, and image encoding), `decode_queue` (one decode at a time, bounded waiting,
cancellation, Retry-After), `app` (the FastAPI app: auth, CORS, errors; its decodes go to a backend: LocalBackend in
this process), `http_guard` (header/body timeouts and the connection cap uvicorn lacks), `__main__` (the command
line, bounded graceful shutdown), `ray_app` (the same app on Ray Serve: RayBackend → N decoder replicas, each a
LocalBackend), `serve` (its command line: `python3 -m lambda_decoder.serve`).
"""

PROTOCOL_VERSION = "1"
