"""slaplan's arrival-burstiness fit against simulation: on a fixed cluster under Poisson
arrivals and under Gamma arrivals with CV 2 (squared CV 4), the fitted squared CV ranks
them and their ratio is near the true 4."""

from __future__ import annotations

import re
import statistics

import pytest

from planlab.runner import run_scenario
from scenario import load_scenario

TEXT = """
name: burstiness-fit
seed: {seed}
duration: 12m
model:
  analytic: {{model: llama-3.1-8b, gpu: h200, dtype: fp8, tp: 1}}
cluster:
  prefill: {{replicas: 3, startup: 60s}}
  decode: {{replicas: 2, startup: 60s}}
workload:
  arrival: {arrival}
  isl: {{dist: lognormal, mean: 3000, cv: 0.5, max: 16000}}
  osl: {{dist: lognormal, mean: 150, cv: 0.5, max: 2000}}
sla: {{ttft_ms: 400, itl_ms: 20, target_attainment: 0.99}}
planner: {{policy: slaplan, interval: 60s, predictor: constant, max_gpu_budget: 32}}
"""
FIT = re.compile(r"arrival burstiness CV\^2 [\d.]+ -> ([\d.]+)")


def fitted_cv2(tmp_path, arrival: str, seed: int) -> float:
    path = tmp_path / f"fit-{seed}.yaml"
    path.write_text(TEXT.format(seed=seed, arrival=arrival))
    out = run_scenario(load_scenario(path), write=False)
    fits = [
        float(m.group(1))
        for rec in out.result.records
        for line in rec.decision.arithmetic
        if (m := FIT.search(line))
    ]
    assert len(fits) >= 5, "too few settled windows to fit on"
    return statistics.median(fits[-5:])


@pytest.mark.slow  # two 12-minute simulations, about 10 s
def test_burstiness_fit_ranks_poisson_and_gamma_near_their_true_ratio(tmp_path):
    poisson = fitted_cv2(tmp_path, "{process: poisson, rate: 25}", 1)
    gamma = fitted_cv2(tmp_path, "{process: gamma, rate: 25, cv: 2}", 2)
    assert poisson <= 1.2  # Poisson is CV^2 1: the fit does not call it bursty
    assert 2.0 <= gamma / poisson <= 8.0  # the true ratio is 4
