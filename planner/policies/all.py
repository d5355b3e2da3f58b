"""Imports every policy module so each registers itself; one line per policy."""

from planner.policies import dynamo, dynamo_legacy, oracle, oracle_sla, slaplan, static, threshold  # noqa: F401
