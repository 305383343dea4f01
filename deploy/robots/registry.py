"""Robot backends and kinematic models chosen by name (the `robot` launch argument)."""
from __future__ import annotations

from deploy.errors import ConfigError
from deploy.robots.base import Robot, RobotModel

ROBOT_NAMES = ("sim", "franka", "ur", "external")


def make_robot(name: str, **params) -> Robot:
    if name == "sim":
        from deploy.robots.sim import SimRobot
        return SimRobot(**params)
    if name in ROBOT_NAMES:
        raise ConfigError(f"robot backend '{name}' is not available in this build yet (only 'sim')")
    raise ConfigError(f"unknown robot '{name}' (choose {'|'.join(ROBOT_NAMES)})")


def make_model(name: str) -> RobotModel:
    """Kinematics/dynamics without a connection (proprioception FK, policy tooling)."""
    if name in ("sim", "franka", "panda"):
        from deploy.robots.mujoco_model import MujocoRobotModel
        return MujocoRobotModel()
    raise ConfigError(f"no kinematic model for robot '{name}' (known: sim, franka, panda)")
