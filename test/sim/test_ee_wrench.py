"""The sim's external wrench on the hand (PandaSim.ee_wrench, from MuJoCo's contact forces) on the real scene,
no ROS: zero in free space and for the fingers touching each other, and, with the hand pressed onto the table,
equal to the wrench the arm's joint torques hold against at rest — Jᵀ w = g(q) − τ, which is how Franka
estimates O_F_ext_hat_K from its joint torque sensors."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deploy.control.ik import solve_ik
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim.physics import PandaSim

DOWN = Rotation.from_quat([1.0, 0.0, 0.0, 0.0])  # TCP pointing down
STIFFNESS_NM_PER_RAD, DAMPING_NM_S_PER_RAD = 200.0, 20.0


@pytest.fixture(scope="module")
def model():
    return MujocoRobotModel()


def hold(sim, model, q_target_rad, gripper_width_m, steps):
    """Gravity compensation + a joint PD towards q_target for `steps` ms."""
    for _ in range(steps):
        q, dq, _ = sim.joint_state()
        tau = model.bias_torque(q, dq) + STIFFNESS_NM_PER_RAD * (q_target_rad - q) - DAMPING_NM_S_PER_RAD * dq
        sim.step(tau, gripper_width_m)


def test_free_space_and_fingers_touching_each_other_give_zero(model):
    sim = PandaSim()
    home_q, _, _ = sim.joint_state()
    hold(sim, model, home_q, 0.085, 500)
    assert sim.data.ncon > 0  # the cube resting on the table: contacts that are not the robot's
    np.testing.assert_array_equal(sim.ee_wrench(), np.zeros(6))
    hold(sim, model, home_q, 0.0, 1500)  # fingers closed on nothing: the pads press on each other
    pads = {sim.model.body(sim.model.geom_bodyid[g]).name for g in sim.data.contact.geom.ravel()}
    assert {"left_pad", "right_pad"} <= pads
    np.testing.assert_array_equal(sim.ee_wrench(), np.zeros(6))


@pytest.mark.parametrize("tilt_rad", [0.0, 0.35])
def test_pressing_on_the_table_matches_the_joint_torque_balance(model, tilt_rad):
    sim = PandaSim()
    sim.set_cube_pose(np.array([0.3, 0.35, 0.02]), np.array([0.0, 0.0, 0.0, 1.0]))  # out of the way
    home_q, _, _ = sim.joint_state()
    below_table = solve_ik(model, np.array([0.45, 0.05, -0.02]), (Rotation.from_euler("x", tilt_rad) * DOWN).as_quat(),
                           home_q)
    hold(sim, model, below_table.q_rad, 0.0, 3000)
    q, dq, tau = sim.joint_state()
    assert np.abs(dq).max() < 1e-3, "at rest"

    wrench = sim.ee_wrench()
    held = np.linalg.lstsq(model.jacobian(q).T, model.bias_torque(q, np.zeros(7)) - tau, rcond=None)[0]
    assert wrench[2] > 3.0, wrench  # the table pushes the hand up (tilted: also ~0.6 N m about x)
    np.testing.assert_allclose(wrench[:3], held[:3], atol=0.05)  # [N]
    np.testing.assert_allclose(wrench[3:], held[3:], atol=0.02)  # [N m] about the TCP
