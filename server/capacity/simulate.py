"""Capacity plan for the decoder endpoint: how many GPU replicas a request rate needs for a p95 latency target.

A discrete-event simulation of what the Ray Serve deployment does (lambda_decoder/ray_app.py): Poisson arrivals;
c replicas, each one decode at a time with its own FIFO queue of at most `max_waiting`; Serve's router sends a
request to the less busy of two replicas picked at random among those with room ("power of two choices"); when
no replica has room the ingress answers 429 (the request is counted as refused). A request's latency is its wait
plus its decode. Deterministic: the same seed gives the same numbers, so the table in server/README.md
("Capacity plan") is this script's output, checked by tests/test_capacity.py.

    python3 capacity/simulate.py                      # the README's plan table (from server/)
    python3 capacity/simulate.py --rate 120 --replicas 4   # one configuration, decodes per minute
    python3 capacity/simulate.py --gpu-hour 2.5       # the cost columns at another price per GPU-hour

`routing="central"` is the textbook M/G/c queue (one FIFO queue, c servers); with exponential decode times it is
M/M/c, whose mean wait and probability of waiting Erlang's C formula gives exactly (`erlang_c`): the tests check
the simulation against it, and against Pollaczek-Khinchine for M/D/1.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from collections import deque
from dataclasses import dataclass

# One decode of the real decoder at 512×512, 50 steps, guidance 4 (2 UNet passes a step), fp16, on an H200:
# 1.34 s (server/README.md, "Speed"), i.e. 44.8 decodes a minute per GPU. Decode times at a fixed size and step
# count vary by a few percent on a GPU, so the plan takes them as constant (M/D/c).
DECODE_S_512 = 1.34
MAX_WAITING = 8  # per replica: the server's default --max-waiting
# A price per GPU-hour to make the cost columns concrete; give yours with --gpu-hour.
GPU_HOUR_USD = 3.0

PLAN_RATES_PER_MIN = (30, 60, 120, 240, 480, 960)
PLAN_P95_TARGETS_S = (3.0, 5.0)
PLAN_REQUESTS = 40_000
PLAN_SEED = 1
# A configuration meets the plan when its p95 latency is within the target and it refuses (429) under 0.1 %.
MAX_REFUSED = 0.001


@dataclass
class Result:
    requests: int  # counted (after the warm-up)
    refused: float  # fraction answered 429
    waited: float  # fraction of the accepted that waited for a replica
    mean_wait_s: float
    p50_s: float  # latency = wait + decode, accepted requests
    p95_s: float
    p99_s: float
    utilization: float  # decoding time / (replicas × time)
    batch_mean_waits: list[float]  # mean wait of each of 20 consecutive batches (for a standard error)
    batch_waited: list[float]  # fraction that waited, per batch


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of sorted values."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def simulate(rate_per_s: float, replicas: int, *, decode_s: float = DECODE_S_512, service: str = "deterministic",
             routing: str = "pow2", max_waiting: int | None = MAX_WAITING, requests: int = PLAN_REQUESTS,
             seed: int = PLAN_SEED, warmup: float = 0.1) -> Result:
    """Simulates `requests` Poisson arrivals at `rate_per_s` on `replicas` replicas.

    service: "deterministic" (every decode takes decode_s) or "exponential" (mean decode_s).
    routing: "pow2" (per-replica FIFO queues, the less busy of two random replicas with room: Ray Serve's router)
      or "central" (one FIFO queue for all: M/G/c).
    max_waiting: per replica (pow2) or per replica × replicas (central); None: unbounded."""
    rng = random.Random(seed)
    draw_service = (lambda: decode_s) if service == "deterministic" else (lambda: rng.expovariate(1 / decode_s))
    skip = int(requests * warmup)
    t = 0.0
    waits: list[float] = []
    latencies: list[float] = []
    refused = counted = 0
    busy_s = 0.0
    first_counted_at = None
    if routing == "pow2":
        # Per replica: completion times of the requests it holds (running first), in FIFO order.
        held: list[deque] = [deque() for _ in range(replicas)]
        room = math.inf if max_waiting is None else 1 + max_waiting
    elif routing == "central":
        free_at = [0.0] * replicas  # heap: when each replica is next free
        in_system: list[float] = []  # heap of completion times
        room = math.inf if max_waiting is None else replicas * (1 + max_waiting)
    else:
        raise ValueError(f"routing must be pow2 or central, not {routing!r}")
    for i in range(requests):
        t += rng.expovariate(rate_per_s)
        service_s = draw_service()
        counting = i >= skip
        if counting and first_counted_at is None:
            first_counted_at = t
        if routing == "pow2":
            for q in held:
                while q and q[0] <= t:
                    q.popleft()
            open_ = [r for r in range(replicas) if len(held[r]) < room]
            if not open_:
                refused += counting
                counted += counting
                continue
            pick = open_ if len(open_) <= 2 else rng.sample(open_, 2)
            r = min(pick, key=lambda r: len(held[r]))
            start = max(t, held[r][-1] if held[r] else t)
            held[r].append(start + service_s)
        else:
            while in_system and in_system[0] <= t:
                heapq.heappop(in_system)
            if len(in_system) >= room:
                refused += counting
                counted += counting
                continue
            start = max(t, heapq.heappop(free_at))
            heapq.heappush(free_at, start + service_s)
            heapq.heappush(in_system, start + service_s)
        if counting:
            counted += 1
            waits.append(start - t)
            latencies.append(start - t + service_s)
            busy_s += service_s
    span = t - (first_counted_at or 0.0)
    batches = 20
    size = len(waits) // batches
    batch_means = [sum(waits[b * size:(b + 1) * size]) / size for b in range(batches)] if size else []
    batch_waited = [sum(1 for w in waits[b * size:(b + 1) * size] if w > 0) / size for b in range(batches)] if size else []
    latencies.sort()
    accepted = len(waits)
    return Result(
        requests=counted,
        refused=refused / counted if counted else 0.0,
        waited=sum(1 for w in waits if w > 0) / accepted if accepted else 0.0,
        mean_wait_s=sum(waits) / accepted if accepted else 0.0,
        p50_s=percentile(latencies, 0.50),
        p95_s=percentile(latencies, 0.95),
        p99_s=percentile(latencies, 0.99),
        utilization=busy_s / (replicas * span) if span > 0 else 0.0,
        batch_mean_waits=batch_means,
        batch_waited=batch_waited,
    )


# --- analytic references ------------------------------------------------------------------------------------------


def erlang_c(servers: int, offered_load: float) -> float:
    """Erlang's C formula: the probability that an arrival waits in M/M/c with offered load a = λ/μ < c.
    Computed through Erlang B's stable recursion B(k) = a·B(k−1) / (k + a·B(k−1))."""
    if not 0 <= offered_load < servers:
        raise ValueError(f"need 0 <= load < servers, got {offered_load} and {servers}")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    rho = offered_load / servers
    return b / (1 - rho + rho * b)


def mmc_mean_wait(servers: int, rate: float, service_s: float) -> float:
    """Mean wait in M/M/c: C(c, a) / (c·μ − λ)."""
    a = rate * service_s
    return erlang_c(servers, a) / (servers / service_s - rate)


def md1_mean_wait(rate: float, service_s: float) -> float:
    """Pollaczek-Khinchine for M/D/1: ρ·s / (2·(1 − ρ))."""
    rho = rate * service_s
    return rho * service_s / (2 * (1 - rho))


# --- the plan -----------------------------------------------------------------------------------------------------------


def replicas_needed(rate_per_min: float, p95_target_s: float, **kwargs) -> tuple[int, Result]:
    """The fewest replicas whose simulated p95 latency meets the target with under MAX_REFUSED answered 429."""
    rate = rate_per_min / 60
    c = max(1, math.ceil(rate * kwargs.get("decode_s", DECODE_S_512)))
    while True:
        r = simulate(rate, c, **kwargs)
        if r.p95_s <= p95_target_s and r.refused < MAX_REFUSED:
            return c, r
        c += 1


def plan_table(rates=PLAN_RATES_PER_MIN, targets=PLAN_P95_TARGETS_S, gpu_hour_usd: float = GPU_HOUR_USD,
               decode_s: float = DECODE_S_512) -> str:
    per_gpu = 60 / decode_s
    lines = [
        "| decodes/min | offered load (GPUs) | p95 target | replicas (GPUs) | utilization | latency p50 / p95 / p99 "
        "| 429s | $/hour | $ per 1000 decodes | replicas with one shared queue |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        for target in targets:
            c, r = replicas_needed(rate, target, decode_s=decode_s)
            shared, _ = replicas_needed(rate, target, decode_s=decode_s, routing="central")
            cost_h = c * gpu_hour_usd
            lines.append(
                f"| {rate} | {rate / per_gpu:.2f} | {target:g} s | {c} | {r.utilization:.0%} "
                f"| {r.p50_s:.2f} / {r.p95_s:.2f} / {r.p99_s:.2f} s | {r.refused:.2%} | {cost_h:.2f} "
                f"| {cost_h / (rate * 60) * 1000:.2f} | {shared} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, help="decodes per minute (with --replicas: simulate that one configuration)")
    p.add_argument("--replicas", type=int)
    p.add_argument("--decode-s", type=float, default=DECODE_S_512, help=f"seconds per decode (default {DECODE_S_512})")
    p.add_argument("--gpu-hour", type=float, default=GPU_HOUR_USD, help=f"price of a GPU-hour (default {GPU_HOUR_USD})")
    p.add_argument("--routing", choices=("pow2", "central"), default="pow2")
    p.add_argument("--service", choices=("deterministic", "exponential"), default="deterministic")
    args = p.parse_args(argv)
    if args.rate is not None and args.replicas is not None:
        r = simulate(args.rate / 60, args.replicas, decode_s=args.decode_s, routing=args.routing, service=args.service)
        print(f"{args.rate:g}/min on {args.replicas} replica(s): utilization {r.utilization:.1%}, "
              f"waited {r.waited:.1%}, mean wait {r.mean_wait_s:.2f} s, latency p50 {r.p50_s:.2f} "
              f"p95 {r.p95_s:.2f} p99 {r.p99_s:.2f} s, 429 {r.refused:.2%}")
        return
    print(f"One GPU: {60 / args.decode_s:.1f} decodes/min ({args.decode_s} s each, 512 px, 50 steps); "
          f"max_waiting {MAX_WAITING} per replica; ${args.gpu_hour:g} per GPU-hour.\n")
    print(plan_table(gpu_hour_usd=args.gpu_hour, decode_s=args.decode_s))


if __name__ == "__main__":
    main()
