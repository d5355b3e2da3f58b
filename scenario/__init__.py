"""The scenario schema: the typed, validated description of one experiment, below sim/,
live/ and planlab/ (which all read it) and above planner/ (whose registries it checks
against).

- scenario.types: the frozen dataclasses.
- scenario.schema: YAML loading, `--set` overrides, validation with errors that name the
  file, key path and value, and the way back to plain data.
- scenario.workload: the request streams a WorkloadSpec describes (generated arrivals and
  lengths, trace replays), shared by the simulator and the live load driver.
"""

from scenario.schema import (
    DIST_KEYS,
    ON_FAILURE_NAMES,
    ROLE_NAMES,
    ROUTER_NAMES,
    SHAPE_KEYS,
    apply_override,
    load_scenario,
    parse_duration,
    parse_scenario,
    scenario_to_dict,
)
from scenario.types import (
    AnalyticSpec,
    ArrivalSpec,
    ClosedLoopSpec,
    ClusterSpec,
    FaultSpec,
    KVTransferSpec,
    LengthDist,
    ModelSpec,
    PiecewiseRate,
    PlannerSpec,
    PrometheusSpec,
    RateSchedule,
    RoleSpec,
    Scenario,
    SineRate,
    SLASpec,
    SpikeRate,
    StepRate,
    TraceSpec,
    WorkloadSpec,
)

__all__ = [
    "DIST_KEYS",
    "ON_FAILURE_NAMES",
    "ROLE_NAMES",
    "ROUTER_NAMES",
    "SHAPE_KEYS",
    "AnalyticSpec",
    "ArrivalSpec",
    "ClosedLoopSpec",
    "ClusterSpec",
    "FaultSpec",
    "KVTransferSpec",
    "LengthDist",
    "ModelSpec",
    "PiecewiseRate",
    "PlannerSpec",
    "PrometheusSpec",
    "RateSchedule",
    "RoleSpec",
    "Scenario",
    "SineRate",
    "SLASpec",
    "SpikeRate",
    "StepRate",
    "TraceSpec",
    "WorkloadSpec",
    "apply_override",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "scenario_to_dict",
]
