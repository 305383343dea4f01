"""Bag-based regression tests in a few lines (pytest, or any test runner):

    from deploy.bags.testing import assert_replay_passes

    def test_v7_still_picks_the_cube(tmp_path):
        assert_replay_passes("bags/pick_cube", "checkpoints/v7", tmp_path, max_position_diff_m=0.01)

It runs `deploy replay-test` (lockstep replay into the policy node, deterministic) and fails with the report's
summary — which names the chunk and step where a threshold was crossed; report.json / report.png stay in the
report directory. Keyword arguments are `deploy.bags.thresholds.Thresholds` fields (None = not checked).
"""
from __future__ import annotations

import os
from pathlib import Path

from deploy.bags import replay_test as _replay_test
from deploy.bags.report import ReplayTestResult, summary
from deploy.bags.thresholds import Thresholds


def replay_test(bag: str | Path, policy: str | Path, report_dir: str | Path, *, domain_id: int | None = None,
                seed: int = 0, qos_override: str | Path | None = None, **thresholds) -> ReplayTestResult:
    """Replay-test `policy` on `bag`; the ROS domain is ROS_DOMAIN_ID, else one derived from the process id
    (so parallel test processes do not hear each other)."""
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID", 101 + os.getpid() % 100))
    return _replay_test.run(bag, policy, report_dir, thresholds=Thresholds(**thresholds), seed=seed,
                            domain_id=domain_id, qos_override=qos_override)


def assert_replay_passes(bag: str | Path, policy: str | Path, report_dir: str | Path, *, dry_run_ok: bool = False,
                         **kwargs) -> ReplayTestResult:
    """`replay_test`, raising AssertionError with the report's summary when a threshold is crossed, or when
    the bag had no chunks to compare with (a dry run) unless `dry_run_ok`."""
    result = replay_test(bag, policy, report_dir, **kwargs)
    if not (result.passed or (dry_run_ok and result.outcome == "dry run")):
        raise AssertionError(f"{summary(result)}report: {report_dir}")
    return result


__all__ = ["assert_replay_passes", "replay_test"]
