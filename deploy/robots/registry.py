"""Robot backends and kinematic models chosen by name (the `robot` launch argument).

Hardware backends import their vendor package (pylibfranka, ur_rtde) only in `connect()`, so every name here
constructs without them; a missing package is a ConfigError naming the pip extra.
"""
from __future__ import annotations

import inspect

from deploy.errors import ConfigError
from deploy.robots.base import Robot, RobotModel

ROBOT_NAMES = ("sim", "franka", "ur", "external")


def make_robot(name: str, **params) -> Robot:
    if name == "sim":
        from deploy.robots.sim import SimRobot
        return _construct(name, SimRobot, params)
    if name == "franka":
        from deploy.robots.franka import FrankaRobot
        return _construct(name, FrankaRobot, params)
    if name == "ur":
        from deploy.robots.ur import URRobot
        return _construct(name, URRobot, params)
    if name == "external":
        from deploy.robots.external import ExternalControllerRobot
        return _construct(name, ExternalControllerRobot, params)
    raise ConfigError(f"unknown robot '{name}' (choose {'|'.join(ROBOT_NAMES)})")


def _construct(name: str, backend: type[Robot], params: dict) -> Robot:
    """A misspelt or missing parameter becomes a ConfigError naming the robot, not a TypeError."""
    try:
        inspect.signature(backend).bind(**params)
    except TypeError as error:
        raise ConfigError(f"robot '{name}': {error}") from None
    return backend(**params)


def make_model(name: str) -> RobotModel:
    """Kinematics/dynamics without a connection (proprioception FK, policy tooling)."""
    if name in ("sim", "franka", "panda"):
        from deploy.robots.mujoco_model import MujocoRobotModel
        return MujocoRobotModel()
    if name in ("ur", "ur5e"):
        from deploy.robots.ur_model import UR5eModel
        return UR5eModel()
    raise ConfigError(f"no kinematic model for robot '{name}' (known: sim, franka, panda, ur, ur5e)")
