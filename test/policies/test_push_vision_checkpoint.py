"""The shipped pixel checkpoint `checkpoints/push_vision`: it reads cameras and proprioception only (never the
privileged cube pose), and on real frames rendered by the sim it outputs a finite chunk over the table that
depends on where the cube is in the picture. Its success rate is measured by `deploy eval` (README)."""
from pathlib import Path

import mujoco
import numpy as np
import pytest

from deploy.control.ik import solve_ik
from deploy.learning.episodes import START_TCP_XYZ_M
from deploy.policies.checkpoint import load_checkpoint
from deploy.policies.expert import TOOL_DOWN_XYZW
from deploy.sensing.observation import Observation
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim import scene
from deploy.sim.physics import PandaSim
from deploy.sim.render import SceneRenderer

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "push_vision"
PROPRIOCEPTION = {"ee_pose", "gripper_width", "joint_positions"}
CAMERA_OUTPUT_PX = 128  # what the sim camera nodes publish (config/sim.yaml)


@pytest.fixture(scope="module")
def policy():
    return load_checkpoint(CHECKPOINT, expected_action_space="cartesian")


def rendered_observation(policy, cube_seed: int) -> Observation:
    """The arm at the episodes' start pose (tool down), the cube placed by `cube_seed`, seen by the policy's
    cameras; gripper closed as in every push episode."""
    sim = PandaSim()
    sim.reset(cube_seed)
    start = solve_ik(MujocoRobotModel(), START_TCP_XYZ_M, TOOL_DOWN_XYZW, scene.HOME_Q_RAD)
    assert start.converged
    sim.data.qpos[:7] = start.q_rad
    mujoco.mj_forward(sim.model, sim.data)
    assert np.allclose(sim.tcp_position_m(), START_TCP_XYZ_M, atol=1e-3)  # the arm joints lead qpos
    renderer = SceneRenderer(sim.model, CAMERA_OUTPUT_PX, CAMERA_OUTPUT_PX)
    try:
        frames = renderer.render(sim.data.qpos.copy())
    finally:
        renderer.close()
    values = {f"camera {name}": frames[name] for name in policy.metadata.image_keys}
    values["ee_pose"] = np.concatenate([sim.tcp_position_m(), TOOL_DOWN_XYZW])
    values["gripper_width"] = np.array([0.0])
    return Observation(stamp_s=0.0, values=values, stamps_s={k: 0.0 for k in values})


def test_the_vision_checkpoint_reads_cameras_and_proprioception_only(policy):
    assert policy.metadata.image_keys and set(policy.metadata.image_keys) <= {"front", "wrist"}
    assert set(policy.metadata.state_keys) <= PROPRIOCEPTION  # in particular no cube_pose
    config = (CHECKPOINT / "config.json").read_text()
    assert "cube_pose" not in config and "/sim/" not in config


def test_on_rendered_frames_the_chunk_is_finite_over_the_table_and_follows_the_cube(policy):
    chunks = [policy.predict_chunk(rendered_observation(policy, seed)) for seed in (1001, 1004)]  # cube x 0.54, 0.45
    for chunk in chunks:
        assert chunk.shape == (policy.metadata.horizon, 8) and np.isfinite(chunk).all()
        assert (0.2 < chunk[:, 0]).all() and (chunk[:, 0] < 0.8).all() and (np.abs(chunk[:, 1]) < 0.4).all()
        assert (-0.01 < chunk[:, 2]).all() and (chunk[:, 2] < 0.5).all()
    # same arm pose, same state: only the pixels differ, so a different chunk means the camera is read (by
    # about a centimetre here: at the start the policy heads for the cube region and corrects as it goes)
    assert np.abs(chunks[0][:, :3] - chunks[1][:, :3]).max() > 0.005
