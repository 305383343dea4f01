"""MuJoCo models of the Franka Panda + Robotiq 2F-85, built from the MJCF that ships inside the gym-hil wheel.

gym-hil is installed without its dependencies (it pins an older MuJoCo) and never imported: we only read
its asset folder, so nothing is downloaded at run time.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco
import numpy as np

from deploy.errors import ConfigError

CONTROL_TIMESTEP_S = 0.001  # physics and control both run at 1 kHz
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
TCP_SITE = "pinch"  # tool centre point between the fingertips


def panda_assets_dir() -> Path:
    """Folder holding gym-hil's panda.xml and meshes."""
    spec = importlib.util.find_spec("gym_hil")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("package 'gym-hil' (the Panda MJCF) is not installed: run the setup command in README.md")
    assets = Path(list(spec.submodule_search_locations)[0]) / "assets"
    if not (assets / "panda.xml").is_file():
        raise ConfigError(f"gym-hil is installed but {assets / 'panda.xml'} is missing")
    return assets


def build_robot_model() -> mujoco.MjModel:
    """The arm + gripper alone (no scene): what the robot backend uses for kinematics and dynamics."""
    model = mujoco.MjModel.from_xml_path(str(panda_assets_dir() / "panda.xml"))
    model.opt.timestep = CONTROL_TIMESTEP_S
    return model


# --- the task scene: Panda on a table, a cube to push onto a goal patch ------------------------------------

HOME_Q_RAD = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)  # TCP ~ (0.307, 0, 0.441) m, pointing down
CUBE_HALF_SIZE_M = 0.02
CUBE_START_X_M = (0.45, 0.60)  # reachable region in front of the robot, base frame
CUBE_START_Y_M = (-0.15, 0.15)
GOAL_XY_M = (0.55, 0.20)
GOAL_HALF_SIZE_M = 0.04
MIN_START_TO_GOAL_M = 0.08
CUBE_RESTING_MAX_Z_M = 0.03  # cube centre below this = lying on the table (resting height is 0.02)
CAMERAS = ("front", "wrist")
_WRIST_SOURCE_CAMERA = "handcam_rgb"
_FRONT_CAMERA_POS_M = (1.05, -0.55, 0.75)
_FRONT_CAMERA_TARGET_M = (0.45, 0.05, 0.10)
_ARM_COLOUR = (0.85, 0.85, 0.82, 1.0)
_GRIPPER_COLOUR = (0.25, 0.25, 0.28, 1.0)
_GRIPPER_BODY_PREFIXES = ("base", "left_", "right_")  # base_mount, base, fingers


def _look_at_quat_wxyz(pos_m, target_m) -> list[float]:
    """MuJoCo camera orientation (camera looks along its -z, y up) aiming from `pos_m` at `target_m`."""
    z_axis = np.asarray(pos_m, float) - np.asarray(target_m, float)
    z_axis /= np.linalg.norm(z_axis)
    x_axis = np.cross([0.0, 0.0, 1.0], z_axis)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    quat_wxyz = np.empty(4)
    mujoco.mju_mat2Quat(quat_wxyz, np.column_stack([x_axis, y_axis, z_axis]).ravel())
    return quat_wxyz.tolist()


def build_scene() -> mujoco.MjModel:
    """Panda at the origin of a table (the floor plane), a 4 cm free cube, a green goal patch, two cameras.

    Collision meshes (group 3) get a visible colour because the renderer draws them instead of the
    high-poly visual meshes (group 2), which cost ~10x the render time in software GL.
    """
    spec = mujoco.MjSpec.from_file(str(panda_assets_dir() / "panda.xml"))
    spec.option.timestep = CONTROL_TIMESTEP_S
    spec.visual.quality.offsamples = 0
    spec.visual.quality.shadowsize = 0
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    for geom in spec.geoms:
        if geom.group == 3:
            gripper = geom.parent.name.startswith(_GRIPPER_BODY_PREFIXES)
            geom.rgba = _GRIPPER_COLOUR if gripper else _ARM_COLOUR
    spec.camera(_WRIST_SOURCE_CAMERA).name = "wrist"

    world = spec.worldbody
    world.add_light(pos=[0.3, -0.3, 2.0], dir=[0.0, 0.0, -1.0], diffuse=[0.7, 0.7, 0.7], castshadow=False)
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.5, 1.5, 0.01],
                   rgba=[0.55, 0.45, 0.35, 1.0])
    world.add_geom(name="goal", type=mujoco.mjtGeom.mjGEOM_BOX,
                   size=[GOAL_HALF_SIZE_M, GOAL_HALF_SIZE_M, 0.0005], pos=[*GOAL_XY_M, 0.0005],
                   rgba=[0.1, 0.8, 0.1, 1.0], contype=0, conaffinity=0)
    cube = world.add_body(name="cube", pos=[0.5, 0.0, CUBE_HALF_SIZE_M])
    cube.add_freejoint(name="cube")
    cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF_SIZE_M] * 3, mass=0.1,
                  rgba=[0.8, 0.15, 0.15, 1.0])
    world.add_camera(name="front", pos=list(_FRONT_CAMERA_POS_M), fovy=45.0,
                     quat=_look_at_quat_wxyz(_FRONT_CAMERA_POS_M, _FRONT_CAMERA_TARGET_M))
    return spec.compile()


def sample_cube_start(seed: int) -> tuple[np.ndarray, float]:
    """Cube start (x, y) [m] and yaw [rad] from `seed`, at least MIN_START_TO_GOAL_M away from the goal."""
    rng = np.random.default_rng(seed)
    while True:
        xy_m = np.array([rng.uniform(*CUBE_START_X_M), rng.uniform(*CUBE_START_Y_M)])
        if np.linalg.norm(xy_m - GOAL_XY_M) >= MIN_START_TO_GOAL_M:
            return xy_m, float(rng.uniform(-np.pi, np.pi))


def cube_on_goal(cube_pos_m: np.ndarray) -> bool:
    """Task success: cube centre inside the goal square in xy and the cube resting on the table."""
    inside = np.all(np.abs(np.asarray(cube_pos_m[:2]) - GOAL_XY_M) <= GOAL_HALF_SIZE_M)
    return bool(inside and cube_pos_m[2] < CUBE_RESTING_MAX_Z_M)
