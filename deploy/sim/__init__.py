"""The embedded MuJoCo Panda. MuJoCo reads MUJOCO_GL when first imported, so it is set here, before any
module of this package imports mujoco: offscreen EGL (software Mesa) works without a display."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
