"""The replay-test report: metrics of one replay against thresholds, written as report.json (everything),
summary.txt (a few lines for a person or a CI log) and report.png (where things differ, over bag time).

Every failure names where it happened: the chunk (its stamp, and seconds into the bag) and the step.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml

from deploy.bags import metrics
from deploy.bags.thresholds import Thresholds
from deploy.control.chunks import ChunkExecutorConfig
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError

# Trips a chunk's content causes. Speed and stale-chunk trips are reported, not gated: gaps between the
# recorded chunks' arrivals (a loaded recording machine) cause them as much as the checkpoint does.
GATED_TRIPS = ("workspace", "orientation", "nan_reference")



def controller_configs(path: str | Path) -> tuple[ChunkExecutorConfig, SafetyConfig]:
    """The chunks.* and safety.* parameters of a controller params file (config/controller_<robot>.yaml)."""
    path = Path(path)
    try:
        sections = yaml.safe_load(path.read_text())
        params = next(iter(sections.values()))["ros__parameters"]
        chunks = {k[len("chunks."):]: v for k, v in params.items() if k.startswith("chunks.")}
        safety = {k[len("safety."):]: tuple(v) if isinstance(v, list) else v
                  for k, v in params.items() if k.startswith("safety.")}
        return ChunkExecutorConfig(**chunks), SafetyConfig(**safety)
    except ConfigError as error:
        raise ConfigError(f"controller config '{path}': {error}") from None
    except (OSError, yaml.YAMLError, AttributeError, KeyError, StopIteration, TypeError) as error:
        raise ConfigError(f"controller config '{path}': {type(error).__name__}: {error}") from None


@dataclasses.dataclass
class ReplayTestResult:
    report: dict  # what report.json holds
    failures: list[str]
    differences: metrics.Differences
    replayed: metrics.Execution
    recorded: metrics.Execution | None
    latency_stamps_ns: np.ndarray  # replayed chunks' stamps, and their inference latencies [s]
    latencies_s: np.ndarray
    start_ns: int  # the bag's first log time: "seconds into the bag" count from here

    @property
    def outcome(self) -> str:
        """"failed" (a threshold crossed), "dry run" (the bag had no chunks: nothing compared, the rest within
        thresholds) or "passed"."""
        return "failed" if self.failures else "dry run" if not self.report["chunks"]["recorded"] else "passed"

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def _where(start_ns: int):
    return lambda stamp_ns: f"chunk stamped {stamp_ns} ns ({(stamp_ns - start_ns) * 1e-9:.3f} s into the bag)"


def evaluate(*, start_ns: int, recorded: list[metrics.TimedChunk], replayed: list[metrics.TimedChunk],
             rejected: list[str], skipped_sets: dict[str, int], thresholds: Thresholds,
             executor_config: ChunkExecutorConfig, safety_config: SafetyConfig, model,
             info: dict) -> ReplayTestResult:
    """All metrics and the failures against `thresholds`; `info` (bag, policy, ...) is copied into the report."""
    at = _where(start_ns)
    replayed = sorted(replayed, key=lambda c: c.stamp_ns)
    stamps_ns = np.array([c.stamp_ns for c in replayed], dtype=np.int64)
    diff = metrics.differences({c.stamp_ns: c.chunk for c in recorded}, {c.stamp_ns: c.chunk for c in replayed})
    latencies = np.array([c.arrival_s - c.chunk.stamp_s for c in replayed])
    execution = metrics.execute(replayed, executor_config)
    baseline = metrics.execute(recorded, executor_config) if recorded else None
    rejected = list(rejected) + list(execution.rejected)
    failures: list[str] = []
    report = {**info, "thresholds": dataclasses.asdict(thresholds),
              "observation_sets": {"replayed": len(replayed), "left_out": skipped_sets},
              "chunks": {"recorded": len(recorded), "replayed": len(replayed), "matched": len(diff.stamps_ns),
                         "rejected": rejected},
              "difference": _difference(diff, len(recorded), skipped_sets, thresholds, at, failures),
              "latency_s": _latency(recorded, latencies, stamps_ns, thresholds, at, failures),
              "smoothness": _smoothness(execution, baseline, thresholds, at, failures),
              "safety": _safety(execution, replayed, len(rejected), safety_config, model, thresholds, at, failures)}
    result = ReplayTestResult(report, failures, diff, execution, baseline, stamps_ns, latencies, start_ns)
    report["outcome"], report["passed"], report["failures"] = result.outcome, result.passed, failures
    return result


def _difference(diff: metrics.Differences, n_recorded: int, skipped_sets, thresholds: Thresholds, at,
                failures: list[str]) -> dict:
    section: dict = {"stamps_ns": list(diff.stamps_ns)}
    for name, values, limit in (("position_m", diff.position_m, thresholds.max_position_diff_m),
                                ("rotation_rad", diff.rotation_rad, thresholds.max_rotation_diff_rad),
                                ("gripper_m", diff.gripper_m, thresholds.max_gripper_diff_m)):
        if values.size == 0:
            continue
        chunk, step = np.unravel_index(int(np.argmax(values)), values.shape)
        worst = {"value": float(values[chunk, step]), "stamp_ns": diff.stamps_ns[chunk], "step": int(step)}
        section[name] = {"max": float(values.max()), "mean": float(values.mean()), "worst": worst,
                         "max_per_step": values.max(axis=0).tolist(), "max_per_chunk": values.max(axis=1).tolist()}
        if limit is not None and worst["value"] > limit:
            failures.append(f"{name} difference {worst['value']:.4g} > {limit:g} at step {step} of "
                            f"{at(worst['stamp_ns'])}")
    if n_recorded and thresholds.min_matched_fraction is not None:
        if len(diff.stamps_ns) < thresholds.min_matched_fraction * n_recorded:
            failures.append(f"only {len(diff.stamps_ns)} of the bag's {n_recorded} chunks were replayed and "
                            f"compared (< {thresholds.min_matched_fraction:.0%}; left out: {skipped_sets or 'none'})")
    return section


def _latency(recorded, latencies: np.ndarray, stamps_ns: np.ndarray, thresholds: Thresholds, at,
             failures: list[str]) -> dict:
    section = {"recorded": metrics.percentiles([c.arrival_s - c.chunk.stamp_s for c in recorded]),
               "replayed": metrics.percentiles(latencies)}
    limit = thresholds.max_latency_s
    if limit is not None and latencies.size and section["replayed"]["p99"] > limit:
        worst = int(np.argmax(latencies))
        failures.append(f"inference latency p99 {section['replayed']['p99']:.3f} s > {limit:g} s "
                        f"(worst {latencies[worst]:.3f} s, {at(int(stamps_ns[worst]))})")
    return section


def _smoothness(execution: metrics.Execution, baseline: metrics.Execution | None, thresholds: Thresholds, at,
                failures: list[str]) -> dict:
    jumps = metrics.acceleration_jumps(execution)
    section: dict = {"units": "m/s^2", "splices": int(np.isfinite(jumps).sum()), "p50": None, "max": None}
    if np.isfinite(jumps).any():
        worst = int(np.nanargmax(jumps))
        section.update(p50=float(np.nanmedian(jumps)), max=float(jumps[worst]),
                       worst_stamp_ns=execution.splice_stamps_ns[worst])
    if baseline is not None:
        base = metrics.acceleration_jumps(baseline)
        section["recorded_max"] = float(np.nanmax(base)) if np.isfinite(base).any() else None
    limit = thresholds.max_accel_jump_m_s2
    if limit is not None and section["max"] is not None and section["max"] > limit:
        failures.append(f"acceleration jump {section['max']:.3g} m/s² > {limit:g} m/s² at the splice of "
                        f"{at(section['worst_stamp_ns'])}")
    return section


def _safety(execution: metrics.Execution, replayed, n_rejected: int, config: SafetyConfig, model,
            thresholds: Thresholds, at, failures: list[str]) -> dict:
    trips, events = metrics.safety_events(execution, [c.arrival_s for c in replayed], config, model)
    gated = sum(trips.get(reason, 0) for reason in GATED_TRIPS) + n_rejected
    if thresholds.max_safety_trips is not None and gated > thresholds.max_safety_trips:
        first = next((e for e in events if e.reason in GATED_TRIPS), None)
        where = f"; first: {first.reason} during the {at(first.chunk_stamp_ns)}" if first else ""
        failures.append(f"{gated} safety trips and rejected chunks > {thresholds.max_safety_trips:g}{where}")
    return {"trips": trips, "gated": gated,
            "events": [{"time_s": e.time_s, "reason": e.reason, "chunk_stamp_ns": e.chunk_stamp_ns}
                       for e in events[:100]]}


def summary(result: ReplayTestResult) -> str:
    r = result.report
    lines = [f"replay-test {result.outcome.upper()}: {r.get('policy', '')} on {r.get('bag', '')}"]
    if r["chunks"]["recorded"]:
        lines.append(f"chunks: {r['chunks']['replayed']} replayed, {r['chunks']['matched']} of "
                     f"{r['chunks']['recorded']} recorded compared")
    else:
        lines.append(f"chunks: {r['chunks']['replayed']} replayed; NOTHING COMPARED: the bag has no "
                     f"{r.get('chunk_topic', 'chunk topic')} to compare them with (latency, smoothness and safety "
                     "below are the checkpoint's own on the recorded observations)")
    for name in ("position_m", "rotation_rad", "gripper_m"):
        if name in r["difference"]:
            d = r["difference"][name]
            lines.append(f"difference {name}: max {d['max']:.4g} (step {d['worst']['step']} of chunk "
                         f"{d['worst']['stamp_ns']}), mean {d['mean']:.3g}")
    for kind, stats in r["latency_s"].items():
        if stats.get("count"):
            lines.append(f"latency {kind}: p50 {stats['p50'] * 1e3:.1f} ms, p99 {stats['p99'] * 1e3:.1f} ms")
    s = r["smoothness"]
    if s["max"] is not None:
        lines.append(f"acceleration jump at splices: p50 {s['p50']:.3g}, max {s['max']:.3g} m/s²"
                     + (f" (recorded chunks: max {s['recorded_max']:.3g})" if s.get("recorded_max") else ""))
    lines.append(f"safety trips: {r['safety']['trips'] or 'none'}")
    lines += [f"FAIL: {failure}" for failure in result.failures]
    return "\n".join(lines) + "\n"


def write(result: ReplayTestResult, directory: str | Path) -> Path:
    """report.json, summary.txt and report.png into `directory`; -> the directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(result.report, indent=2))
    (directory / "summary.txt").write_text(summary(result))
    seconds = lambda stamps_ns: (np.asarray(stamps_ns, dtype=float) - result.start_ns) * 1e-9  # noqa: E731
    figure, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    diff = result.differences
    if diff.stamps_ns:
        axes[0].plot(seconds(diff.stamps_ns), 1e3 * diff.position_m.max(axis=1), "o-", label="position [mm]")
        axes[0].plot(seconds(diff.stamps_ns), 1e3 * diff.gripper_m.max(axis=1), "s-", label="gripper [mm]")
        limit = result.report["thresholds"]["max_position_diff_m"]
        if limit is not None:
            axes[0].axhline(1e3 * limit, color="r", linestyle="--", label="position threshold")
        axes[0].legend(loc="upper right")
    axes[0].set_ylabel("max difference per chunk")
    axes[0].set_title("replayed vs recorded chunks (matched by stamp)" if diff.stamps_ns else
                      "no recorded chunks to compare with")
    start_s, executed = result.start_ns * 1e-9, result.replayed
    if result.recorded is not None:  # what the controller would execute differently, after blending
        recorded_xyz = np.stack([np.interp(executed.times_s, result.recorded.times_s, result.recorded.reference[:, k])
                                 for k in range(3)], axis=1)
        axes[1].plot(executed.times_s - start_s, 1e3 * np.linalg.norm(executed.reference[:, :3] - recorded_xyz,
                                                                      axis=1))
        axes[1].set_ylabel("|executed TCP reference\nreplayed - recorded| [mm]")
    else:
        for k, axis in enumerate("xyz"):
            axes[1].plot(executed.times_s - start_s, 1e3 * (executed.reference[:, k] - executed.reference[0, k]),
                         label=axis)
        axes[1].set_ylabel("executed TCP reference\nfrom its start [mm]")
        axes[1].legend(loc="upper right")
    for tick in executed.splice_ticks:
        axes[1].axvline(executed.times_s[tick] - start_s, color="0.85", linewidth=0.5)
    axes[2].plot(seconds(result.latency_stamps_ns), 1e3 * result.latencies_s, ".-")
    axes[2].set_ylabel("replayed inference latency [ms]")
    axes[2].set_xlabel("bag time [s]")
    title = {"passed": "PASSED", "dry run": "DRY RUN: nothing compared"}.get(result.outcome)
    figure.suptitle((title or "FAILED: " + result.failures[0])[:120], fontsize="small")
    figure.tight_layout()
    figure.savefig(directory / "report.png", dpi=80)
    plt.close(figure)
    return directory


__all__ = ["GATED_TRIPS", "ReplayTestResult", "controller_configs", "evaluate", "summary", "write"]
