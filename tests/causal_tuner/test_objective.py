"""Objectives read the window observation the simulator and the live scrapers produce."""

import math

import pytest

from causal_tuner.objective import SLA, Objective

OBS = {
    "goodput_tok_s": 900.0,
    "throughput_tok_s": 1000.0,
    "ttft_p90_ms": 1500.0,
    "tpot_p90_ms": 25.0,
    "ttft_p50_ms": 300.0,
    "tpot_p50_ms": 20.0,
}


def test_goodput_default_and_violation_cost():
    sla = SLA(ttft_ms=1000.0, tpot_ms=30.0)
    assert Objective(sla=sla).reward(OBS) == 900.0  # goodput already excludes late requests
    charged = Objective(sla=sla, violation_cost=250.0)
    assert charged.violated(OBS)  # p90 TTFT 1500 > 1000
    assert charged.reward(OBS) == 650.0
    relaxed = Objective(sla=SLA(ttft_ms=2000.0, tpot_ms=30.0), violation_cost=250.0)
    assert not relaxed.violated(OBS) and relaxed.reward(OBS) == 900.0


def test_throughput_and_latency_kinds():
    assert Objective(kind="throughput").reward(OBS) == 1000.0
    assert Objective(kind="latency", percentile=50, latency_metric="tpot").reward(OBS) == -20.0


def test_empty_window_violates():
    obs = {**OBS, "ttft_p90_ms": math.nan, "tpot_p90_ms": math.nan}
    assert Objective().violated(obs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "speed"}, "objective kind"),
        ({"percentile": 95}, "percentile"),
        ({"violation_cost": -1.0}, "violation_cost"),
        ({"latency_metric": "e2e"}, "latency_metric"),
        ({"sla": (1, 2)}, "sla must be"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Objective(**kwargs)


def test_missing_or_bad_observation_names_the_key():
    with pytest.raises(ValueError, match="lacks 'goodput_tok_s'"):
        Objective().reward({"ttft_p90_ms": 1.0})
    with pytest.raises(ValueError, match="not finite"):
        Objective().reward({**OBS, "goodput_tok_s": math.inf})
