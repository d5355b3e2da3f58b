"""A two-minute scenario small enough for tests that run the simulator end to end."""

from __future__ import annotations

STEP_RATE = "[[0, 2.0], [50s, 24.0]]"  # a load step that makes dynamo add prefill


def tiny_yaml(
    *,
    seed: int,
    rate: str = STEP_RATE,
    planner: str = "{policy: dynamo, interval: 30s, predictor: constant, max_gpu_budget: 8}",
) -> str:
    return f"""
name: tiny
seed: {seed}
duration: 2m
model:
  analytic: {{model: llama-3.1-8b, gpu: h200, dtype: fp8, tp: 1}}
cluster:
  prefill: {{replicas: 1, gpus_per_replica: 1, startup: 20s}}
  decode: {{replicas: 1, gpus_per_replica: 1, startup: 20s}}
workload:
  arrival: {{process: poisson, rate: {rate}}}
  isl: {{dist: lognormal, mean: 3000, cv: 0.3, max: 16000}}
  osl: {{dist: lognormal, mean: 100, cv: 0.3, max: 1000}}
sla: {{ttft_ms: 200, itl_ms: 20, target_attainment: 0.95}}
planner: {planner}
prometheus: {{scrape_interval: 5s}}
"""
