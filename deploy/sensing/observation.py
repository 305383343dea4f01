"""Observation assembly: the latest sample of each input with its stamp, and a verdict on freshness.

The policy never runs on a stale or missing input: `assemble` returns no observation and a reason such as
"stale: camera wrist 412 ms old" instead.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any

from deploy.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Sample:
    stamp_s: float
    value: Any


@dataclasses.dataclass(frozen=True)
class Observation:
    """What a policy sees: named inputs, each with its own stamp; `stamp_s` is the reference input's stamp."""

    stamp_s: float
    values: dict[str, Any]
    stamps_s: dict[str, float]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


class ObservationAssembler:
    """Thread-safe latest-sample store; subscription callbacks `update`, the inference worker `assemble`s."""

    def __init__(self, max_age_s: dict[str, float], reference_key: str):
        if reference_key not in max_age_s:
            raise ConfigError(f"reference input '{reference_key}' is not one of the inputs {sorted(max_age_s)}")
        bad = {k: v for k, v in max_age_s.items() if not v > 0}
        if bad:
            raise ConfigError(f"max age must be > 0 s, got {bad}")
        self._max_age_s = dict(max_age_s)
        self._reference_key = reference_key
        self._latest: dict[str, Sample] = {}
        self._lock = threading.Lock()
        self.out_of_order_drops = 0

    def update(self, key: str, stamp_s: float, value: Any) -> bool:
        """Store a sample; a sample older than the one held is dropped (returns False)."""
        with self._lock:
            held = self._latest.get(key)
            if held is not None and stamp_s < held.stamp_s:
                self.out_of_order_drops += 1
                return False
            self._latest[key] = Sample(stamp_s, value)
            return True

    def assemble(self, now_s: float) -> tuple[Observation | None, str]:
        """-> (observation, "ok") or (None, "<missing|stale>: <input> ...") naming every bad input."""
        with self._lock:
            latest = dict(self._latest)
        problems = []
        for key, max_age_s in self._max_age_s.items():
            sample = latest.get(key)
            if sample is None:
                problems.append(f"missing: {key}")
            elif now_s - sample.stamp_s > max_age_s:
                problems.append(f"stale: {key} {1000 * (now_s - sample.stamp_s):.0f} ms old")
        if problems:
            return None, "; ".join(problems)
        return Observation(
            stamp_s=latest[self._reference_key].stamp_s,
            values={k: latest[k].value for k in self._max_age_s},
            stamps_s={k: latest[k].stamp_s for k in self._max_age_s},
        ), "ok"
