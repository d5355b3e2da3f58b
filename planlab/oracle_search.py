"""The `oracle-sla` search: knowing the whole workload, the per-interval replica schedule per
role with the fewest GPU-hours found whose simulated joint attainment meets the SLA target.

Every candidate is checked by a full simulation (`planlab.runner.run_scenario` with the
`oracle-sla` policy replaying it), so what the search reports is what the simulator did.
The search, deterministic for given inputs and evaluation cap:

1. **Ladder.** The throughput oracle's per-interval need (`planner.policies.oracle`: the
   fewest replicas whose SLA-feasible throughput covers each interval's actual demand) at a
   ladder of utilisations (1, 0.8, ... 0.3): the same known future with uniform headroom.
   The cheapest rung that meets the target is the incumbent.
2. **Add** (when no rung meets it): one more replica of a role around the intervals where
   the misses (by arrival time) concentrate, the worst first, then the next ones, and a
   wider window once all were tried; the candidate that removes the most misses per
   GPU-hour is kept.
3. **Remove.** One replica less over a run of intervals with the same count (then over one
   interval), largest saving first, for each role; each candidate that still meets the
   target is feasible; the feasible ones of a batch are tried together, else the cheapest
   alone is kept. A move rejected once is not tried again.

Schedules are kept within the GPU budget (checked on what the policy asks for at every
tick, one startup ahead) and never below min replicas. The search stops when no move is
left, at its time budget or at its evaluation cap, and says which.

Candidates of one step are simulated through `parallel_map`, which takes any executor with
`concurrent.futures.Executor.map` semantics (a process pool; a Dask
`Client.get_executor()`), or none (inline).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import ConfigError
from planner.policies.oracle import OraclePolicy
from planner.policies.oracle_sla import Schedule, desired_series
from planner.types import ROLES, PlannerConfig
from scenario import Scenario
from scenario.workload import generate

log = logging.getLogger(__name__)

LADDER = (1.0, 0.8, 0.65, 0.5, 0.4, 0.3)
DEFAULT_BUDGET_S = 600.0
POLICY = "oracle-sla"

# progress(fraction done, one line of text)
Progress = Callable[[float, str], None]


def parallel_map(fn: Callable[[Any], Any], items: Iterable[Any], executor: Any = None) -> list:
    """[fn(x) for x in items], in order, through `executor.map` when one is given (any
    object with concurrent.futures semantics: a ProcessPoolExecutor, Dask's
    `Client.get_executor()`); fn must then be picklable (a module-level function or a
    functools.partial of one)."""
    items = list(items)
    if executor is None or len(items) <= 1:
        return [fn(x) for x in items]
    return list(executor.map(fn, items))


# --- one candidate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """A schedule and what its simulation gave: joint attainment, GPU-hours, and the
    requests, TTFT misses and TPOT (ITL) misses per interval of arrival."""

    schedule: Schedule
    joint_attainment: float
    gpu_hours: float
    target: float
    requests: tuple[int, ...] = ()
    ttft_misses: tuple[int, ...] = ()
    itl_misses: tuple[int, ...] = ()

    @property
    def meets_target(self) -> bool:
        return self.joint_attainment >= self.target

    @property
    def misses(self) -> tuple[int, ...]:
        """Requests missing the joint SLA, per interval (a request missing both counts once
        per SLA: the per-role signals are what the add step uses)."""
        return tuple(a + b for a, b in zip(self.ttft_misses, self.itl_misses, strict=True))


def with_schedule(scenario: Scenario, schedule: Schedule) -> Scenario:
    """The scenario run by the oracle-sla policy replaying `schedule`."""
    options = dict(scenario.planner.options)
    options["schedule"] = schedule.to_dict()
    planner = dataclasses.replace(scenario.planner, policy=POLICY, options=options)
    return dataclasses.replace(scenario, planner=planner)


def per_interval(requests, interval_s: float, n: int, sla) -> dict[str, tuple[int, ...]]:
    """Finished requests and their TTFT / TPOT misses, by interval of arrival (the same
    rules as planlab.results.compute_summary: a failed request misses both)."""
    status = requests["status"].astype(str).to_numpy()
    ok = status == "ok"
    finished = ok | (status == "failed")
    ttft = requests["ttft_ms"].to_numpy(dtype=float)
    tpot = requests["tpot_ms"].to_numpy(dtype=float)
    osl = requests["osl"].to_numpy(dtype=float)
    ttft_miss = finished & ~(ok & (ttft <= sla.ttft_ms))
    no_gap = (osl <= 1) | np.isnan(tpot)
    itl_miss = finished & ~(ok & (no_gap | (tpot <= sla.itl_ms)))
    k = np.minimum((requests["arrival_s"].to_numpy(dtype=float) // interval_s).astype(int), n - 1)

    def count(mask: np.ndarray) -> tuple[int, ...]:
        return tuple(int(x) for x in np.bincount(k[mask], minlength=n))

    return {
        "requests": count(finished),
        "ttft_misses": count(ttft_miss),
        "itl_misses": count(itl_miss),
    }


def evaluate(scenario: Scenario, schedule: Schedule) -> Evaluation:
    """Simulate `scenario` under `schedule` (in a worker process when run in parallel)."""
    from planlab.runner import requests_frame, run_scenario

    outcome = run_scenario(with_schedule(scenario, schedule), write=False)
    att = outcome.summary["attainment"]
    counts = per_interval(
        requests_frame(outcome.result), schedule.interval_s, len(schedule.prefill), scenario.sla
    )
    return Evaluation(
        schedule=schedule,
        joint_attainment=float(att["joint"] if att["joint"] is not None else 0.0),
        gpu_hours=float(outcome.summary["gpu_hours"]["total"]),
        target=float(scenario.sla.target_attainment),
        **counts,
    )


# --- schedules --------------------------------------------------------------------------------


def throughput_schedule(
    scenario: Scenario, cfg: PlannerConfig, profile, requests, utilisation: float
) -> Schedule:
    """The throughput oracle's need per interval at `utilisation` of each role's throughput."""
    opts = dict(cfg.options)
    opts.update(prefill_utilisation=utilisation, decode_utilisation=utilisation)
    oracle = OraclePolicy(
        dataclasses.replace(cfg, policy="oracle", options=tuple(sorted(opts.items()))),
        profile,
        requests,
    )
    interval = cfg.interval_s
    n = n_intervals(scenario, cfg)
    need = [oracle.need(j * interval, (j + 1) * interval)[:2] for j in range(n)]
    return Schedule(interval, tuple(p for p, _ in need), tuple(d for _, d in need))


def n_intervals(scenario: Scenario, cfg: PlannerConfig) -> int:
    return max(1, math.ceil(scenario.duration_s / cfg.interval_s - 1e-9))


def within_budget(schedule: Schedule, cfg: PlannerConfig) -> bool:
    if cfg.max_gpu_budget is None:
        return True
    want = desired_series(schedule, cfg)
    return all(
        cfg.gpus(p, d) <= cfg.max_gpu_budget
        for p, d in zip(want["prefill"], want["decode"], strict=True)
    )


def clamp(schedule: Schedule, cfg: PlannerConfig) -> Schedule:
    """Within min/max replicas, then within the GPU budget at every tick: where a tick would
    ask for more than the budget, the role holding more GPUs there gives up one replica in
    the intervals that set its count, until every tick fits."""
    lo, hi = cfg.min_replicas, cfg.max_replicas
    for role in ROLES:
        vals = [max(lo, v if hi is None else min(hi, v)) for v in schedule.role(role)]
        schedule = schedule.replace(role, vals)
    if cfg.max_gpu_budget is None:
        return schedule
    gpus = {"prefill": cfg.gpus_per_prefill, "decode": cfg.gpus_per_decode}
    while not within_budget(schedule, cfg):
        want = desired_series(schedule, cfg)
        k = next(
            i
            for i, (p, d) in enumerate(zip(want["prefill"], want["decode"], strict=True))
            if cfg.gpus(p, d) > cfg.max_gpu_budget
        )
        order = sorted(ROLES, key=lambda r: -want[r][k] * gpus[r])
        for role in order:
            if want[role][k] <= lo:
                continue
            vals = list(schedule.role(role))
            # tick k+1 asks for the most of intervals k+1..k+1+lead: lower each at that max
            top = want[role][k]
            for j in range(k + 1, len(vals)):
                if vals[j] == top and j <= k + 1 + _lead(cfg, role, schedule):
                    vals[j] -= 1
            schedule = schedule.replace(role, vals)
            break
        else:  # both at the minimum, which validate_budget checked fits
            raise ConfigError("min replicas do not fit the GPU budget", key="planner")
    return schedule


def _lead(cfg: PlannerConfig, role: str, schedule: Schedule) -> int:
    from planner.policies.oracle_sla import lead_intervals

    startup = cfg.startup_prefill_s if role == "prefill" else cfg.startup_decode_s
    return lead_intervals(startup, schedule.interval_s)


def _add(schedule: Schedule, role: str, js: Iterable[int], delta: int) -> Schedule:
    vals = list(schedule.role(role))
    for j in js:
        vals[j] += delta
    return schedule.replace(role, vals)


def _runs(values: Sequence[int], floor: int) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of equal values above floor, from interval 1 (interval 0 is
    served by the initial replicas before the first tick)."""
    out, a = [], 1
    for j in range(2, len(values) + 1):
        if j == len(values) or values[j] != values[a]:
            if values[a] > floor:
                out.append((a, j))
            a = j
    return out


# --- the search -------------------------------------------------------------------------------


@dataclass
class SearchResult:
    """The best schedule found (`best`), whether it meets the target, the throughput
    oracle's schedule evaluated the same way, and every evaluation made, in order."""

    best: Evaluation
    meets_target: bool
    throughput: Evaluation
    stopped: str
    elapsed_s: float
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        return len(self.log)

    def to_dict(self) -> dict[str, Any]:
        b, t = self.best, self.throughput
        return {
            "policy": POLICY,
            "meets_target": self.meets_target,
            "target_attainment": b.target,
            "joint_attainment": b.joint_attainment,
            "gpu_hours": b.gpu_hours,
            "schedule": b.schedule.to_dict(),
            "throughput_oracle": {
                "joint_attainment": t.joint_attainment,
                "gpu_hours": t.gpu_hours,
                "schedule": t.schedule.to_dict(),
            },
            "stopped": self.stopped,
            "evaluations": self.evaluations,
            "elapsed_s": self.elapsed_s,
            "log": self.log,
        }


class _Budget:
    def __init__(self, budget_s: float | None, max_evals: int | None, clock: Callable[[], float]):
        self.budget_s, self.max_evals, self.clock = budget_s, max_evals, clock
        self.t0 = clock()
        self.evals = 0

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.t0

    def room(self) -> int:
        """How many more evaluations may start (0: stop)."""
        if self.budget_s is not None and self.elapsed_s >= self.budget_s:
            return 0
        if self.max_evals is None:
            return 1 << 30
        return max(0, self.max_evals - self.evals)

    def why(self) -> str:
        if self.max_evals is not None and self.evals >= self.max_evals:
            return f"evaluation cap ({self.max_evals})"
        return f"time budget ({self.budget_s:g} s)"

    def fraction(self) -> float:
        parts = []
        if self.budget_s:
            parts.append(self.elapsed_s / self.budget_s)
        if self.max_evals:
            parts.append(self.evals / self.max_evals)
        return min(1.0, max(parts)) if parts else 0.0


def search(
    scenario: Scenario,
    *,
    executor: Any = None,
    batch: int = 2,
    budget_s: float | None = DEFAULT_BUDGET_S,
    max_evals: int | None = None,
    profile=None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """The cheapest schedule found for `scenario` (its own seed) that meets its SLA target.

    executor: see parallel_map; batch: candidates simulated per step (the executor's
    workers). budget_s / max_evals bound the search (None: unbounded); a bound reached
    stops it with the best schedule so far. progress(fraction, text) after each step.
    Raises ConfigError for a closed-loop workload (its future cannot be known ahead)."""
    if scenario.workload.closed_loop is not None:
        raise ConfigError(
            "the oracle needs the whole workload in advance (an open-loop or trace "
            "workload); a closed-loop workload cannot be known ahead",
            key="workload",
        )
    if profile is None:
        from planlab.profiles import resolve_model

        profile = resolve_model(scenario.model)
    cfg = dataclasses.replace(scenario.planner_config(), policy=POLICY)
    requests = generate(scenario.workload, scenario.duration_s, scenario.seed)
    bound = _Budget(budget_s, max_evals, clock)
    run = functools.partial(evaluate, scenario)
    history: list[dict[str, Any]] = []
    seen: dict[Schedule, Evaluation] = {}
    batch = max(1, int(batch))

    def evaluate_all(phase: str, moves: list[tuple[str, Schedule]]) -> list[Evaluation | None]:
        """Evaluations of the candidates, in order (None past the bound); cached."""
        room = bound.room()
        todo = [s for _, s in moves[:room] if s not in seen]
        todo = list(dict.fromkeys(todo))
        for ev in parallel_map(run, todo, executor):
            seen[ev.schedule] = ev
        bound.evals += len(todo)
        out = []
        for i, (label, s) in enumerate(moves):
            ev = seen.get(s) if i < room else None
            out.append(ev)
            if ev is not None and s in todo:
                history.append(
                    {
                        "phase": phase,
                        "move": label,
                        "joint_attainment": ev.joint_attainment,
                        "gpu_hours": ev.gpu_hours,
                        "meets_target": ev.meets_target,
                    }
                )
        if progress:
            best_text = (
                f"best {best.gpu_hours:.3f} GPU-h at {best.joint_attainment:.4f}"
                if best is not None
                else "no schedule yet"
            )
            progress(bound.fraction(), f"{phase}: {bound.evals} simulations, {best_text}")
        return out

    def better(a: Evaluation, b: Evaluation | None) -> bool:
        """a before b: meeting the target at fewer GPU-hours, else higher attainment."""
        if b is None:
            return True
        if a.meets_target != b.meets_target:
            return a.meets_target
        if a.meets_target:
            return (a.gpu_hours, -a.joint_attainment) < (b.gpu_hours, -b.joint_attainment)
        return (a.joint_attainment, -a.gpu_hours) > (b.joint_attainment, -b.gpu_hours)

    best: Evaluation | None = None
    # 1. the ladder
    rungs = [
        (f"utilisation {u:g}", clamp(throughput_schedule(scenario, cfg, profile, requests, u), cfg))
        for u in LADDER
    ]
    results = evaluate_all("ladder", rungs)
    throughput = results[0]
    if throughput is None:
        raise ConfigError("a search bound that allows no simulation at all", key="--budget-s")
    for ev in results:
        if ev is not None and better(ev, best):
            best = ev
    stopped = "no move left"

    # 2. add capacity where misses concentrate, until the target is met
    # The worst intervals first, then the next ones; once every interval with misses was
    # tried at a window width, the width doubles.
    width, skip, blocked = 1, 0, False
    while not best.meets_target:
        if bound.room() == 0:
            stopped = bound.why()
            break
        misses = np.asarray(best.misses, dtype=float)
        misses[0] = 0.0
        if misses.sum() <= 0 or width > len(misses):
            stopped = "no added replica raised attainment" + (
                " (the GPU budget or max replicas blocked some)" if blocked else ""
            )
            break
        order = [int(j) for j in np.argsort(-misses, kind="stable") if misses[j] > 0]
        if skip >= len(order):
            width, skip = width * 2, 0
            continue
        worst = order[skip : skip + batch]
        skip += batch
        moves = []
        for j in worst:
            js = range(max(1, j - width), min(len(misses), j + width))
            for role in ROLES:
                cand = _add(best.schedule, role, js, +1)
                if within_budget(cand, cfg) and (
                    cfg.max_replicas is None or max(cand.role(role)) <= cfg.max_replicas
                ):
                    moves.append((f"+1 {role} in intervals {js.start}..{js.stop - 1}", cand))
                else:
                    blocked = True
        if not moves:
            continue
        evs = [e for e in evaluate_all("add", moves) if e is not None]
        gains = [
            (
                (sum(best.misses) - sum(e.misses)) / max(e.gpu_hours - best.gpu_hours, 1e-9),
                e,
            )
            for e in evs
            if e.joint_attainment > best.joint_attainment
        ]
        if not gains:
            continue
        width, skip = 1, 0
        gains.sort(key=lambda g: -g[0])
        met = [e for _, e in gains if e.meets_target]
        best = min(met, key=lambda e: e.gpu_hours) if met else gains[0][1]

    # 3. remove what the target does not need; 4. exchange: a removal that fails, repaired
    # by one replica in the next or the previous interval (or of the other role there)
    if best.meets_target:
        rejected: dict[tuple, None] = {}  # failed removals, in the order they failed
        tried: set[Schedule] = set()
        while bound.room() > 0:
            best, stopped = _remove(best, cfg, batch, rejected, evaluate_all, bound)
            if bound.room() == 0:
                break
            improved = _exchange(best, cfg, batch, rejected, tried, evaluate_all, bound)
            if improved is None:
                stopped = "no move left" if bound.room() > 0 else bound.why()
                break
            best = improved
        else:
            stopped = bound.why()

    result = SearchResult(
        best=best,
        meets_target=best.meets_target,
        throughput=throughput,
        stopped=stopped,
        elapsed_s=bound.elapsed_s,
        log=history,
    )
    log.info(
        "oracle-sla search on %s: %.4f joint attainment for %.3f GPU-hours after %d simulations "
        "(%s)",
        scenario.name,
        best.joint_attainment,
        best.gpu_hours,
        result.evaluations,
        stopped,
    )
    return result


def _gpus(cfg: PlannerConfig, role: str) -> int:
    return cfg.gpus_per_prefill if role == "prefill" else cfg.gpus_per_decode


def _removals(best: Evaluation, cfg: PlannerConfig, rejected) -> list[tuple]:
    """(saving, key, label, candidate) for one replica less over each run of equal counts
    and each interval, per role, largest saving first; moves that ask for the same at every
    tick (no change to simulate) and moves that failed before are left out."""
    moves = {}
    same = desired_series(best.schedule, cfg)
    for level in ("runs", "intervals"):
        for role in ROLES:
            vals = best.schedule.role(role)
            spans = (
                _runs(vals, cfg.min_replicas)
                if level == "runs"
                else [(j, j + 1) for j in range(1, len(vals)) if vals[j] > cfg.min_replicas]
            )
            for a, b in spans:
                key = (role, a, b, vals[a])
                if key in rejected or key in moves:
                    continue
                cand = _add(best.schedule, role, range(a, b), -1)
                if desired_series(cand, cfg) == same:
                    continue
                label = f"-1 {role} in intervals {a}..{b - 1}"
                moves[key] = ((b - a) * _gpus(cfg, role), key, label, cand)
    return sorted(moves.values(), key=lambda m: -m[0])


def _remove(best, cfg, batch, rejected, evaluate_all, bound) -> tuple[Evaluation, str]:
    """Removals until none is left that keeps the target (or the bound is reached)."""
    while True:
        moves = _removals(best, cfg, rejected)
        if not moves:
            return best, "no move left"
        if bound.room() == 0:
            return best, bound.why()
        moves = moves[:batch]
        evs = evaluate_all("remove", [(label, cand) for _, _, label, cand in moves])
        feasible = []
        for (_, key, _, _), ev in zip(moves, evs, strict=True):
            if ev is None:
                continue
            if ev.meets_target and ev.gpu_hours < best.gpu_hours:
                feasible.append((key, ev))
            else:
                rejected[key] = None
        if not feasible:
            continue
        feasible.sort(key=lambda f: f[1].gpu_hours)
        chosen = feasible[0][1]
        if len(feasible) > 1 and bound.room() > 0:
            combo = best.schedule
            for (role, a, b, _), _ in feasible:
                combo = _add(combo, role, range(a, b), -1)
            combo = clamp(combo, cfg)
            (ev,) = evaluate_all("remove", [("the feasible moves together", combo)])
            if ev is not None and ev.meets_target and ev.gpu_hours < chosen.gpu_hours:
                chosen = ev
        best = chosen


def _exchange(best, cfg, batch, rejected, tried, evaluate_all, bound) -> Evaluation | None:
    """A cheaper schedule meeting the target made of a failed removal plus one replica in a
    neighbouring interval (the queue the removal leaves drains there), or None."""
    n = len(best.schedule.prefill)
    cands = []
    for role, a, b, _ in rejected:
        vals = best.schedule.role(role)
        if any(vals[j] <= cfg.min_replicas for j in range(a, b)):
            continue
        cut = _add(best.schedule, role, range(a, b), -1)
        other = "decode" if role == "prefill" else "prefill"
        repairs = [(role, b, f"+1 {role} in interval {b}")] if b < n else []
        if a > 1:
            repairs.append((role, a - 1, f"+1 {role} in interval {a - 1}"))
        repairs.append((other, a, f"+1 {other} in interval {a}"))
        for r_role, j, r_label in repairs:
            cand = clamp(_add(cut, r_role, (j,), +1), cfg)
            if cand in tried or cand == best.schedule or not within_budget(cand, cfg):
                continue
            tried.add(cand)
            cands.append((f"-1 {role} in intervals {a}..{b - 1}, {r_label}", cand))
    for i in range(0, len(cands), batch):
        if bound.room() == 0:
            return None
        evs = evaluate_all("exchange", cands[i : i + batch])
        ok = [e for e in evs if e is not None and e.meets_target and e.gpu_hours < best.gpu_hours]
        if ok:
            return min(ok, key=lambda e: e.gpu_hours)
    return None


def write_oracle(
    result: SearchResult,
    scenario: Scenario,
    out_dir: str | Path,
    run_dir: str | Path | None = None,
    *,
    force: bool = False,
) -> Path:
    """run_dir (default out_dir/run/: the best schedule's run, its scenario.yaml holding the schedule, so
    `planlab run out_dir/run/scenario.yaml` replays it) and out_dir/schedule.json (the
    schedule, the throughput oracle's, whether the target was met and every evaluation).
    force: replace an earlier planlab run in run_dir (planlab.runner.run_scenario's rule)."""
    import json
    import os

    from planlab.runner import run_scenario

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(run_dir) if run_dir is not None else out / "run"
    outcome = run_scenario(with_schedule(scenario, result.best.schedule), out_dir=run, force=force)
    doc = {"scenario": scenario.name, "seed": scenario.seed, **result.to_dict()}
    doc["run_dir"] = str(outcome.out_dir)
    tmp = out / f".schedule.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "schedule.json")
    return run
