"""The capacity plan's simulation (capacity/simulate.py): checked against queueing theory where theory has exact
answers, and the README's plan table is its output."""

from __future__ import annotations

import statistics
import sys

import pytest

from conftest import SERVER_DIR

sys.path.insert(0, str(SERVER_DIR / "capacity"))
import simulate as S  # noqa: E402

# Monte Carlo tolerance: the simulated mean is an average of 20 batch means (10 000 requests each, far longer than
# the queue's memory at these loads, so the batches are nearly independent); it lies within 4 standard errors of the
# true value with probability > 99.99 %. The analytic values are exact (float64).
SIGMAS = 4


def within_standard_errors(batches: list[float], expected: float) -> tuple[bool, float, float]:
    mean = statistics.fmean(batches)
    se = statistics.stdev(batches) / len(batches) ** 0.5
    return abs(mean - expected) <= SIGMAS * se, mean, se


@pytest.mark.parametrize("servers,rho", [(1, 0.7), (4, 0.8), (8, 0.9)])
def test_shared_queue_with_exponential_decodes_is_erlang_c(servers, rho):
    """M/M/c: P(wait) = C(c, a) and mean wait = C(c, a) / (cμ − λ) (Erlang C)."""
    decode_s = S.DECODE_S_512
    rate = rho * servers / decode_s
    r = S.simulate(rate, servers, decode_s=decode_s, service="exponential", routing="central", max_waiting=None,
                   requests=220_000, seed=7, warmup=1 / 11)
    ok, mean, se = within_standard_errors(r.batch_mean_waits, S.mmc_mean_wait(servers, rate, decode_s))
    assert ok, (mean, S.mmc_mean_wait(servers, rate, decode_s), se)
    ok, waited, se = within_standard_errors(r.batch_waited, S.erlang_c(servers, rate * decode_s))
    assert ok, (waited, S.erlang_c(servers, rate * decode_s), se)
    assert r.refused == 0 and r.utilization == pytest.approx(rho, abs=SIGMAS * 0.01)


def test_one_replica_with_constant_decodes_is_pollaczek_khinchine():
    """M/D/1 (the plan's service model, one replica): mean wait ρ·s / (2(1 − ρ))."""
    rate = 0.7 / S.DECODE_S_512
    r = S.simulate(rate, 1, service="deterministic", routing="pow2", max_waiting=None, requests=220_000, seed=7,
                   warmup=1 / 11)
    ok, mean, se = within_standard_errors(r.batch_mean_waits, S.md1_mean_wait(rate, S.DECODE_S_512))
    assert ok, (mean, S.md1_mean_wait(rate, S.DECODE_S_512), se)


def test_erlang_c_known_values():
    # One server: C = ρ. Two servers at a = 1: C = a² / (a² + 2(1 − ρ)(1 + a)) with ρ = 1/2 → 1/3.
    assert S.erlang_c(1, 0.6) == pytest.approx(0.6, rel=1e-12)
    assert S.erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)
    with pytest.raises(ValueError):
        S.erlang_c(2, 2.0)


def test_full_replicas_refuse_instead_of_queueing_without_bound():
    """Over capacity, the bounded queues refuse (429) rather than let the wait grow: 2× the load one replica can
    take, one replica holding 1 + 8: about half refused, and no accepted request waits over 9 decodes."""
    r = S.simulate(2 / S.DECODE_S_512, 1, requests=20_000)
    assert 0.4 < r.refused < 0.6
    assert r.p99_s <= (1 + S.MAX_WAITING) * S.DECODE_S_512 + 1e-9


def test_readme_plan_table_is_the_simulations_output():
    readme = (SERVER_DIR / "README.md").read_text()
    table = S.plan_table()
    assert table in readme, "server/README.md's capacity table differs from `python3 capacity/simulate.py`:\n" + table
