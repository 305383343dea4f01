"""SimRunner: the sim process's main loop — physics, cameras and the link — in real time or lockstep.

Real time: physics is paced at 1 kHz against the wall clock and stamps are wall-clock time (the node clock
of a graph without sim time); cameras render in a child process from the qpos the link carries (rendering
in a thread took the GIL from physics: 9 % missed 1 ms deadlines vs < 5 % without). Lockstep: each step waits until the
controller has answered the latest state (or a timeout, then the brakes hold), stamps are simulated time
(published as /clock by the node), cameras render synchronously every 1/camera_rate of simulated time.
In both, a command older than `command_timeout_s` engages the brakes, like a real arm losing its controller.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from typing import Callable

import numpy as np

from deploy.control.loop import check_realtime_priority, request_realtime_priority
from deploy.errors import ConfigError, RobotConnectionError
from deploy.lists import comma_list
from deploy.sim import scene
from deploy.sim.link import MODE_LOCKSTEP, MODE_REALTIME, STALE_AFTER_S, LinkClient, LinkServer
from deploy.sim.physics import PandaSim
from deploy.sim.render import SceneRenderer

MODES = ("realtime", "lockstep")
STOP_CHECK_S = 0.05  # lockstep: a wait for the controller looks at the stop request this often


@dataclasses.dataclass
class SimConfig:
    mode: str = "realtime"  # realtime | lockstep
    seed: int = 0  # cube start pose of the first episode; episode k uses seed + k
    cameras: str = "front,wrist"  # comma-separated cameras to render; "" = none (rendering costs CPU the graph needs)
    camera_rate_hz: float = 30.0  # rendered frames per second of robot time [Hz]
    image_width: int = 128  # [px]; see deploy/sim/render.py for the measured cost per size
    image_height: int = 128
    command_timeout_s: float = 0.02  # older commands engage the brakes [s, robot time]
    lockstep_timeout_s: float = 0.5  # lockstep: wall time to wait for the controller before braking [s]
    link_name: str = ""  # "" = deploy.sim.link.default_link_name()
    realtime_priority: int = 0  # SCHED_FIFO priority of the physics thread in real time (config/realtime.yaml: 80)
    # (0 = normal scheduling; lockstep always runs normally: it renders in that thread, and waits anyway)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"sim mode '{self.mode}' (choose {'|'.join(MODES)})")
        check_realtime_priority(self.realtime_priority, "sim realtime_priority")
        unknown = [name for name in self.camera_names if name not in scene.CAMERAS]
        if unknown:
            raise ConfigError(f"sim camera(s) {unknown} do not exist (the scene has {sorted(scene.CAMERAS)})")
        if not 0.0 < self.camera_rate_hz <= 60.0:
            raise ConfigError(f"camera_rate_hz {self.camera_rate_hz} outside (0, 60]")
        for name in ("image_width", "image_height"):
            if not 16 <= getattr(self, name) <= 1280:
                raise ConfigError(f"{name} {getattr(self, name)} outside [16, 1280]")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return comma_list(self.cameras)


class SimRunner:
    def __init__(self, config: SimConfig, link_name: str, on_step: Callable[[float], None] | None = None):
        self.config = config
        self.sim = PandaSim()
        self.lock = threading.Lock()  # guards self.sim between the loop and the node's callbacks
        mode = MODE_LOCKSTEP if config.mode == "lockstep" else MODE_REALTIME
        self.link = LinkServer(link_name, list(scene.CAMERAS), config.image_height, config.image_width, mode,
                               self.sim.model.nq)
        self.link_name = link_name
        self.on_step = on_step  # called with the stamp after each step (the node publishes /clock from it)
        self.episode = 0
        self.steps = 0
        self.late_steps = 0
        self.stopped = threading.Event()
        self._state_seq = 0
        self._controller_answering = False
        self._answers_seq_at_miss = -1  # what the controller had answered when it last missed a deadline
        self.sim.reset(config.seed)

    # --- control from other threads ---------------------------------------------------------------------------
    def reset(self) -> int:
        with self.lock:
            self.episode += 1
            self.sim.place_cube(self.config.seed + self.episode)
        return self.config.seed + self.episode

    def apply_ee_wrench(self, force_n, torque_nm) -> None:
        with self.lock:
            self.sim.apply_ee_wrench(force_n, torque_nm)

    def set_cube_pose(self, position_m, quat_xyzw) -> None:
        with self.lock:
            self.sim.set_cube_pose(position_m, quat_xyzw)

    def task_snapshot(self) -> tuple[float, np.ndarray, np.ndarray, bool]:
        """(stamp_s, cube position, cube quat xyzw, success) for the node's publishers."""
        with self.lock:
            position, quat = self.sim.cube_pose()
            return self._stamp_s(), position, quat, self.sim.success()

    def stop(self) -> None:
        self.stopped.set()

    # --- the loop ----------------------------------------------------------------------------------------------
    def _stamp_s(self) -> float:
        return self.sim.time_s if self.config.mode == "lockstep" else time.time()

    def _publish_state(self) -> None:
        q, dq, tau = self.sim.joint_state()
        stamp_s = self._stamp_s()
        self._state_seq = self.link.write_state(stamp_s, q, dq, tau, self.sim.gripper_width_m(), self.sim.ee_wrench(),
                                                self.sim.time_s)
        self.link.write_qpos(self.sim.data.qpos, stamp_s)

    def _step(self, fresh: bool) -> None:
        """One physics step with the latest command (or brakes when it is stale), then publish the state."""
        command = self.link.read_command()
        tau, gripper = (command.tau_nm, command.gripper_width_m) if (fresh and command is not None) else (None, None)
        with self.lock:
            self.sim.step(tau, gripper)
            self.steps += 1
            self._publish_state()
        if self.on_step is not None:
            self.on_step(self._stamp_s())

    def run(self) -> None:
        """Blocks until stop(); always closes the link and the renderer."""
        try:
            with self.lock:
                self._publish_state()
            if self.config.mode == "lockstep":
                self._run_lockstep()
            else:
                self._run_realtime()
        finally:
            self.link.close()

    def _command_is_fresh(self) -> bool:
        command = self.link.read_command()
        if command is None:
            return False
        if self.config.mode == "lockstep":
            return (self._state_seq - command.answers_seq) * scene.CONTROL_TIMESTEP_S <= self.config.command_timeout_s
        return time.time() - command.written_wall_s <= self.config.command_timeout_s

    def _render_now(self, renderer: SceneRenderer) -> None:
        with self.lock:
            qpos = self.sim.data.qpos.copy()
            stamp_s = self._stamp_s()
        for name, image in renderer.render(qpos).items():
            self.link.write_frame(name, image, stamp_s)

    def _run_realtime(self) -> None:
        renderer = None
        if self.config.camera_names:
            renderer = multiprocessing.get_context("spawn").Process(
                target=render_process_main, name="sim_render", daemon=True,
                args=(self.link_name, self.config.image_width, self.config.image_height, self.config.camera_rate_hz,
                      self.config.camera_names))
            renderer.start()
        # Physics plays hardware: it runs above the rest of the graph, next to the controller (see runner.py).
        # Only now: a process started from a SCHED_FIFO thread inherits it (the renderer's threads did, and
        # software rendering at that priority stalled every other process for a frame at a time).
        request_realtime_priority(self.config.realtime_priority)
        dt_s = scene.CONTROL_TIMESTEP_S
        deadline = time.monotonic()
        while not self.stopped.is_set():
            self._step(self._command_is_fresh())
            deadline += dt_s
            delay_s = deadline - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
            elif delay_s < -0.05:  # far behind (machine stalled): resynchronise instead of racing
                self.late_steps += 1
                deadline = time.monotonic()
            else:
                self.late_steps += 1
        if renderer is not None:
            renderer.terminate()
            renderer.join(timeout=5.0)

    def _run_lockstep(self) -> None:
        renderer = SceneRenderer(self.sim.model, self.config.image_width, self.config.image_height,
                                 _mjcf_cameras(self.config.camera_names))
        render_every = max(1, round(1.0 / (self.config.camera_rate_hz * scene.CONTROL_TIMESTEP_S)))
        try:
            while not self.stopped.is_set():
                if self.config.camera_names and self.steps % render_every == 0:
                    self._render_now(renderer)
                answered = self._wait_for_answer()
                self._step(answered and self._command_is_fresh())
        finally:
            renderer.close()

    def _wait_for_answer(self) -> bool:
        """Lockstep: wait (on the link's command bell) until the controller answered the latest state.

        Once the controller missed a deadline and answered nothing since the previous miss, wait only one tick
        until it answers again, so a sim with no controller still advances (braked) instead of crawling. A
        controller that still answers, late (a starved process), gets the full wait again: lockstep resumes.
        """
        timeout_s = self.config.lockstep_timeout_s if self._controller_answering else scene.CONTROL_TIMESTEP_S
        deadline = time.monotonic() + timeout_s
        while not self.stopped.is_set():
            command = self.link.read_command()
            if command is not None and command.answers_seq >= self._state_seq:
                self._controller_answering = True
                return True
            remaining_s = deadline - time.monotonic()
            if remaining_s < 0:
                answered_seq = -1 if command is None else command.answers_seq
                self._controller_answering = answered_seq != self._answers_seq_at_miss
                self._answers_seq_at_miss = answered_seq
                return False
            self.link.wait_for_command_bell(min(remaining_s, STOP_CHECK_S))
        return False


def _mjcf_cameras(names: tuple[str, ...]) -> dict[str, str]:
    return {name: scene.CAMERAS[name] for name in names}


def render_process_main(link_name: str, width: int, height: int, camera_rate_hz: float,
                        cameras: tuple[str, ...]) -> None:
    """The real-time sim's camera process: render the latest scene configuration at the camera rate.

    Exits when the sim's heartbeat stops (the sim ended or was killed) or its parent is gone.
    """
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the sim ends this process
    os.nice(10)  # frames may be late; physics and the 1 kHz controller may not
    link = LinkClient(link_name)
    renderer = SceneRenderer(scene.build_scene(), width, height, _mjcf_cameras(cameras))
    period_s = 1.0 / camera_rate_hz
    next_s = time.monotonic()
    try:
        while os.getppid() == parent and link.heartbeat_age_s() < STALE_AFTER_S:
            snapshot = link.read_qpos()
            if snapshot is not None:
                stamp_s, qpos = snapshot
                for name, image in renderer.render(qpos).items():
                    link.write_frame(name, image, stamp_s)
            next_s += period_s
            time.sleep(max(0.0, next_s - time.monotonic()))
            if time.monotonic() - next_s > period_s:  # rendering cannot keep up: drop frames, no pile-up
                next_s = time.monotonic()
    finally:
        renderer.close()
        link.close()


class SimProcess:
    """A SimRunner in a child process (spawned, so MuJoCo/EGL start clean): for tools and tests that need the
    sim without ROS. `stop()` ends it and waits; the link is removed by the sim itself."""

    def __init__(self, config: SimConfig, link_name: str):
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self.link_name = link_name
        self.process = ctx.Process(target=_sim_process_main, args=(config, link_name, self._stop), name="sim")
        self.process.start()

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        self.process.join(timeout=timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _sim_process_main(config: SimConfig, link_name: str, stop) -> None:
    runner = SimRunner(config, link_name)
    threading.Thread(target=lambda: (stop.wait(), runner.stop()), daemon=True).start()
    runner.run()


def connect_when_up(connect: Callable[[], None], timeout_s: float = 60.0) -> None:
    """Call `connect` until the sim's link exists (the child needs a moment to build the scene: over 20 s at load 14)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return connect()
        except RobotConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
