"""The robot model the backends use (arm alone) agrees with the sim's own scene to 1e-6, and its dynamics
with MuJoCo's full evaluation — so FK in proprioception and the impedance law see the arm the sim moves."""
import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim import scene
from deploy.sim.physics import PandaSim


def random_configurations(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return scene.HOME_Q_RAD + rng.uniform(-0.5, 0.5, size=(n, 7))


def test_tcp_pose_matches_the_sim_site_pose():
    model, sim = MujocoRobotModel(), PandaSim()
    site = sim.model.site(scene.TCP_SITE).id
    arm_qpos = [sim.model.jnt_qposadr[sim.model.joint(j).id] for j in scene.ARM_JOINTS]
    for q in random_configurations():
        sim.data.qpos[arm_qpos] = q
        mujoco.mj_kinematics(sim.model, sim.data)
        position, quat = model.ee_pose(q)
        np.testing.assert_allclose(position, sim.data.site_xpos[site], atol=1e-6)
        expected = Rotation.from_matrix(sim.data.site_xmat[site].reshape(3, 3))
        assert (Rotation.from_quat(quat) * expected.inv()).magnitude() < 1e-6


def test_cached_dynamics_match_a_fresh_evaluation():
    model = MujocoRobotModel()
    reference = scene.build_robot_model()
    data = mujoco.MjData(reference)
    rng = np.random.default_rng(1)
    for q in random_configurations(5, seed=2):
        dq = rng.normal(0, 1, 7)
        model.jacobian(q)  # fill the cache at q first, as a control tick does
        data.qpos[:7], data.qvel[:] = q, 0.0
        data.qvel[:7] = dq
        mujoco.mj_forward(reference, data)
        np.testing.assert_allclose(model.bias_torque(q, dq), data.qfrc_bias[:7], atol=1e-9)
        full = np.zeros((reference.nv, reference.nv))
        mujoco.mj_fullM(reference, data, full)
        np.testing.assert_allclose(model.mass_matrix(q), full[:7, :7], atol=1e-9)


def test_one_evaluation_per_tick_gives_what_the_four_queries_give():
    """`dynamics` (one MuJoCo evaluation into reused arrays) against the interface's default built from the
    four separate queries, and the TCP Jacobian against MuJoCo's full forward pass."""
    from deploy.robots.base import RobotModel

    model, reference = MujocoRobotModel(), scene.build_robot_model()
    data = mujoco.MjData(reference)
    site = reference.site(scene.TCP_SITE).id
    rng = np.random.default_rng(3)
    for q in random_configurations(5, seed=4):
        dq = rng.normal(0, 1, 7)
        fast = model.dynamics(q, dq)
        fast = {name: getattr(fast, name).copy() for name in ("position_m", "quat_xyzw", "jacobian", "mass_matrix",
                                                               "gravity_nm", "coriolis_nm")}
        default = RobotModel.dynamics(MujocoRobotModel(), q, dq)
        for name, value in fast.items():
            np.testing.assert_allclose(value, getattr(default, name), atol=1e-12, err_msg=name)
        data.qpos[:7], data.qvel[:] = q, 0.0
        mujoco.mj_forward(reference, data)
        jac_pos, jac_rot = np.zeros((3, reference.nv)), np.zeros((3, reference.nv))
        mujoco.mj_jacSite(reference, data, jac_pos, jac_rot, site)
        np.testing.assert_allclose(fast["jacobian"], np.vstack([jac_pos[:, :7], jac_rot[:, :7]]), atol=1e-9)
        np.testing.assert_allclose(fast["gravity_nm"], data.qfrc_bias[:7], atol=1e-9)
