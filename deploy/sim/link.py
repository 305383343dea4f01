"""The sim's "hardware bus": shared memory between the sim process and the robot / camera backends.

Like a real arm's fieldbus it carries only numbers: the state the sim samples every 1 ms, the torque command
the controller answers it with, and the latest rendered frame per camera. Every block is a seqlock: the
writer sets the block's version to -1 while writing and to a new positive value after; a reader copies and
accepts the copy only if the version was the same positive value before and after — no torn reads, no locks
shared between processes, no pickle.
"""
from __future__ import annotations

import dataclasses
import os
import select
import time
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from deploy.errors import ConfigError, RobotConnectionError

MAGIC = 0x5EED1  # identifies a deploy sim link segment
LAYOUT_VERSION = 2  # 2: the state carries the external wrench on the end effector
MODE_REALTIME, MODE_LOCKSTEP = 0.0, 1.0
# header: magic, layout, mode, sim_time_s, heartbeat_wall_s, n_cameras, height, width, nq
HEADER = 9
# state: version, seq, stamp_s, q(7), dq(7), tau(7), gripper_width_m, ee_wrench(6)
STATE = 3 + 7 * 3 + 1 + 6
# command: version, answers_seq, written_wall_s, tau(7), gripper_width_cmd_m
COMMAND = 3 + 7 + 1
FRAME_META = 3  # version, seq, stamp_s
QPOS_META = 2  # version, stamp_s; then the whole scene's qpos (arm, gripper, cube) for the renderer
STALE_AFTER_S = 2.0  # a link whose heartbeat is older belongs to a dead sim


def default_link_name() -> str:
    """One sim per ROS domain: the link is named after the domain so parallel test runs do not meet."""
    return f"deploy_sim_{os.environ.get('ROS_DOMAIN_ID', '0')}"


@dataclasses.dataclass(frozen=True)
class LinkState:
    seq: int
    stamp_s: float
    q_rad: np.ndarray
    dq_rad_s: np.ndarray
    tau_nm: np.ndarray
    gripper_width_m: float
    ee_wrench: np.ndarray  # (6,) see deploy.robots.base.RobotState.ee_wrench


@dataclasses.dataclass(frozen=True)
class LinkCommand:
    answers_seq: int
    written_wall_s: float
    tau_nm: np.ndarray
    gripper_width_m: float


def _floats(n_cameras: int, nq: int) -> int:
    return HEADER + STATE + COMMAND + QPOS_META + nq + n_cameras * FRAME_META


def _size(n_cameras: int, height: int, width: int, nq: int) -> int:
    return _floats(n_cameras, nq) * 8 + n_cameras * height * width * 3


def _seqlock_read(block: np.ndarray, attempts: int = 1000) -> np.ndarray | None:
    """A consistent copy of `block`; None if it was never written (version 0) or stayed torn `attempts` times."""
    for _ in range(attempts):
        before = block[0]
        if before == 0:  # (without this, a sim with no controller yet spent 0.7 ms per step retrying)
            return None
        copy = block.copy()
        if before > 0 and block[0] == before and copy[0] == before:
            return copy
    return None


class Doorbell:
    """A named pipe beside the segment that one side rings after a write and the other blocks on: lockstep's
    hand-overs (state -> controller, command -> sim) wake the waiter at once without either polling, which on
    2 cores took the CPU the other side and the rest of the graph needed. Opened read-write and non-blocking
    by both sides (a FIFO opened so never blocks and never lacks a reader); a ring nobody waits for stays
    until the next wait drains it, so a wait may wake once spuriously and the waiter re-checks the block."""

    def __init__(self, path: str, create: bool = False):
        self.path = path
        if create:
            if os.path.exists(path):
                os.unlink(path)
            os.mkfifo(path, 0o600)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def ring(self) -> None:
        try:
            os.write(self._fd, b"\0")
        except BlockingIOError:  # already full of rings: the waiter wakes anyway
            pass

    def wait(self, timeout_s: float) -> bool:
        """Block until rung (True, rings drained) or `timeout_s` passed (False)."""
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout_s))
        if not ready:
            return False
        try:
            os.read(self._fd, 4096)
        except BlockingIOError:
            pass
        return True

    def close(self, remove: bool = False) -> None:
        os.close(self._fd)
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _bell_paths(name: str) -> tuple[str, str]:
    """(state bell: the sim rings after each state, command bell: the controller rings after each command)"""
    return f"/dev/shm/{name}.state_bell", f"/dev/shm/{name}.command_bell"


class _Segment:
    """Numpy views onto one shared-memory segment."""

    def __init__(self, shm: shared_memory.SharedMemory, camera_names: list[str], height: int, width: int, nq: int):
        self.shm = shm
        self.camera_names = camera_names
        floats = np.ndarray((_floats(len(camera_names), nq),), np.float64, shm.buf)
        self.header = floats[:HEADER]
        self.state = floats[HEADER:HEADER + STATE]
        self.command = floats[HEADER + STATE:HEADER + STATE + COMMAND]
        qpos_start = HEADER + STATE + COMMAND
        self.qpos = floats[qpos_start:qpos_start + QPOS_META + nq]
        meta_start = qpos_start + QPOS_META + nq
        pixels_offset = floats.nbytes
        self.frame_meta = {}
        self.frames = {}
        for i, name in enumerate(camera_names):
            self.frame_meta[name] = floats[meta_start + i * FRAME_META: meta_start + (i + 1) * FRAME_META]
            self.frames[name] = np.ndarray((height, width, 3), np.uint8, shm.buf,
                                           offset=pixels_offset + i * height * width * 3)

    def write_frame(self, camera: str, image: np.ndarray, stamp_s: float) -> None:
        meta = self.frame_meta[camera]
        seq = meta[1] + 1
        meta[0] = -1.0
        self.frames[camera][:] = image
        meta[1:] = [seq, stamp_s]
        meta[0] = seq

    def release(self) -> None:
        self.header = self.state = self.command = self.qpos = None
        self.frame_meta, self.frames = {}, {}
        self.shm.close()


class LinkServer:
    """The sim's side: creates the segment, writes state and frames, reads commands."""

    def __init__(self, name: str, camera_names: list[str], height: int, width: int, mode: float, nq: int):
        try:  # a segment left by a killed sim of the same domain is taken over; a live sim's is not
            existing = shared_memory.SharedMemory(name=name)
            heartbeat_wall_s = float(np.ndarray((HEADER,), np.float64, existing.buf)[4])
            existing.close()
            if time.time() - heartbeat_wall_s < STALE_AFTER_S:
                raise ConfigError(f"a sim is already running on link '{name}' (another graph on ROS_DOMAIN_ID "
                                  f"{os.environ.get('ROS_DOMAIN_ID', '0')}?)")
            existing.unlink()
        except FileNotFoundError:
            pass
        # lockstep only, and before the segment a client attaches to: in real time the sim paces itself and the
        # controller sleeps until the next sample
        self._bells = tuple(Doorbell(path, create=True) for path in _bell_paths(name)) if mode == MODE_LOCKSTEP \
            else None
        shm = shared_memory.SharedMemory(name=name, create=True, size=_size(len(camera_names), height, width, nq))
        self.name = name
        self._seg = _Segment(shm, list(camera_names), height, width, nq)
        self._seg.header[:] = [MAGIC, LAYOUT_VERSION, mode, 0.0, time.time(), len(camera_names), height, width, nq]
        self._state_seq = 0
        self._qpos_version = 0
        # camera names travel as a small text file beside the segment (names are not numbers)
        self._names_path = f"/dev/shm/{name}.cameras"
        with open(self._names_path, "w") as f:
            f.write("\n".join(camera_names))

    def write_state(self, stamp_s: float, q_rad, dq_rad_s, tau_nm, gripper_width_m: float, ee_wrench,
                    sim_time_s: float) -> int:
        self._state_seq += 1
        block = self._seg.state
        block[0] = -1.0
        block[1:] = [self._state_seq, stamp_s, *q_rad, *dq_rad_s, *tau_nm, gripper_width_m, *ee_wrench]
        block[0] = self._state_seq
        self._seg.header[3] = sim_time_s
        self._seg.header[4] = time.time()
        if self._bells is not None:
            self._bells[0].ring()
        return self._state_seq

    def wait_for_command_bell(self, timeout_s: float) -> bool:
        """Lockstep: block until the controller wrote a command (True) or `timeout_s` passed."""
        return self._bells[1].wait(timeout_s)

    def read_command(self) -> LinkCommand | None:
        copy = _seqlock_read(self._seg.command)
        if copy is None or copy[1] <= 0:
            return None
        return LinkCommand(int(copy[1]), float(copy[2]), copy[3:10], float(copy[10]))

    def write_qpos(self, qpos: np.ndarray, stamp_s: float) -> None:
        """The whole scene's configuration, for a renderer in another process."""
        self._qpos_version += 1
        block = self._seg.qpos
        block[0] = -1.0
        block[1] = stamp_s
        block[2:] = qpos
        block[0] = self._qpos_version

    def write_frame(self, camera: str, image: np.ndarray, stamp_s: float) -> None:
        self._seg.write_frame(camera, image, stamp_s)

    def close(self) -> None:
        shm = self._seg.shm
        self._seg.release()
        shm.unlink()
        try:
            os.unlink(self._names_path)
        except FileNotFoundError:
            pass
        for bell in self._bells or ():
            bell.close(remove=True)


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Attach without registering with the resource tracker: the sim owns the segment, and a client's
    registration would make the tracker unlink it (or forget the sim's own registration) on exit.
    Python 3.13 has SharedMemory(track=False) for this."""
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


class LinkClient:
    """A backend's side: attaches to a running sim's segment."""

    def __init__(self, name: str | None = None):
        self.name = name or default_link_name()
        try:
            shm = _attach_untracked(self.name)
        except FileNotFoundError:
            raise RobotConnectionError(f"no sim on link '{self.name}': start the sim node first "
                                       f"(deploy launch sim, or sim_node on ROS_DOMAIN_ID "
                                       f"{os.environ.get('ROS_DOMAIN_ID', '0')})") from None
        header = np.ndarray((HEADER,), np.float64, shm.buf).copy()
        if time.time() - header[4] > STALE_AFTER_S:
            shm.close()
            raise RobotConnectionError(f"link '{self.name}' belongs to a sim that stopped "
                                       f"{time.time() - header[4]:.0f} s ago: start the sim node")
        if header[0] != MAGIC or header[1] != LAYOUT_VERSION:
            shm.close()
            raise RobotConnectionError(f"link '{self.name}' is not a deploy sim link (layout {header[1]:g})")
        try:
            with open(f"/dev/shm/{self.name}.cameras") as f:
                cameras = [line for line in f.read().splitlines() if line]
        except FileNotFoundError:
            cameras = []
        self.lockstep = header[2] == MODE_LOCKSTEP
        self.height, self.width = int(header[6]), int(header[7])
        self._seg = _Segment(shm, cameras, self.height, self.width, int(header[8]))
        self._write_count = 0
        self._bells = tuple(Doorbell(path) for path in _bell_paths(self.name)) if self.lockstep else None

    @property
    def camera_names(self) -> list[str]:
        return list(self._seg.camera_names)

    def sim_time_s(self) -> float:
        return float(self._seg.header[3])

    def heartbeat_age_s(self) -> float:
        return time.time() - float(self._seg.header[4])

    def state_seq(self) -> int:
        """Cheap poll: the latest state's sequence number (-1 while being written)."""
        return int(self._seg.state[0])

    def read_state(self) -> LinkState | None:
        copy = _seqlock_read(self._seg.state)
        if copy is None:
            return None
        return LinkState(int(copy[1]), float(copy[2]), copy[3:10], copy[10:17], copy[17:24], float(copy[24]),
                         copy[25:31])

    def write_command(self, answers_seq: int, tau_nm, gripper_width_m: float) -> None:
        self._write_count += 1
        block = self._seg.command
        block[0] = -1.0
        block[1], block[2], block[-1] = answers_seq, time.time(), gripper_width_m
        block[3:-1] = tau_nm
        block[0] = self._write_count
        if self._bells is not None:
            self._bells[1].ring()

    def wait_for_state_bell(self, timeout_s: float) -> bool:
        """Lockstep: block until the sim wrote a state (True) or `timeout_s` passed."""
        return self._bells[0].wait(timeout_s)

    def read_qpos(self) -> tuple[float, np.ndarray] | None:
        copy = _seqlock_read(self._seg.qpos)
        return None if copy is None else (float(copy[1]), copy[2:])

    def write_frame(self, camera: str, image: np.ndarray, stamp_s: float) -> None:
        """Used by the sim's renderer process (the renderer writes, camera backends read)."""
        self._seg.write_frame(camera, image, stamp_s)

    def read_frame(self, camera: str) -> tuple[int, float, np.ndarray] | None:
        """-> (seq, stamp_s, (H, W, 3) copy) of the camera's latest frame, None before the first."""
        meta = self._seg.frame_meta[camera]
        frame = self._seg.frames[camera]
        for _ in range(100):
            version = meta[0]
            if version <= 0:
                if meta[1] == 0:
                    return None
                continue
            image = frame.copy()
            seq, stamp_s = meta[1], meta[2]
            if meta[0] == version:
                return int(seq), float(stamp_s), image
        return None

    def close(self) -> None:
        self._seg.release()
        for bell in self._bells or ():
            bell.close()
