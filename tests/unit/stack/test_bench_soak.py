"""The pure parts of `cdrmed bench soak`: percentiles, RSS trends, the lines it prints."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from cdr_mediation.stack.bench_soak import memory_trend, minute_line, percentile, slope_per_hour, summary_line


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 99) == 99
    assert percentile(values, 50) == 50
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 99) == 3  # unsorted input
    assert percentile([], 99) is None


def test_one_slow_dlr_in_a_hundred_is_the_p99_but_not_in_a_thousand():
    assert percentile([0.5] * 98 + [40.0, 40.0], 99) == 40.0
    assert percentile([0.5] * 999 + [40.0], 99) == 0.5


def test_slope_is_per_hour_least_squares():
    assert slope_per_hour([(0, 100.0), (1800, 105.0), (3600, 110.0)]) == pytest.approx(10.0)
    assert slope_per_hour([(0, 100.0), (60, 100.0)]) == 0.0
    assert slope_per_hour([(0, 1.0)]) is None
    assert slope_per_hour([(5, 1.0), (5, 2.0)]) is None


def _hour(mb_at: Callable[[float], float]) -> list[tuple[float, float]]:
    return [(t, mb_at(t)) for t in range(0, 3601, 10)]


def test_flat_memory_with_noise_and_warm_up_growth_is_flat():
    # Grows 60 MB during the first ten minutes (caches, arenas), then only jitters.
    samples = _hour(lambda t: 200 + min(t, 600) / 10 + (3 if (t // 10) % 2 else -3))
    trend = memory_trend(samples)
    assert trend["verdict"] == "flat"
    assert abs(trend["slope_mb_per_h"]) < 5


def test_a_steady_leak_is_growing():
    trend = memory_trend(_hour(lambda t: 150 + 30 * t / 3600))  # 30 MB/h
    assert trend == {"slope_mb_per_h": 30.0, "limit_mb_per_h": 10.0, "mean_mb": pytest.approx(172.5, abs=0.1),
                     "verdict": "growing"}


def test_the_limit_scales_with_a_large_process():
    # 30 MB/h on a 1 GB process is within 5 %/h of its size.
    assert memory_trend(_hour(lambda t: 1000 + 30 * t / 3600))["verdict"] == "flat"


def test_a_few_minutes_are_too_short_to_judge():
    samples = [(t, 100 + t) for t in range(0, 181, 10)]  # 3 minutes, steep
    assert memory_trend(samples)["verdict"] == "too_short"
    assert memory_trend([])["verdict"] == "no_samples"


def test_minute_line_is_one_json_object_with_the_promised_fields():
    line = minute_line(3, seconds=60.0, published=83_340, stored=83_000, lags=[1.0] * 99 + [9.0],
                       oldest_pending_s=2.5, rss_mb={"worker-0": 301.24}, cpu_s={"worker-0": 41.26}, restarts={})
    assert json.loads(json.dumps(line)) == {
        "minute": 3, "rate_in": 1389.0, "rate_out": 1383.3, "lag_p50_s": 1.0, "lag_p99_s": 1.0, "lag_max_s": 9.0,
        "lag_samples": 100, "oldest_pending_s": 2.5, "rss_mb": {"worker-0": 301.2}, "cpu_s": {"worker-0": 41.3},
    }


def test_a_stalled_minute_shows_no_lag_rather_than_a_good_one():
    line = minute_line(1, seconds=60.0, published=6000, stored=0, lags=[], oldest_pending_s=58.0,
                       rss_mb={}, cpu_s={}, restarts={"worker-1": 1})
    assert (line["lag_p99_s"], line["lag_samples"], line["oldest_pending_s"]) == (None, 0, 58.0)
    assert line["restarts"] == {"worker-1": 1}


def _summary(**overrides):
    arguments = dict(rate=1389.0, minutes=60, seconds=3600.0, published=5_000_400, stored=5_000_400,
                     distinct=5_000_400, lags=[2.0] * 1000, drain_s=3.0,
                     rss_samples={"worker-0": _hour(lambda t: 300.0), "kafka": _hour(lambda t: 100 + t)},
                     restarts={})
    return summary_line(**{**arguments, **overrides})


def test_an_hour_at_ten_times_the_seed_rate_passes():
    result = _summary()
    assert result["seed_target"]["pass"] is True
    assert result["x_seed_rate"] == 10.0
    assert (result["lost"], result["duplicates"]) == (0, 0)
    # The in-memory broker grows with the data it holds; the verdict covers our processes.
    assert result["memory"]["kafka"]["verdict"] == "growing"
    assert result["memory_verdict"] == "flat"


@pytest.mark.parametrize("overrides, failed", [
    ({"stored": 5_000_399, "distinct": 5_000_399}, "lossless"),
    ({"stored": 5_000_401}, "lossless"),  # one CDR stored twice
    ({"lags": [2.0] * 98 + [31.0] * 2}, "lag_ok"),
    ({"minutes": 30, "seconds": 1800.0}, "duration_ok"),
    ({"seconds": 2100.0, "published": 2_917_000, "stored": 2_917_000, "distinct": 2_917_000},
     "duration_ok"),  # an hour asked for, stopped at minute 35
    ({"published": 400_000, "stored": 400_000, "distinct": 400_000}, "rate_ok"),
])
def test_each_missed_requirement_fails_the_seed_target(overrides, failed):
    target = _summary(**overrides)["seed_target"]
    assert target[failed] is False
    assert target["pass"] is False


def test_loss_and_duplicates_are_counted_apart():
    result = _summary(stored=5_000_399, distinct=5_000_398)
    assert (result["lost"], result["duplicates"]) == (2, 1)


def test_a_leaking_worker_names_itself_in_the_verdict():
    result = _summary(rss_samples={"worker-1": _hour(lambda t: 200 + 50 * t / 3600)})
    assert result["memory_verdict"] == "growing: worker-1"
