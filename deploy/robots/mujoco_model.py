"""`RobotModel` computed by MuJoCo from the Panda MJCF (the sim backend's stand-in for libfranka's model)."""
from __future__ import annotations

import mujoco
import numpy as np

from deploy.robots.base import ARM_DOF, RobotModel
from deploy.sim.scene import ARM_JOINTS, TCP_SITE, build_robot_model


class MujocoRobotModel(RobotModel):
    """Evaluates kinematics/dynamics on a private MjData; gripper joints are held at their reference."""

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

    def _set(self, q_rad: np.ndarray, dq_rad_s: np.ndarray | None = None) -> None:
        self._data.qpos[self._qpos_idx] = q_rad
        self._data.qvel[:] = 0.0
        if dq_rad_s is not None:
            self._data.qvel[self._dof_idx] = dq_rad_s

    def ee_pose(self, q_rad):
        self._set(q_rad)
        mujoco.mj_kinematics(self._model, self._data)
        position = self._data.site_xpos[self._site_id].copy()
        quat_wxyz = np.empty(4)
        mujoco.mju_mat2Quat(quat_wxyz, self._data.site_xmat[self._site_id])
        return position, np.roll(quat_wxyz, -1)

    def jacobian(self, q_rad):
        self._set(q_rad)
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_comPos(self._model, self._data)
        jac_pos = np.zeros((3, self._model.nv))
        jac_rot = np.zeros((3, self._model.nv))
        mujoco.mj_jacSite(self._model, self._data, jac_pos, jac_rot, self._site_id)
        return np.vstack([jac_pos[:, self._dof_idx], jac_rot[:, self._dof_idx]])

    def mass_matrix(self, q_rad):
        self._set(q_rad)
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_comPos(self._model, self._data)
        mujoco.mj_crb(self._model, self._data)
        full = np.zeros((self._model.nv, self._model.nv))
        mujoco.mj_fullM(self._model, self._data, full)
        return full[np.ix_(self._dof_idx, self._dof_idx)]

    def bias_torque(self, q_rad, dq_rad_s):
        self._set(q_rad, dq_rad_s)
        mujoco.mj_forward(self._model, self._data)
        return self._data.qfrc_bias[self._dof_idx].copy()

    @property
    def joint_limits_rad(self):
        return self._limits

    @property
    def torque_limits_nm(self):
        return self._tau_limits
