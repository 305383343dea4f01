"""Episode plumbing without ROS: the expert pushes the cube home on the real sim, homing paths, BC labels,
episode end rules, the latest-value store."""
import numpy as np
import pytest

from deploy.control.chunks import CARTESIAN, Chunk, ChunkExecutor, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedance, CartesianImpedanceConfig
from deploy.errors import ConfigError
from deploy.learning.episodes import (HOMING_CLEARANCE_Z_M, START_TCP_XYZ_M, EpisodeClock, EpisodeConfig,
                                      LatestValues, chunk_labels, commanded_chunk_labels, console_line, due_action,
                                      homing_actions, status_line)
from deploy.policies.expert import PushExpert, walk
from deploy.robots.registry import make_model
from deploy.sensing.observation import Observation
from deploy.sim import scene
from deploy.sim.physics import PandaSim


def run_expert(seed: int, max_s: float = 25.0) -> tuple[bool, float]:
    """The expert through the real chunk executor + impedance law on the MuJoCo Panda (1 kHz, in process)."""
    model, sim, expert = make_model("sim"), PandaSim(), PushExpert()
    sim.reset(seed)
    executor = ChunkExecutor(ChunkExecutorConfig(strategy="temporal_ensemble", interpolation="cubic"), CARTESIAN)
    impedance = CartesianImpedance(CartesianImpedanceConfig(add_gravity=True))
    for tick in range(int(max_s * 1000)):
        t, (q, dq, _) = sim.time_s, sim.joint_state()
        if tick % 100 == 0:  # the policy node's 10 Hz
            if sim.success():
                return True, t
            position, quat = model.ee_pose(q)
            cube_position, cube_quat = sim.cube_pose()
            observation = Observation(t, {"ee_pose": np.r_[position, quat], "gripper_width": np.array([0.0]),
                                          "cube_pose": np.r_[cube_position, cube_quat]}, {})
            executor.submit(Chunk(t, expert.metadata.dt_s * np.arange(1, 17), expert.predict_chunk(observation)), t)
        reference = executor.sample(t)
        tau = impedance.compute(q, dq, reference[:3], reference[3:7], model, 0.001)
        sim.step(tau, reference[7])
    return False, max_s


@pytest.mark.parametrize("seed", [3, 11])
def test_the_expert_pushes_the_cube_onto_the_goal(seed):
    succeeded, seconds = run_expert(seed)
    assert succeeded, f"seed {seed}: cube not on the goal after {seconds} s"


def test_expert_chunks_walk_from_the_tcp_at_the_set_speed():
    expert = PushExpert()
    tcp, cube = np.array([0.45, 0.0, 0.25]), np.array([0.5, -0.1, 0.02, 0, 0, 0, 1])
    actions = expert.predict_chunk(Observation(0.0, {"ee_pose": np.r_[tcp, 1, 0, 0, 0], "cube_pose": cube,
                                                     "gripper_width": np.zeros(1)}, {}))
    steps = np.linalg.norm(np.diff(np.vstack([tcp, actions[:, :3]]), axis=0), axis=1)
    assert actions.shape == (16, 8)
    np.testing.assert_allclose(steps, expert.config.travel_speed_m_s * expert.metadata.dt_s, atol=1e-9)
    _, contact = expert.line(cube)
    assert np.linalg.norm(contact[:2] - cube[:2]) == pytest.approx(expert.config.contact_offset_m)
    assert np.dot(scene.GOAL_CENTER_M - cube[:2], cube[:2] - contact[:2]) > 0  # behind the cube, seen from the goal


def test_walk_stops_at_the_end_of_the_path():
    path = np.array([[0.0, 0, 0], [0.1, 0, 0], [0.1, 0.1, 0]])
    points = walk(path, np.array([0.05, 0.15, 0.5]))
    np.testing.assert_allclose(points, [[0.05, 0, 0], [0.1, 0.05, 0], [0.1, 0.1, 0]])


def test_homing_rises_before_travelling_and_ends_at_the_start_pose():
    actions = homing_actions(np.array([0.55, 0.15, 0.03]), dt_s=0.05, speed_m_s=0.2, gripper_width_m=0.0)
    np.testing.assert_allclose(actions[-1, :3], START_TCP_XYZ_M)
    rising = actions[actions[:, 2] < HOMING_CLEARANCE_Z_M - 1e-9]
    np.testing.assert_allclose(rising[:, :2], np.tile([0.55, 0.15], (len(rising), 1)))  # straight up first
    assert np.linalg.norm(np.diff(actions[:, :3], axis=0), axis=1).max() <= 0.2 * 0.05 + 1e-9


def test_chunk_labels_are_the_executed_actions_at_the_next_chunk_times():
    stamps = np.array([0.0, 0.05, 0.15, 0.2])  # one step came late
    executed = np.stack([10 * stamps, -stamps], axis=1)  # (T, A=2): linear in time
    labels = chunk_labels(stamps, executed, dt_s=0.05, horizon=3, quat=None)
    np.testing.assert_allclose(labels[0, :, 0], [0.5, 1.0, 1.5])  # 0.10 s interpolated between logged steps
    np.testing.assert_allclose(labels[2, :, 0], [2.0, 2.0, 2.0])  # past the end: the last action held
    quat_labels = chunk_labels(stamps, np.tile([0.0, 0, 0, 1.0, 0, 0, 0], (4, 1)) * [1, 1, 1, 2, 2, 2, 2], 0.05, 2)
    np.testing.assert_allclose(np.linalg.norm(quat_labels[..., 3:7], axis=-1), 1.0)


def test_episode_clock_needs_held_success_and_times_out():
    clock = EpisodeClock(EpisodeConfig(timeout_s=10.0, success_hold_s=0.3), start_s=100.0)
    assert clock.update(101.0, True) is None
    assert clock.update(101.2, False) is None  # success flickered off: the hold starts over
    assert clock.update(101.3, True) is None
    assert clock.update(101.65, True) == "success"
    assert EpisodeClock(EpisodeConfig(timeout_s=10.0), 0.0).update(10.0, False) == "timeout"
    with pytest.raises(ConfigError, match="timeout_s"):
        EpisodeConfig(timeout_s=0)


def test_latest_values_fill_missing_inputs_with_nan_and_check_names():
    latest = LatestValues({"ee_pose": (7,), "success": ()})
    latest.set("success", 1.0)
    latest.set_frame("front", 2.5, np.zeros((4, 4, 3), np.uint8))
    values, frames = latest.snapshot(["front"])
    assert np.isnan(values["ee_pose"]).all() and values["success"] == 1.0
    assert values["stamp_front_s"] == 2.5 and frames["front"].shape == (4, 4, 3)
    with pytest.raises(ConfigError, match="'cube'"):
        latest.set("cube", 0.0)


def test_the_human_action_is_the_point_due_next_and_nan_once_silent():
    chunk = Chunk(10.0, np.array([0.04, 0.08]), np.array([[1.0] * 8, [2.0] * 8]))
    assert due_action(chunk, 10.02, 0.5)[0] == 1.0 and due_action(chunk, 10.05, 0.5)[0] == 2.0
    assert due_action(chunk, 10.5, 0.5)[0] == 2.0  # held just past the end
    assert np.isnan(due_action(chunk, 10.7, 0.5)).all() and np.isnan(due_action(None, 10.0, 0.5)).all()


def test_commanded_labels_skip_the_homing_chunk_and_operator_steps_without_a_chunk():
    """Step 0 still sees the homing chunk (stamped before the episode); at step 2 the operator has authority but
    their first chunk has not arrived: neither is a label. Step 3 is labelled with the operator's chunk."""
    stamps = np.array([10.0, 10.05, 10.1, 10.15])
    k = np.arange(1, 3)[:, None]
    policy_chunk = np.tile(np.array([0.5, 0, 0.1, 0, 0, 0, 1, 0.0]), (4, 2, 1)) + k * [0.01, 0, 0, 0, 0, 0, 0, 0]
    human_chunk = np.full((4, 2, 8), np.nan)
    human_chunk[3] = policy_chunk[3] + [0, 0.05, 0, 0, 0, 0, 0, 0]
    steps = {"stamp_s": stamps, "policy_chunk": policy_chunk,
             "policy_chunk_stamp_s": np.array([8.0, 10.05, 10.05, 10.1]),
             "intervention": np.array([0.0, 0.0, 1.0, 1.0]), "human_chunk": human_chunk,
             "human_chunk_times_s": np.tile([0.02, 0.04], (4, 1)),
             "human_chunk_stamp_s": np.array([np.nan] * 3 + [10.15])}
    usable, labels = commanded_chunk_labels(steps, dt_s=0.05)
    assert usable.tolist() == [False, True, False, True]
    np.testing.assert_allclose(labels[1, :, 0], [0.51, 0.52])  # the policy's chunk, stamped at this step
    np.testing.assert_allclose(labels[3, :, 1], [0.05, 0.05])  # the operator's, its end held past 0.04 s


def test_console_lines_show_authority_deadman_weights_and_rates():
    outcomes = [{"success": True, "seed": 4, "duration_s": 6.25, "intervention_fraction": 0.5},
                {"success": False, "seed": 5, "duration_s": 30.0, "intervention_fraction": 0.0}]
    assert status_line(1, 3.4, None, None, "none", [], 10) == \
        "live episode 1 3 s | authority ? | deadman ? | weights none | no episode done yet"
    assert status_line(3, 12.0, True, True, "ab12cd", outcomes, 10) == (
        "live episode 3 12 s | authority OPERATOR | deadman held | weights ab12cd | "
        "last 2: success 50%, intervention 25%")
    assert status_line(3, 12.0, False, False, "ab12cd", outcomes, 1) == (
        "live episode 3 12 s | authority policy | deadman released | weights ab12cd | "
        "last 1: success 0%, intervention 0%")
    assert console_line(outcomes, 10, {}, "ab12cd") == (
        "episode 2 (seed 5): failure in 30.0 s, operator 0% | last 2: success 50%, intervention 25% | no learner | "
        "weights ab12cd")
