"""The compiled Cartesian torque tick (one numba call) against the general path it replaces, tick by tick.

Two loops on two torque arms of the MuJoCo Panda model see the same samples and the same chunks; one runs the
compiled tick, the other the general Python path (its compiled model handle removed). Every torque, safe
reference, stiffness scale and safety trip must agree, through a chunk that leaves the workspace box, an
operator hold, an e-stop and its release, and stale chunks softening the arm. ROS-free, exact stamps.
"""
import types

import numpy as np
import pytest

from deploy.control import loop as loop_module
from deploy.control.chunks import CARTESIAN, Chunk, ChunkExecutorConfig
from deploy.control.impedance import PANDA_HOME_Q_RAD, CartesianImpedanceConfig
from deploy.control.loop import ControlLoop
from deploy.control.safety import SafetyConfig
from deploy.robots.base import Capability, Robot, RobotState
from deploy.robots.mujoco_model import MujocoRobotModel

PERIOD_S = 0.001
DOWN_XYZW = [1.0, 0.0, 0.0, 0.0]


class ScriptedArm(Robot):
    """A torque robot whose samples follow a fixed joint path (so both loops see identical states)."""

    capabilities = Capability.TORQUE

    def __init__(self):
        self.model = MujocoRobotModel()
        self.seq = 0
        self.sent = []

    def connect(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read_state(self) -> RobotState:
        self.seq += 1
        t = self.seq * PERIOD_S
        q_rad = np.array(PANDA_HOME_Q_RAD) + 0.02 * np.sin(3.0 * t + np.arange(7))
        dq_rad_s = 0.06 * np.cos(3.0 * t + np.arange(7))
        return RobotState(t, q_rad, dq_rad_s, np.zeros(7), 0.04, seq=self.seq)

    def command_torque(self, tau_nm):
        self.sent.append(np.array(tau_nm))
        return self.sent[-1]

    def command_gripper(self, width_m: float) -> float:
        return width_m


@pytest.fixture(autouse=True)
def instant_builds(monkeypatch):
    """Every chunk's plan builds in no time on the loop's clock, so both loops take the same splice lead (it
    follows the measured build time) and splice each chunk at the same tick."""
    monkeypatch.setattr(loop_module, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))


class CountingLoop(ControlLoop):
    compiled_ticks = 0

    def _compiled_tick(self, state, now_s, started_s):
        record = super()._compiled_tick(state, now_s, started_s)
        self.compiled_ticks += record is not None
        return record


def chunk(stamp_s: float, x_m: float, gripper_m: float = 0.04) -> Chunk:
    times_s = 0.05 * np.arange(1, 17)
    positions = np.stack([x_m + 0.1 * times_s, 0.05 * np.sin(4 * times_s), np.full(16, 0.4)], axis=1)
    return Chunk(stamp_s, times_s, np.hstack([positions, np.tile(DOWN_XYZW, (16, 1)), np.full((16, 1), gripper_m)]))


def test_the_compiled_tick_matches_the_general_path_through_trips_hold_estop_and_stale_chunks():
    safety = SafetyConfig(stale_chunk_timeout_s=0.3, soften_ramp_s=0.2, startup_ramp_s=0.2)
    impedance = CartesianImpedanceConfig(add_gravity=True)
    compiled_arm, general_arm = ScriptedArm(), ScriptedArm()
    compiled = CountingLoop(compiled_arm, ChunkExecutorConfig(), impedance, safety)
    general = CountingLoop(general_arm, ChunkExecutorConfig(), impedance, safety)
    general._compiled_model = None
    events = {100: ("chunk", 0.35), 300: ("chunk", 1.3), 500: ("hold",), 600: ("release",), 700: ("chunk", 0.4),
              800: ("estop",), 900: ("reset",), 950: ("chunk", 0.45)}  # then no chunk: stale from ~1250
    for k in range(1600):
        event = events.get(k)
        for loop in (compiled, general):
            if event and event[0] == "chunk":
                loop.offer_chunk(chunk(k * PERIOD_S, event[1], gripper_m=0.02 if k > 600 else 0.04), CARTESIAN)
            elif event and event[0] == "hold":
                loop.safety.hold()
            elif event and event[0] == "release":
                loop.safety.release_hold()
            elif event and event[0] == "estop":
                loop.safety.estop()
            elif event and event[0] == "reset":
                loop.safety.reset_estop()
        a, b = compiled.tick(), general.tick()
        assert (a is None) == (b is None)
        if a is None:
            continue
        np.testing.assert_allclose(a.tau_sent_nm, b.tau_sent_nm, rtol=0, atol=1e-9, err_msg=f"tick {k}")
        np.testing.assert_allclose(a.reference_position_m, b.reference_position_m, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.reference_quat_xyzw, b.reference_quat_xyzw, rtol=0, atol=1e-12)
        assert a.stiffness_scale == b.stiffness_scale and a.gripper_width_cmd_m == b.gripper_width_cmd_m
    assert compiled.safety.trips == general.safety.trips
    assert {"workspace", "speed", "hold", "estop", "stale_chunk"} <= set(compiled.safety.trips)
    assert compiled.compiled_ticks > 1400 and general.compiled_ticks == 0
    assert compiled.last_tick.stiffness_scale < 1.0  # softened: the last chunk went stale
    assert compiled.last_tick.gripper_width_cmd_m == 0.02


@pytest.mark.parametrize("compiled", [True, False])
def test_a_non_finite_sample_is_not_answered_and_poisons_no_state(compiled):
    """A NaN joint reading gets no command (trip "bad_sample"; the robot brakes on it as on a missed tick) and
    leaves the law's filters and the safe reference untouched: the next good sample is answered as before."""
    arm = ScriptedArm()
    loop = CountingLoop(arm, ChunkExecutorConfig(), CartesianImpedanceConfig(add_gravity=True), SafetyConfig())
    if not compiled:
        loop._compiled_model = None
    loop.offer_chunk(chunk(0.0, 0.35), CARTESIAN)
    for _ in range(50):
        loop.tick()
    before = loop.compiled_ticks
    good = arm.read_state

    def nan_sample():
        state = good()
        state.q_rad[2] = np.nan
        return state

    arm.read_state = nan_sample
    sent = len(arm.sent)
    assert loop.tick() is None and len(arm.sent) == sent
    assert loop.safety.trips.get("bad_sample") == 1 and loop.compiled_ticks == before
    assert np.all(np.isfinite(loop.impedance.state))
    arm.read_state = good
    record = loop.tick()
    assert np.all(np.isfinite(record.tau_sent_nm)) and np.all(np.isfinite(record.reference_position_m))
    assert len(arm.sent) == sent + 1
    assert loop.compiled_ticks == before + compiled
