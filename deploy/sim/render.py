"""Offscreen rendering of the sim's cameras, tuned by measurement (MUJOCO_GL=egl, software Mesa, 2 cores).

Measured here (fps of one camera, MuJoCo 4.0):
    meshes      size      front  wrist
    visual      128x128   32     50
    visual      640x480   25     37
    collision   128x128   71     96
    collision   160x120   61     98
    collision   320x240   57     78
    collision   640x480   44     65
The gym-hil visual meshes are high-poly; the collision meshes (geom group 3) look like a Panda and render
~2x faster, so we show group 3 and hide group 2. Shadows, reflections, skybox and multisampling are off. The cost is
mostly per render call, not per pixel; the default 128x128 (the policy's input scale) keeps two cameras at
30 Hz to well under one core.
"""
from __future__ import annotations

import mujoco
import numpy as np

from deploy.sim import scene


class SceneRenderer:
    """Renders named cameras from a qpos snapshot on its own MjData (safe beside the physics thread)."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int, cameras: dict[str, str] = scene.CAMERAS):
        self.model = model
        self.data = mujoco.MjData(model)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.cameras = dict(cameras)
        self.width, self.height = width, height
        self._renderer = mujoco.Renderer(model, height, width)
        self._option = mujoco.MjvOption()
        self._option.geomgroup[:] = [1, 1, 0, 1, 0, 0]  # world + collision meshes, not the high-poly visuals

    def render(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        """-> {camera name: (H, W, 3) uint8 RGB} for the given joint configuration."""
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        frames = {}
        for name, mjcf_camera in self.cameras.items():
            self._renderer.update_scene(self.data, camera=mjcf_camera, scene_option=self._option)
            flags = self._renderer.scene.flags
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            frames[name] = self._renderer.render().copy()
        return frames

    def close(self) -> None:
        self._renderer.close()
