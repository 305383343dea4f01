"""Damped-least-squares IK on the UR5e (DH) and Panda (MuJoCo) models: reachable poses are solved to tolerance
from a nearby seed, a streamed path stays on its branch, an unreachable pose ends inside the joint limits."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deploy.control.ik import IKConfig, solve_ik
from deploy.control.impedance import PANDA_HOME_Q_RAD
from deploy.errors import ConfigError
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.robots.ur_model import UR5eModel

UR_HOME_Q_RAD = np.array([0.0, -1.57, 1.57, -1.57, -1.57, 0.0])


@pytest.fixture(scope="module", params=["ur5e", "panda"])
def model_and_home(request):
    if request.param == "ur5e":
        return UR5eModel(tcp_offset_m=0.1), UR_HOME_Q_RAD
    return MujocoRobotModel(), np.array(PANDA_HOME_Q_RAD)


def _angle_rad(quat_a, quat_b) -> float:
    return (Rotation.from_quat(quat_a).inv() * Rotation.from_quat(quat_b)).magnitude()


@pytest.mark.parametrize("seed", range(5))
def test_reachable_pose_is_solved_from_a_nearby_seed(model_and_home, seed):
    model, home_rad = model_and_home
    rng = np.random.default_rng(seed)
    goal_q_rad = home_rad + rng.uniform(-0.3, 0.3, len(home_rad))
    target_m, target_xyzw = model.ee_pose(goal_q_rad)
    solution = solve_ik(model, target_m, target_xyzw, home_rad)
    assert solution.converged
    reached_m, reached_xyzw = model.ee_pose(solution.q_rad)
    assert np.linalg.norm(reached_m - target_m) < 1e-5
    assert _angle_rad(reached_xyzw, target_xyzw) < 1e-4
    assert solution.position_error_m == pytest.approx(np.linalg.norm(reached_m - target_m), abs=1e-12)
    limits = model.joint_limits_rad
    assert np.all(solution.q_rad >= limits[:, 0]) and np.all(solution.q_rad <= limits[:, 1])


def test_a_streamed_path_stays_continuous_when_seeded_with_the_last_solution(model_and_home):
    """A 10 cm line at 0.5 mm per tick: every tick converges and joints move only as much as the TCP needs."""
    model, home_rad = model_and_home
    start_m, quat_xyzw = model.ee_pose(home_rad)
    q_rad = home_rad
    steps = []
    for target_m in start_m + np.linspace(0.0, 1.0, 201)[:, None] * np.array([0.06, -0.05, -0.06]):
        solution = solve_ik(model, target_m, quat_xyzw, q_rad)
        assert solution.converged
        steps.append(np.abs(solution.q_rad - q_rad).max())
        q_rad = solution.q_rad
    assert max(steps) < 0.01  # rad per 0.5 mm step: no branch flip


def test_unreachable_pose_gives_the_closest_configuration_within_limits(model_and_home):
    model, home_rad = model_and_home
    start_m, quat_xyzw = model.ee_pose(home_rad)
    far_m = start_m + np.array([0.0, 0.0, 3.0])  # 3 m above: beyond every arm's reach
    solution = solve_ik(model, far_m, quat_xyzw, home_rad, IKConfig(max_iterations=50))
    assert not solution.converged
    assert solution.position_error_m < np.linalg.norm(far_m - start_m) - 0.1  # it did reach towards it
    limits = model.joint_limits_rad
    assert np.all(solution.q_rad >= limits[:, 0]) and np.all(solution.q_rad <= limits[:, 1])
    assert np.all(np.isfinite(solution.q_rad))


@pytest.mark.parametrize("field, value", [("damping", 0.0), ("max_iterations", 0), ("max_step_rad", -1.0)])
def test_config_rejects_bad_values_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        IKConfig(**{field: value})
