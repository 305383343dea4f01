"""`RobotModel` computed by MuJoCo from the Panda MJCF (the sim backend's stand-in for libfranka's model)."""
from __future__ import annotations

import mujoco
import numpy as np

from deploy.robots.base import ARM_DOF, RobotModel
from deploy.sim.scene import ARM_JOINTS, TCP_SITE, build_robot_model


class MujocoRobotModel(RobotModel):
    """Evaluates kinematics/dynamics on a private MjData; gripper joints are held at their reference.

    One control tick asks for pose, Jacobian, inertia and bias at the same (q, dq): the first call evaluates
    everything with one mj_forward (+ one mj_rne for the velocity terms) and the rest reuse it.
    """

    def __init__(self, model: mujoco.MjModel | None = None):
        self._model = model if model is not None else build_robot_model()
        self._data = mujoco.MjData(self._model)
        joint_ids = [self._model.joint(name).id for name in ARM_JOINTS]
        self._qpos_idx = np.array([self._model.jnt_qposadr[j] for j in joint_ids])
        self._dof_idx = np.array([self._model.jnt_dofadr[j] for j in joint_ids])
        self._site_id = self._model.site(TCP_SITE).id
        self._limits = self._model.jnt_range[joint_ids].copy()
        actuator_ids = [i for i in range(self._model.nu) if self._model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
                        and self._model.actuator_trnid[i, 0] in joint_ids]
        self._tau_limits = np.abs(self._model.actuator_ctrlrange[actuator_ids, 1]).copy()
        assert len(self._tau_limits) == ARM_DOF
        self._q_key: bytes | None = None
        self._dq_key: bytes | None = None
        self._jac_pos = np.zeros((3, self._model.nv))
        self._jac_rot = np.zeros((3, self._model.nv))
        self._full_mass = np.zeros((self._model.nv, self._model.nv))
        self._rne = np.zeros(self._model.nv)

    def _at(self, q_rad) -> None:
        """Position-dependent quantities at q (velocity zero), evaluated once per distinct q."""
        q = np.asarray(q_rad, dtype=float)
        key = q.tobytes()
        if key == self._q_key:
            return
        self._data.qpos[self._qpos_idx] = q
        self._data.qvel[:] = 0.0
        mujoco.mj_forward(self._model, self._data)
        self._position = self._data.site_xpos[self._site_id].copy()
        quat_wxyz = np.empty(4)
        mujoco.mju_mat2Quat(quat_wxyz, self._data.site_xmat[self._site_id])
        self._quat_xyzw = np.roll(quat_wxyz, -1)
        mujoco.mj_jacSite(self._model, self._data, self._jac_pos, self._jac_rot, self._site_id)
        self._jacobian = np.vstack([self._jac_pos[:, self._dof_idx], self._jac_rot[:, self._dof_idx]])
        mujoco.mj_fullM(self._model, self._data, self._full_mass)
        self._mass = self._full_mass[np.ix_(self._dof_idx, self._dof_idx)].copy()
        self._gravity = self._data.qfrc_bias[self._dof_idx].copy()
        self._q_key, self._dq_key = key, None

    def ee_pose(self, q_rad):
        self._at(q_rad)
        return self._position.copy(), self._quat_xyzw.copy()

    def jacobian(self, q_rad):
        self._at(q_rad)
        return self._jacobian.copy()

    def mass_matrix(self, q_rad):
        self._at(q_rad)
        return self._mass.copy()

    def bias_torque(self, q_rad, dq_rad_s):
        self._at(q_rad)
        dq = np.asarray(dq_rad_s, dtype=float)
        if not dq.any():
            return self._gravity.copy()
        key = dq.tobytes()
        if key != self._dq_key:
            self._data.qvel[:] = 0.0
            self._data.qvel[self._dof_idx] = dq
            mujoco.mj_comVel(self._model, self._data)  # rne reads the com velocities
            mujoco.mj_rne(self._model, self._data, 0, self._rne)  # C(q, dq) dq + g, zero acceleration
            self._bias = self._rne[self._dof_idx].copy()
            self._dq_key = key
        return self._bias.copy()

    @property
    def joint_limits_rad(self):
        return self._limits

    @property
    def torque_limits_nm(self):
        return self._tau_limits
