"""Reference GPU decoder endpoint for lambda-eclipse: λ-ECLIPSE image embedding → Kandinsky 2.2 image.

Protocol: ../README.md and ../openapi.yaml. Modules: `config` (settings and limits), `decoder` (request
validation, the diffusers pipeline, image encoding), `app` (the FastAPI app: auth, CORS, bounded queue,
errors), `__main__` (the command line, graceful shutdown).
"""

PROTOCOL_VERSION = "1"
