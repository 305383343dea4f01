"""`RobotModel` computed by MuJoCo from the Panda MJCF (the sim backend's stand-in for libfranka's model)."""
from __future__ import annotations

import mujoco
import numpy as np
from numba import njit

from deploy.errors import ConfigError
from deploy.robots.base import ARM_DOF, Dynamics, RobotModel
from deploy.sim.scene import ARM_JOINTS, TCP_SITE, build_robot_model


@njit(nogil=True, cache=True)
def _gather(dof_idx, site_xpos, site_quat_wxyz, jac_pos, jac_rot, full_mass, rne, out_position_m, out_quat_xyzw,
            out_jacobian, out_mass, out_gravity_nm):
    """The arm's share of MuJoCo's results: (3, nv) Jacobians, (nv, nv) inertia, (nv,) RNE; wxyz -> xyzw."""
    n = dof_idx.shape[0]
    for j in range(n):
        for i in range(3):
            out_jacobian[i, j] = jac_pos[i, dof_idx[j]]
            out_jacobian[3 + i, j] = jac_rot[i, dof_idx[j]]
        for k in range(n):
            out_mass[j, k] = full_mass[dof_idx[j], dof_idx[k]]
        out_gravity_nm[j] = rne[dof_idx[j]]
    out_position_m[:] = site_xpos
    out_quat_xyzw[0], out_quat_xyzw[1], out_quat_xyzw[2], out_quat_xyzw[3] = (site_quat_wxyz[1], site_quat_wxyz[2],
                                                                              site_quat_wxyz[3], site_quat_wxyz[0])


@njit(nogil=True, cache=True)
def _coriolis(dof_idx, rne, gravity_nm, out_coriolis_nm):
    for j in range(dof_idx.shape[0]):
        out_coriolis_nm[j] = rne[dof_idx[j]] - gravity_nm[j]


class MujocoRobotModel(RobotModel):
    """Evaluates kinematics/dynamics on a private MjData; gripper joints are held at their reference.

    A control tick asks for pose, Jacobian, inertia and bias at one (q, dq): evaluated once per distinct q by
    MuJoCo's pieces the law needs (kinematics, com positions, composite-rigid-body inertia, site Jacobian,
    RNE at dq = 0 for gravity; no collision or constraint pass), plus one RNE per distinct dq, all into
    preallocated arrays (views on the MjData are taken once: each attribute access through the bindings
    costs about a microsecond).
    """

    def __init__(self, model: mujoco.MjModel | None = None):
        self._model = model if model is not None else build_robot_model()
        self._data = mujoco.MjData(self._model)
        m, d = self._model, self._data
        joint_ids = [m.joint(name).id for name in ARM_JOINTS]
        self._qpos_idx = np.array([m.jnt_qposadr[j] for j in joint_ids])
        self._dof_idx = np.array([m.jnt_dofadr[j] for j in joint_ids])
        self._site_id = m.site(TCP_SITE).id
        self._limits = m.jnt_range[joint_ids].copy()
        actuator_ids = [i for i in range(m.nu) if m.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
                        and m.actuator_trnid[i, 0] in joint_ids]
        self._tau_limits = np.abs(m.actuator_ctrlrange[actuator_ids, 1]).copy()
        assert len(self._tau_limits) == ARM_DOF
        first_qpos, first_dof = self._qpos_idx[0], self._dof_idx[0]
        if not ((np.diff(self._qpos_idx) == 1).all() and (np.diff(self._dof_idx) == 1).all()):
            raise ConfigError(f"MujocoRobotModel needs the arm joints {ARM_JOINTS} consecutive in the MJCF")
        # views on the MjData, taken once
        self._arm_qpos, self._arm_qvel = d.qpos[first_qpos:first_qpos + ARM_DOF], d.qvel[first_dof:first_dof + ARM_DOF]
        self._site_xpos, self._site_xmat = d.site_xpos[self._site_id], d.site_xmat[self._site_id]
        d.qvel[:] = 0.0
        self._q_key: bytes | None = None
        self._dq_key: bytes | None = None
        self._jac_pos = np.zeros((3, m.nv))
        self._jac_rot = np.zeros((3, m.nv))
        self._full_mass = np.zeros((m.nv, m.nv))
        self._rne = np.zeros(m.nv)
        self._quat_wxyz = np.zeros(4)
        n = len(self._dof_idx)
        self._out = Dynamics(np.zeros(3), np.zeros(4), np.zeros((6, n)), np.zeros((n, n)), np.zeros(n), np.zeros(n))
        self.dynamics(np.zeros(n), np.ones(n))  # compiles (or loads from cache) its kernels now, not in a tick

    def _at(self, q_rad) -> None:
        """Position-dependent quantities at q (gravity at dq = 0), evaluated once per distinct q."""
        q = np.asarray(q_rad, dtype=float)
        key = q.tobytes()
        if key == self._q_key:
            return
        m, d, out = self._model, self._data, self._out
        self._arm_qpos[:] = q
        self._arm_qvel[:] = 0.0
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_crb(m, d)
        mujoco.mj_jacSite(m, d, self._jac_pos, self._jac_rot, self._site_id)
        mujoco.mj_fullM(m, d, self._full_mass)
        mujoco.mj_comVel(m, d)  # rne reads the com velocities: zero here
        mujoco.mj_rne(m, d, 0, self._rne)  # gravity
        mujoco.mju_mat2Quat(self._quat_wxyz, self._site_xmat)
        _gather(self._dof_idx, self._site_xpos, self._quat_wxyz, self._jac_pos, self._jac_rot, self._full_mass,
                self._rne, out.position_m, out.quat_xyzw, out.jacobian, out.mass_matrix, out.gravity_nm)
        out.coriolis_nm[:] = 0.0
        self._q_key, self._dq_key = key, bytes(8 * len(self._dof_idx))  # coriolis at dq = 0 is zero

    def _at_velocity(self, dq_rad_s) -> None:
        """C(q, dq) dq at the cached q, evaluated once per distinct dq."""
        dq = np.asarray(dq_rad_s, dtype=float)
        key = dq.tobytes()
        if key == self._dq_key:
            return
        self._arm_qvel[:] = dq
        mujoco.mj_comVel(self._model, self._data)
        mujoco.mj_rne(self._model, self._data, 0, self._rne)  # C(q, dq) dq + g, zero acceleration
        _coriolis(self._dof_idx, self._rne, self._out.gravity_nm, self._out.coriolis_nm)
        self._dq_key = key

    def dynamics(self, q_rad, dq_rad_s) -> Dynamics:
        """The model's own arrays (overwritten at the next call with another q or dq)."""
        self._at(q_rad)
        self._at_velocity(dq_rad_s)
        return self._out

    def ee_pose(self, q_rad):
        self._at(q_rad)
        return self._out.position_m.copy(), self._out.quat_xyzw.copy()

    def jacobian(self, q_rad):
        self._at(q_rad)
        return self._out.jacobian.copy()

    def mass_matrix(self, q_rad):
        self._at(q_rad)
        return self._out.mass_matrix.copy()

    def bias_torque(self, q_rad, dq_rad_s):
        self._at(q_rad)
        self._at_velocity(dq_rad_s)
        return self._out.gravity_nm + self._out.coriolis_nm

    @property
    def joint_limits_rad(self):
        return self._limits

    @property
    def torque_limits_nm(self):
        return self._tau_limits
