"""MuJoCo models of the Franka Panda + Robotiq 2F-85, built from the MJCF that ships inside the gym-hil wheel.

gym-hil is installed without its dependencies (it pins an older MuJoCo) and never imported: we only read
its asset folder, so nothing is downloaded at run time. The task scene adds a table, a 4 cm cube, a green
goal patch and a front camera; the task is to push (or carry) the cube onto the goal patch.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco
import numpy as np

from deploy.errors import ConfigError
from deploy.sensing.cameras import Intrinsics

CONTROL_TIMESTEP_S = 0.001  # physics and control both run at 1 kHz
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
TCP_SITE = "pinch"  # tool centre point between the fingertips
HOME_Q_RAD = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])  # TCP ≈ (0.31, 0, 0.44), pointing down
CUBE_HALF_SIZE_M = 0.02
GOAL_CENTER_M = np.array([0.55, 0.2])
GOAL_HALF_SIZE_M = 0.04
CUBE_START_X_M = (0.45, 0.6)  # seeded cube start region, ≥ 8 cm from the goal
CUBE_START_Y_M = (-0.15, 0.1)
CAMERAS = {"front": "front", "wrist": "handcam_rgb"}  # our camera name -> MJCF camera
CAMERA_FOVY_DEG = {"front": 45.0, "wrist": 42.5}  # vertical field of view (wrist: gym-hil's handcam_rgb)


def camera_intrinsics(camera_name: str, width: int, height: int) -> Intrinsics:
    """Pinhole intrinsics of a sim camera: MuJoCo cameras have square pixels and a vertical field of view."""
    focal = 0.5 * height / np.tan(0.5 * np.deg2rad(CAMERA_FOVY_DEG[camera_name]))
    return Intrinsics(width, height, focal, focal, 0.5 * width, 0.5 * height)


def panda_assets_dir() -> Path:
    """Folder holding gym-hil's panda.xml and meshes."""
    spec = importlib.util.find_spec("gym_hil")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("package 'gym-hil' (the Panda MJCF) is not installed: run the setup command in README.md")
    assets = Path(list(spec.submodule_search_locations)[0]) / "assets"
    if not (assets / "panda.xml").is_file():
        raise ConfigError(f"gym-hil is installed but {assets / 'panda.xml'} is missing")
    return assets


def _panda_spec() -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(panda_assets_dir() / "panda.xml"))
    spec.option.timestep = CONTROL_TIMESTEP_S
    return spec


def build_robot_model() -> mujoco.MjModel:
    """The arm + gripper alone (no scene): what the robot backend uses for kinematics and dynamics."""
    return _panda_spec().compile()


def build_scene() -> mujoco.MjModel:
    """Arm + gripper on a table with the cube, the goal patch and the front camera."""
    spec = _panda_spec()
    world = spec.worldbody
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.5, 1.5, 0.01],
                   rgba=[0.62, 0.55, 0.45, 1.0], group=0)
    cube = world.add_body(name="cube", pos=[0.5, 0.0, CUBE_HALF_SIZE_M])
    cube.add_freejoint(name="cube")
    cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF_SIZE_M] * 3, mass=0.1,
                  rgba=[0.85, 0.15, 0.15, 1.0], friction=[1.0, 0.005, 0.0001], group=0)
    world.add_geom(name="goal", type=mujoco.mjtGeom.mjGEOM_BOX, size=[GOAL_HALF_SIZE_M, GOAL_HALF_SIZE_M, 0.0005],
                   pos=[*GOAL_CENTER_M, 0.0005], contype=0, conaffinity=0, rgba=[0.1, 0.75, 0.2, 1.0], group=0)
    world.add_camera(name="front", pos=[1.3, 0.0, 0.7], quat=[0.5963678, 0.3799282, 0.3799282, 0.5963678],
                     fovy=CAMERA_FOVY_DEG["front"])
    world.add_light(pos=[0.0, 0.0, 3.0], dir=[0.0, 0.0, -1.0], diffuse=[0.5, 0.5, 0.5], castshadow=False)
    world.add_light(pos=[1.0, -0.5, 1.5], dir=[-0.5, 0.3, -1.0], diffuse=[0.3, 0.3, 0.3], castshadow=False)
    model = spec.compile()
    model.vis.quality.offsamples = 0  # multisampling costs render time and the policy does not need it
    model.vis.headlight.ambient[:] = 0.25
    model.vis.headlight.diffuse[:] = 0.3
    return model
