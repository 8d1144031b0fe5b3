"""Command line: the decoder endpoint on Ray Serve, N decoder replicas behind the same /v1 app.

    python3 -m lambda_decoder.serve --replicas 2 --tiny-random --device cpu      # from server/: a local Ray
    python3 -m lambda_decoder.serve --min-replicas 1 --max-replicas 8 --model ... # autoscaling
    python3 -m lambda_decoder.serve --ray-address auto ...                         # on a running Ray cluster

Takes every option of `python3 -m lambda_decoder` (settings shared; the slow-client guard's timeouts and the
connection cap are uvicorn's and do not apply behind Serve's proxy) plus the Ray ones below. Without
--ray-address it starts a local Ray: no dashboard, no usage reporting, everything on 127.0.0.1, a small object
store. Stops on SIGINT/SIGTERM (Serve lets replicas finish what they hold, up to 60 s).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .__main__ import build_parser, settings_from
from .config import Settings

SERVER_DIR = str(Path(__file__).resolve().parents[1])


def parse(argv=None):
    """(Settings, RayOptions, the parsed arguments); errors exit 2."""
    p = build_parser("lambda_decoder.serve", "λ-ECLIPSE decoder endpoint on Ray Serve (N decoder replicas)")
    g = p.add_argument_group("Ray Serve")
    g.add_argument("--replicas", type=int, default=1, help="decoder replicas (one per GPU; default 1)")
    g.add_argument("--min-replicas", type=int, help="autoscale between --min-replicas and --max-replicas ...")
    g.add_argument("--max-replicas", type=int)
    g.add_argument("--target-ongoing-requests", type=float, default=2.0,
                   help="... keeping this many requests (running + waiting) per replica (default 2)")
    g.add_argument("--replica-gpus", type=float, help="GPUs per decoder replica (default: 1 if the cluster has GPUs, else 0)")
    g.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per decoder replica (default 1; torch threads follow)")
    g.add_argument("--ingress-replicas", type=int, default=1, help="replicas of the HTTP front (default 1)")
    g.add_argument("--ray-address", help="join this Ray cluster (e.g. auto) instead of starting a local one")
    g.add_argument("--num-cpus", type=int, help="local Ray: CPUs it schedules (default: the cores, at least what the replicas need)")
    g.add_argument("--object-store-mb", type=int, default=128, help="local Ray: object store size (default 128 MiB)")
    args = p.parse_args(argv)
    settings = settings_from(p, vars(args))

    from .ray_app import RayOptions

    opts = RayOptions(
        replicas=args.replicas, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests, replica_gpus=args.replica_gpus,
        replica_cpus=args.replica_cpus, ingress_replicas=args.ingress_replicas,
    )
    try:
        opts.validate()
    except ValueError as e:
        p.error(str(e))
    return settings, opts, args


def start_local_ray(num_cpus: int, object_store_mb: int, log_level: str = "warning") -> None:
    """A Ray for this machine only: 127.0.0.1, no dashboard, no usage statistics sent anywhere, workers that can
    import lambda_decoder."""
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray starts its workers at nice 15 (background work); here they are the service itself.
    os.environ.setdefault("RAY_worker_niceness", "0")
    pythonpath = os.pathsep.join(p for p in (SERVER_DIR, os.environ.get("PYTHONPATH")) if p)
    # Ray waits a fixed 30 s for its raylet to register and cannot be told to wait longer; on a busy machine
    # (seen on 2 cores under load) that start times out. One more start, said in words, then give up.
    for attempt in (1, 2):
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=object_store_mb << 20,
                _node_ip_address="127.0.0.1",
                runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
                logging_level=log_level.upper(),
                log_to_driver=log_level.lower() in ("debug", "info"),
            )
            return
        except Exception as e:  # Ray raises a bare Exception for this
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
            print(f"Ray's node did not start in time ({e}); starting it once more", file=sys.stderr, flush=True)
            ray.shutdown()


def start_serve(settings: Settings, opts, *, app_name: str | None = None, decoder_factory=None, route_prefix: str = "/"):
    """Serve's HTTP proxy on settings.host:port (one, on this node), and the application, waiting until it runs."""
    from ray import serve

    from .ray_app import APP_NAME, build_app, serve_logging

    serve.start(proxy_location="HeadOnly", http_options={"host": settings.host, "port": settings.port},
                logging_config=serve_logging(settings.log_level))
    serve.run(build_app(settings, opts, decoder_factory), name=app_name or APP_NAME, route_prefix=route_prefix)


def main(argv=None) -> int:
    settings, opts, args = parse(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import ray
    from ray import serve

    if args.ray_address:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        ray.init(address=args.ray_address, logging_level=settings.log_level.upper())
    else:
        needed = (opts.max_replicas or opts.replicas) * opts.replica_cpus
        start_local_ray(args.num_cpus or max(os.cpu_count() or 1, int(needed + 0.999)), args.object_store_mb,
                        settings.log_level)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        start_serve(settings, opts)
        print(f"lambda-decoder on Ray Serve: http://{settings.host}:{settings.port}/v1/ "
              f"({'autoscaling %d-%d' % (opts.min_replicas, opts.max_replicas) if opts.autoscaling else opts.replicas} "
              f"decoder replica(s))", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
