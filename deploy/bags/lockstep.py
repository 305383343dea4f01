"""Deterministic replay into the unmodified policy node: one observation set at a time, each answered before
the next, so two replays of a bag with one checkpoint produce identical chunks.

How the policy node (nodes/policy_node.py) is driven: it runs on sim time with trigger "executed_fraction",
which arms exactly one inference per /controller/chunk_status message that reports an exhausted plan with a
new lag (nothing else arms it while such messages keep coming); the next reference sample (e.g.
/proprio/ee_pose) starts that inference, which takes the latest sample of every input. For set k the replay
publishes /clock = T_k (the reference sample's stamp; repeated, it is best-effort), a status with lag k, the
set's other samples, then the reference, and waits for the chunk stamped T_k. The clock stands still while
the policy infers. A status that arrives while an inference of the set is still running arms nothing, so
each set yields exactly one chunk.

Why the chunk comes from exactly set k: messages reach the node in publish order, and one executor pass
handles what is ready in subscription-creation order: /clock and the status (made at startup) before the
inputs, cameras before the TCP pose before joint states (made at configure). So inputs subscribed before the
reference are always in place when it starts the inference; an input subscribed after it (joint states when
the reference is the TCP pose: `PolicyInputs.after_reference`) may not be — for those, every sample set k
replaces is older than the policy's max age at T_k, so an early inference finds it stale and skips, and the
replay sends the set again. Each input of a set is younger than its max age. The policy runs with rtc_prefix
off: its prefix would come from an earlier set's chunk.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
from collections.abc import Collection, Mapping, Sequence

from deploy.errors import ConfigError

POLICY_TRIGGER = "executed_fraction"
ATTEMPTS = 5  # a set is sent this often before the replay gives up
CLOCK_REPEATS = 3  # /clock copies per set: the policy's clock subscription is best-effort
DEFAULT_IMAGE_MAX_AGE_S = 0.3  # the policy's image_max_age_s during a lockstep replay (cameras: not guarded)
DEFAULT_STATE_MAX_AGE_S = 0.1  # its state_max_age_s: also the least spacing of sets with guarded inputs
DEFAULT_PERIOD_S = 0.2  # one set per period when the bag has no chunks to match (the policy's 5 Hz default)
_MARGIN_NS = 1_000_000  # keeps float rounding in the policy's age check away from the boundaries
STAMP_TOLERANCE_NS = 1_000  # a chunk's stamp is its observation's after a trip through float seconds (~0.2 µs)


def matching_stamp(stamp_ns: int, sorted_stamps_ns: Sequence[int]) -> int | None:
    """The stamp in `sorted_stamps_ns` that `stamp_ns` is (within STAMP_TOLERANCE_NS), or None."""
    i = bisect.bisect_left(sorted_stamps_ns, stamp_ns - STAMP_TOLERANCE_NS)
    if i < len(sorted_stamps_ns) and abs(sorted_stamps_ns[i] - stamp_ns) <= STAMP_TOLERANCE_NS:
        return sorted_stamps_ns[i]
    return None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One observation message of the bag, identified by its position among the observation messages."""

    topic: str
    log_ns: int
    stamp_ns: int
    index: int


@dataclasses.dataclass(frozen=True)
class ObservationSet:
    stamp_ns: int  # the reference sample's stamp = the stamp of the chunk the policy answers with
    samples: tuple[Sample, ...]  # the other inputs first, the reference sample last


@dataclasses.dataclass(frozen=True)
class LockstepPlan:
    sets: tuple[ObservationSet, ...]
    skipped: dict[str, int]  # why candidate sets were left out -> how many

    @property
    def indices(self) -> set[int]:
        return {s.index for obs in self.sets for s in obs.samples}


def exhausted_status(set_index: int) -> dict[str, float]:
    """The /controller/chunk_status fields that arm one inference for set `set_index` (0, 1, ...)."""
    return {"lag_s": float(set_index + 1), "committed_steps": 0.0, "steps_remaining": 0.0, "exhausted": 1.0,
            "stiffness_scale": 1.0}


def plan_sets(samples: Sequence[Sample], reference_topic: str, max_age_s: Mapping[str, float],
              guarded: Collection[str] = (), chunk_stamps_ns: Collection[int] = (),
              period_s: float = DEFAULT_PERIOD_S) -> LockstepPlan:
    """The observation sets to replay, from `samples` in log-time order; `max_age_s` maps every input topic
    (the reference included) to the policy's max age for it, `guarded` are the inputs that need the stale guard.

    With `chunk_stamps_ns` (the bag's recorded chunks) a set is built for each reference sample a chunk was
    computed from, so the replayed chunks can be compared with the recorded ones; otherwise one per period.
    A set holds the reference sample and the latest sample of every other input logged before it.
    """
    if reference_topic not in max_age_s:
        raise ConfigError(f"reference topic {reference_topic} is not one of the inputs {sorted(max_age_s)}")
    small = {t: a for t, a in max_age_s.items() if not a * 1e9 > 2 * _MARGIN_NS}
    if small:
        raise ConfigError(f"max age {small} is too small for lockstep replay")
    others = sorted(set(max_age_s) - {reference_topic})
    chunk_stamps, period_ns = sorted(chunk_stamps_ns), round(period_s * 1e9)
    latest: dict[str, Sample] = {}
    candidates: list[tuple[Sample, dict[str, Sample]]] = []
    next_due_ns = None
    for sample in samples:
        if sample.topic != reference_topic:
            latest[sample.topic] = sample
            continue
        if chunk_stamps:
            wanted = matching_stamp(sample.stamp_ns, chunk_stamps) is not None
        else:
            wanted = next_due_ns is None or sample.stamp_ns >= next_due_ns
            next_due_ns = sample.stamp_ns + period_ns if wanted else next_due_ns
        if wanted:
            candidates.append((sample, dict(latest)))
    max_age_ns = {topic: round(age * 1e9) for topic, age in max_age_s.items()}
    sets: list[ObservationSet] = []
    skipped: collections.Counter[str] = collections.Counter()
    for reference, held in candidates:
        if any(topic not in held for topic in others):
            skipped["an input had no message yet"] += 1
            continue
        chosen = tuple(held[topic] for topic in others) + (reference,)
        if any(reference.stamp_ns - s.stamp_ns > max_age_ns[s.topic] - _MARGIN_NS for s in chosen):
            skipped["an input was older than its max age"] += 1
            continue
        if sets and not _separated(sets[-1], chosen, reference.stamp_ns, max_age_ns, guarded):
            skipped["a guarded input would not be stale for the previous set"] += 1
            continue
        sets.append(ObservationSet(reference.stamp_ns, chosen))
    return LockstepPlan(tuple(sets), dict(skipped))


def _separated(previous: ObservationSet, chosen: tuple[Sample, ...], stamp_ns: int, max_age_ns: Mapping[str, int],
               guarded: Collection[str]) -> bool:
    """No input goes back in time (the policy would drop it), and every guarded input replaced since
    `previous` is stale at stamp_ns."""
    before = {s.topic: s for s in previous.samples}
    for sample in chosen:
        old = before[sample.topic]
        if sample.stamp_ns < old.stamp_ns:
            return False
        if sample.topic in guarded and sample.index != old.index and \
                stamp_ns - old.stamp_ns <= max_age_ns[sample.topic] + _MARGIN_NS:
            return False
    return True


__all__ = ["ATTEMPTS", "CLOCK_REPEATS", "DEFAULT_IMAGE_MAX_AGE_S", "DEFAULT_PERIOD_S", "DEFAULT_STATE_MAX_AGE_S",
           "LockstepPlan", "ObservationSet", "POLICY_TRIGGER", "STAMP_TOLERANCE_NS", "Sample", "exhausted_status",
           "matching_stamp", "plan_sets"]
