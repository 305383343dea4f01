"""MuJoCo models of the Franka Panda + Robotiq 2F-85, built from the MJCF that ships inside the gym-hil wheel.

gym-hil is installed without its dependencies (it pins an older MuJoCo) and never imported: we only read
its asset folder, so nothing is downloaded at run time.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco

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
