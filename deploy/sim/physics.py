"""The simulated Panda as hardware: joint torques in, joint state out, brakes when nobody commands it.

ROS-free and single-threaded: the caller (SimRunner) owns the stepping thread and locks around access.
"""
from __future__ import annotations

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from deploy.sim import scene

GRIPPER_OPEN_WIDTH_M = 0.085  # Robotiq 2F-85 stroke
GRIPPER_CTRL_CLOSED = 255.0  # fingers_actuator: 0 = open, 255 = closed
DRIVER_CLOSED_RAD = 0.8  # driver joint range 0 (open) .. 0.8 (closed)
BRAKE_STIFFNESS_NM_PER_RAD = 400.0  # brakes: a stiff PD around the pose where they engaged
BRAKE_DAMPING_NM_S_PER_RAD = 40.0


class PandaSim:
    def __init__(self, model: mujoco.MjModel | None = None):
        self.model = model if model is not None else scene.build_scene()
        self.data = mujoco.MjData(self.model)
        joint_ids = [self.model.joint(name).id for name in scene.ARM_JOINTS]
        self._arm_qpos = np.array([self.model.jnt_qposadr[j] for j in joint_ids])
        self._arm_dof = np.array([self.model.jnt_dofadr[j] for j in joint_ids])
        self._arm_actuators = np.array([self.model.actuator(f"actuator{i}").id for i in range(1, 8)])
        self._tau_limit_nm = self.model.actuator_ctrlrange[self._arm_actuators, 1].copy()
        self._gripper_actuator = self.model.actuator("fingers_actuator").id
        self._driver_qpos = self.model.jnt_qposadr[self.model.joint("right_driver_joint").id]
        self._cube_qpos = self.model.jnt_qposadr[self.model.joint("cube").id]
        self._tcp_site = self.model.site(scene.TCP_SITE).id
        self._tcp_body = self.model.site_bodyid[self._tcp_site]
        self._geom_on_gripper = _gripper_bodies(self.model)[self.model.geom_bodyid]  # (ngeom,) bool
        self._contact_force = np.zeros(6)
        self._push_force_n = np.zeros(3)
        self._push_torque_nm = np.zeros(3)
        self._push_qfrc = np.zeros(self.model.nv)
        self._brake_q_rad: np.ndarray | None = None
        self.tau_applied_nm = np.zeros(7)
        self.reset(seed=0)

    # --- episode --------------------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Arm at home, gripper open, cube at a seeded random pose in the start region, time 0."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._arm_qpos] = scene.HOME_Q_RAD
        self._brake_q_rad = None
        self.place_cube(seed)

    def place_cube(self, seed: int) -> None:
        """A new episode on a running sim: only the cube moves (to its seeded start pose); the arm, its
        controller and the clock carry on, as on a real robot where an episode reset never teleports the arm."""
        rng = np.random.default_rng(seed)
        xy = [rng.uniform(*scene.CUBE_START_X_M), rng.uniform(*scene.CUBE_START_Y_M)]
        yaw = rng.uniform(-np.pi, np.pi)
        self.set_cube_pose(np.array([*xy, scene.CUBE_HALF_SIZE_M]), Rotation.from_euler("z", yaw).as_quat())

    def set_cube_pose(self, position_m, quat_xyzw) -> None:
        """Place the cube (by hand, as in a test), at rest."""
        i = self._cube_qpos
        self.data.qpos[i:i + 3] = position_m
        self.data.qpos[i + 3:i + 7] = np.roll(np.asarray(quat_xyzw, dtype=float), 1)  # MuJoCo is wxyz
        cube_dof = self.model.jnt_dofadr[self.model.joint("cube").id]
        self.data.qvel[cube_dof:cube_dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    # --- hardware I/O ---------------------------------------------------------------------------------------
    def step(self, tau_nm: np.ndarray | None, gripper_width_m: float | None) -> None:
        """One 1 ms step. `tau_nm` None = no fresh command: the brakes hold the arm where they engaged."""
        self._apply_push()
        if tau_nm is None or not np.all(np.isfinite(tau_nm)):
            # brakes act on the joints directly, beyond the motors' limits; the joint torque sensors feel them
            self.tau_applied_nm = self._brake_torque()
            self.data.qfrc_applied[self._arm_dof] += self.tau_applied_nm
            self.data.ctrl[self._arm_actuators] = 0.0
        else:
            self._brake_q_rad = None
            self.tau_applied_nm = np.clip(tau_nm, -self._tau_limit_nm, self._tau_limit_nm)
            self.data.ctrl[self._arm_actuators] = self.tau_applied_nm
        if gripper_width_m is not None and np.isfinite(gripper_width_m):
            closed_fraction = 1.0 - np.clip(gripper_width_m / GRIPPER_OPEN_WIDTH_M, 0.0, 1.0)
            self.data.ctrl[self._gripper_actuator] = closed_fraction * GRIPPER_CTRL_CLOSED
        mujoco.mj_step(self.model, self.data)

    def _brake_torque(self) -> np.ndarray:
        q, dq = self.data.qpos[self._arm_qpos], self.data.qvel[self._arm_dof]
        if self._brake_q_rad is None:
            self._brake_q_rad = q.copy()
        gravity = self.data.qfrc_bias[self._arm_dof]
        return BRAKE_STIFFNESS_NM_PER_RAD * (self._brake_q_rad - q) - BRAKE_DAMPING_NM_S_PER_RAD * dq + gravity

    @property
    def braking(self) -> bool:
        return self._brake_q_rad is not None

    def apply_ee_wrench(self, force_n, torque_nm) -> None:
        """External push at the TCP (world frame) until replaced; zeros release it."""
        self._push_force_n = np.asarray(force_n, dtype=float).copy()
        self._push_torque_nm = np.asarray(torque_nm, dtype=float).copy()

    def _apply_push(self) -> None:
        """Generalised forces of the push acting at the TCP point (recomputed as the arm moves)."""
        self.data.qfrc_applied[:] = 0.0
        if not (self._push_force_n.any() or self._push_torque_nm.any()):
            return
        self._push_qfrc[:] = 0.0
        mujoco.mj_applyFT(self.model, self.data, self._push_force_n, self._push_torque_nm,
                          self.data.site_xpos[self._tcp_site], self._tcp_body, self._push_qfrc)
        self.data.qfrc_applied[:] = self._push_qfrc

    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q (7,), dq (7,), tau measured (7,)) — measured torque = what the motors (or brakes) applied."""
        return (self.data.qpos[self._arm_qpos].copy(), self.data.qvel[self._arm_dof].copy(),
                self.tau_applied_nm.copy())

    def ee_wrench(self) -> np.ndarray:
        """(6,) [force N; torque N m] the contacts exert on the hand and fingers, world (= base) frame, torque
        about the TCP: what libfranka's O_F_ext_hat_K estimates. Contacts between two gripper bodies are internal
        and cancel; the test push of `apply_ee_wrench` is not a contact and is not included.

        Contacts and sites both come from the last step's forward pass, so the lever arms match the forces.
        """
        contacts = self.data.contact
        if self.data.ncon == 0:
            return np.zeros(6)
        on_gripper = self._geom_on_gripper[contacts.geom]  # (ncon, 2)
        touching = np.flatnonzero((on_gripper[:, 0] != on_gripper[:, 1]) & (contacts.efc_address >= 0))
        if len(touching) == 0:
            return np.zeros(6)
        local = np.empty((len(touching), 6))  # force:torque on geom2, in each contact's frame
        for row, i in enumerate(touching):
            mujoco.mj_contactForce(self.model, self.data, i, local[row])
        local *= np.where(on_gripper[touching, 0], -1.0, 1.0)[:, None]  # the gripper as geom1 feels the opposite
        frames = contacts.frame[touching].reshape(-1, 3, 3)  # rows: normal, tangent, tangent (world)
        world = local.reshape(-1, 2, 3) @ frames  # (k, 2, 3): [force; torque] per contact, world frame
        levers = contacts.pos[touching] - self.data.site_xpos[self._tcp_site]  # (k, 3) TCP -> contact point
        # Σ lever × force is the antisymmetric part of Σ lever ⊗ force (np.cross costs 15 µs at this size)
        moments = levers.T @ world[:, 0]
        about_tcp = [moments[1, 2] - moments[2, 1], moments[2, 0] - moments[0, 2], moments[0, 1] - moments[1, 0]]
        total = world.sum(axis=0)
        return np.concatenate([total[0], total[1] + about_tcp])

    def gripper_width_m(self) -> float:
        closed_fraction = np.clip(self.data.qpos[self._driver_qpos] / DRIVER_CLOSED_RAD, 0.0, 1.0)
        return float(GRIPPER_OPEN_WIDTH_M * (1.0 - closed_fraction))

    # --- task -----------------------------------------------------------------------------------------------
    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        i = self._cube_qpos
        return self.data.qpos[i:i + 3].copy(), np.roll(self.data.qpos[i + 3:i + 7], -1)

    def success(self) -> bool:
        """Cube centre inside the goal square and resting on the table."""
        position, _ = self.cube_pose()
        inside = np.all(np.abs(position[:2] - scene.GOAL_CENTER_M) <= scene.GOAL_HALF_SIZE_M)
        return bool(inside and position[2] < scene.CUBE_HALF_SIZE_M + 0.01)

    def tcp_position_m(self) -> np.ndarray:
        return self.data.site_xpos[self._tcp_site].copy()



def _gripper_bodies(model: mujoco.MjModel) -> np.ndarray:
    """(nbody,) True for the hand and fingers: every body below the last arm link (MuJoCo numbers a parent
    before its children)."""
    last_link = model.jnt_bodyid[model.joint(scene.ARM_JOINTS[-1]).id]
    below = np.zeros(model.nbody, dtype=bool)
    for body in range(1, model.nbody):
        parent = model.body_parentid[body]
        below[body] = parent == last_link or below[parent]
    return below
