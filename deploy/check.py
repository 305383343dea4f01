"""`deploy check`: the bring-up pre-flight. Without moving the arm, it checks what `deploy launch real_robot`
with the same arguments would need, and reports one row per check: robot reachable, control mode available,
RT kernel, joint states at rate, model TCP vs robot TCP, each camera (resolution, fps, clock offset), the DDS
profile in force, disk space for logging. Exit code 0 when no row failed.

It resolves the real_robot graph with the caller's arguments and reads the parameters the controller and
camera nodes would start with (`effective_parameters`), so a check and a launch cannot disagree on the address,
serial or params_file. Nothing here commands the robot: Franka and UR are only read (pylibfranka `read_once`,
RTDE receive), the sim is attached to (and started, when none runs, as the graph would) and never given torques.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import statistics
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deploy.errors import ConfigError, DeployError
from deploy.graph.description import (DDS_ENV_DEFAULTS, ResolvedGraph, dds_environment, effective_parameters,
                                      resolve)

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
FRANKA_PORT = 1337  # libfranka's TCP command connection to the FCI
RTDE_PORT = 30004  # UR's RTDE interface
CONNECT_TIMEOUT_S = 3.0
RATE_FRACTION = 0.9  # a robot's joint states must arrive at >= 90 % of its nominal rate
SIM_RATE_FRACTION = 0.5  # the sim's real-time physics on a shared machine (870 Hz measured here at load 5,
# 74-115 Hz at load 11 while its renderer started): below half the row warns, as a slower sim only runs its
# world slower; it fails only when the sim barely steps (SIM_STALLED_FRACTION)
SIM_STALLED_FRACTION = 0.02
SIM_WARMUP_STEPS = 500  # the sim's first steps come while it loads the scene: measure after these
SIM_START_S = 120.0  # a spawned sim builds its scene in seconds, but in a minute or more at load 20 on 2 cores
NOMINAL_RATE_HZ = {"sim": 1000.0, "franka": 1000.0}  # ur: robot_params.frequency_hz
TCP_WARN_M = 0.005  # model TCP further than this from the robot's own TCP: Cartesian targets are offset
CAMERA_FIRST_FRAME_S = 90.0  # a sim's render process on a loaded machine needs tens of seconds for its first frame
CLOCK_OFFSET_FAIL_S = 0.5  # frames stamped further than this from host time are not on this host's clock
MIN_RECORDING_S = 600.0  # free disk for at least 10 min of raw camera frames at the configured rates
UR_ROBOT_MODE_RUNNING = 7  # RTDE robot_mode
UR_SAFETY_MODE_NORMAL = 1  # RTDE safety_mode


@dataclasses.dataclass(frozen=True)
class Row:
    check: str
    status: str  # ok | warn | FAIL | skip
    detail: str  # one line: the measurement, or why it failed


def run_checks(args: dict[str, str], sample_s: float = 2.0) -> list[Row]:
    """Every row for `deploy check <args>` (the real_robot graph's launch arguments)."""
    if not 0.2 <= sample_s <= 60.0:
        raise ConfigError(f"--sample {sample_s:g} s outside [0.2, 60]")
    graph = resolve("real_robot", args)
    robot = graph.args["robot"]
    controller = effective_parameters(graph.node("controller"))
    robot_params = {k[len("robot_params."):]: v for k, v in controller.items() if k.startswith("robot_params.")}
    checker = {"sim": _check_sim, "franka": _check_franka, "ur": _check_ur, "external": _check_external}[robot]
    with checker(graph, robot_params, sample_s) as robot_rows:
        cameras = [_camera_row(graph, name, sample_s) for name in _camera_nodes(graph)]
        rows = robot_rows.rows + robot_rows.measure()  # after the cameras: a sim's renderer has started by then
    return rows + [_rt_kernel_row(robot, robot_params, rt_kernel())] + cameras + [_dds_row(), _disk_row(graph)]


def exit_code(rows: list[Row]) -> int:
    return 1 if any(row.status == FAIL for row in rows) else 0


def format_table(rows: list[Row]) -> str:
    width = max(len(row.check) for row in rows)
    return "\n".join(f"{row.check:<{width}}  {row.status:<4}  {row.detail}" for row in rows)


# --- robot ---------------------------------------------------------------------------------------------------
class _RobotRows:
    """Rows of one robot check, and `measure()` for the rows taken after the cameras were checked; a context
    manager so whatever it started (the sim) lives while cameras are checked and is stopped afterwards."""

    def __init__(self, rows: list[Row], cleanup: Callable[[], None] | None = None,
                 measure: Callable[[], list[Row]] | None = None):
        self.rows = rows
        self.measure = measure or list
        self._cleanup = cleanup

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._cleanup is not None:
            self._cleanup()


def _unreachable(what: str, why: str) -> list[Row]:
    return [Row("robot reachable", FAIL, why)] + [Row(name, SKIP, f"not checked: {what} not reachable")
                                                  for name in ("control mode", "joint states", "model TCP")]


def _tcp_reachable(ip: str, port: int, what: str) -> str | None:
    """None when something accepts a TCP connection at ip:port, else why not (one line)."""
    try:
        with socket.create_connection((ip, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        return f"nothing answers at {ip}:{port} ({what}): {reason}"


def _rate_row(count: int, elapsed_s: float, nominal_hz: float, fraction: float = RATE_FRACTION,
              fail_fraction: float | None = None) -> Row:
    """OK at >= `fraction` of nominal; below it FAIL, or WARN down to `fail_fraction` when one is given."""
    rate_hz = count / elapsed_s if elapsed_s > 0 else 0.0
    detail = f"{rate_hz:.0f} Hz over {elapsed_s:.1f} s (nominal {nominal_hz:.0f} Hz)"
    if rate_hz >= fraction * nominal_hz:
        return Row("joint states", OK, detail)
    if fail_fraction is not None and rate_hz >= fail_fraction * nominal_hz:
        return Row("joint states", WARN, f"{detail}: below {fraction:.0%} of nominal: this machine is too busy "
                                         "for the sim's real time (its world runs slower)")
    return Row("joint states", FAIL, f"{detail}: below {(fail_fraction or fraction):.0%} of nominal")


def _tcp_row(model_m: np.ndarray, robot_m: np.ndarray, robot_frame: str) -> Row:
    error_m = float(np.linalg.norm(np.asarray(model_m) - np.asarray(robot_m)))
    detail = f"model TCP {error_m * 1000:.1f} mm from the robot's {robot_frame}"
    if error_m > TCP_WARN_M:
        return Row("model TCP", WARN, f"{detail}: Cartesian targets are for the model's TCP (tool differs?)")
    return Row("model TCP", OK, detail)


def _check_sim(graph: ResolvedGraph, robot_params: dict, sample_s: float) -> _RobotRows:
    """Attach to the sim on this domain's link like the sim backend does; when none runs, start one with the
    graph's sim parameters (real time, no controller: the arm rests on its brakes)."""
    from deploy.robots.sim import SimRobot
    from deploy.sim.link import default_link_name
    from deploy.sim.process import SimConfig, SimProcess, connect_when_up

    sim_params = effective_parameters(graph.node("sim"))
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    config = SimConfig(**{**{k: v for k, v in sim_params.items() if k in fields}, "mode": "realtime"})
    link = robot_params.get("link_name") or config.link_name or default_link_name()
    robot = SimRobot(link)
    process = None
    if not (Path("/dev/shm") / link).exists():  # a link that exists belongs to a sim starting, running or starved
        process = SimProcess(config, link)   # (heartbeat > 2 s old at load 20): attach, never start a second one
    how = "a running sim" if process is None else "started by deploy check"

    def cleanup():
        robot.stop()
        if process is not None:
            process.stop()

    try:  # an existing link's sim is past its start; a dead one's link is named after 30 s (the link's error)
        connect_when_up(robot.connect, timeout_s=SIM_START_S if process is not None else 30.0)
        if robot.wait_for_state(SIM_WARMUP_STEPS, timeout_s=SIM_START_S) is None:
            raise DeployError(f"the sim made fewer than {SIM_WARMUP_STEPS} steps in {SIM_START_S:g} s")
    except DeployError as error:
        cleanup()
        return _RobotRows(_unreachable("the sim", f"sim link '{link}': {error}"))

    def measure() -> list[Row]:
        first, start = robot.read_state(), time.monotonic()
        time.sleep(sample_s)
        last, elapsed_s = robot.read_state(), time.monotonic() - start
        return [_rate_row(last.seq - first.seq, elapsed_s, NOMINAL_RATE_HZ["sim"], SIM_RATE_FRACTION,
                          SIM_STALLED_FRACTION),
                Row("model TCP", SKIP, "the sim is the model")]

    mode = "lockstep" if robot.clock_now_s() is not None else "real time"
    rows = [Row("robot reachable", OK, f"sim link '{link}' ({how})"),
            Row("control mode", OK, f"torque control over the sim link, {mode}")]
    return _RobotRows(rows, cleanup, measure)


def _address_rows(robot: str, ip: str, port: int, service: str, powered: str) -> list[Row]:
    """The rows of an arm that has no address or does not answer on `port`; [] when it answers."""
    if not ip:
        return _unreachable(robot, "no address: give robot_ip:= (or robot_params.ip)")
    why = _tcp_reachable(ip, port, service)
    if why is not None:
        return _unreachable(f"{robot} at {ip}", f"{why} — {powered} and this host on its network?")
    return []


def _check_franka(graph: ResolvedGraph, robot_params: dict, sample_s: float) -> _RobotRows:
    ip = str(robot_params.get("ip", ""))
    unreachable = _address_rows("Franka", ip, FRANKA_PORT, "Franka FCI", "is the arm on")
    if unreachable:
        return _RobotRows(unreachable)
    from deploy.robots.franka import import_pylibfranka
    from deploy.robots.mujoco_model import MujocoRobotModel

    rows = [Row("robot reachable", OK, f"Franka FCI at {ip}:{FRANKA_PORT} accepts connections")]
    not_checked = [Row("joint states", SKIP, "not checked: no connection"), Row("model TCP", SKIP, "not checked")]
    try:
        franka = import_pylibfranka()
    except ConfigError as error:
        return _RobotRows(rows + [Row("control mode", FAIL, str(error))] + not_checked)
    try:
        robot = franka.Robot(ip, franka.RealtimeConfig.kIgnore)  # reading only: the RT row judges the kernel
        state = robot.read_once()
        start, count = time.monotonic(), 0
        while time.monotonic() - start < sample_s:
            state = robot.read_once()
            count += 1
        elapsed_s = time.monotonic() - start
    except (RuntimeError, franka.FrankaException) as error:
        return _RobotRows(rows + [Row("control mode", FAIL, f"Franka at {ip}: {error} — is FCI enabled in Desk "
                                                             "and the arm unlocked?")] + not_checked)
    mode = str(state.robot_mode).rsplit(".", 1)[-1]  # pylibfranka 0.21: RobotMode.Idle, .UserStopped, ...
    if mode == "Idle":
        rows.append(Row("control mode", OK, f"robot mode {mode}: ready for torque control"))
    else:
        rows.append(Row("control mode", FAIL, f"robot mode {mode}, not Idle: release the user stop, clear "
                                               "errors in Desk, unlock the joints"))
    rows.append(_rate_row(count, elapsed_s, NOMINAL_RATE_HZ["franka"]))
    model_m, _ = MujocoRobotModel().ee_pose(np.asarray(state.q, dtype=float))
    rows.append(_tcp_row(model_m, np.asarray(state.O_T_EE)[12:15], "O_T_EE"))
    return _RobotRows(rows)


def _check_ur(graph: ResolvedGraph, robot_params: dict, sample_s: float) -> _RobotRows:
    ip = str(robot_params.get("ip", ""))
    unreachable = _address_rows("UR", ip, RTDE_PORT, "UR RTDE", "is the arm powered on")
    if unreachable:
        return _RobotRows(unreachable)
    from deploy.robots.ur import import_rtde
    from deploy.robots.ur_model import UR5eModel

    frequency_hz = float(robot_params.get("frequency_hz", 500.0))
    rows = [Row("robot reachable", OK, f"UR RTDE at {ip}:{RTDE_PORT} accepts connections")]
    not_checked = [Row("joint states", SKIP, "not checked: no connection"), Row("model TCP", SKIP, "not checked")]
    try:
        _, rtde_receive = import_rtde()
    except ConfigError as error:
        return _RobotRows(rows + [Row("control mode", FAIL, str(error))] + not_checked)
    try:
        receive = rtde_receive.RTDEReceiveInterface(ip, frequency_hz)
    except RuntimeError as error:
        return _RobotRows(rows + [Row("control mode", FAIL, f"UR at {ip}: RTDE receive failed: {error}")]
                          + not_checked)
    try:
        robot_mode, safety_mode = int(receive.getRobotMode()), int(receive.getSafetyMode())
        if robot_mode == UR_ROBOT_MODE_RUNNING and safety_mode == UR_SAFETY_MODE_NORMAL:
            rows.append(Row("control mode", OK, "robot mode RUNNING, safety NORMAL (remote control is checked "
                                                "when the controller uploads its script)"))
        else:
            rows.append(Row("control mode", FAIL, f"robot mode {robot_mode} (want {UR_ROBOT_MODE_RUNNING}: "
                                                   f"RUNNING), safety mode {safety_mode} (want 1: NORMAL): power "
                                                   "on, release the brakes, clear protective stops"))
        stamp, count = receive.getTimestamp(), 0
        start = time.monotonic()
        while time.monotonic() - start < sample_s:
            now = receive.getTimestamp()
            if now != stamp:
                stamp, count = now, count + 1
            time.sleep(0.0002)
        rows.append(_rate_row(count, time.monotonic() - start, frequency_hz))
        model = UR5eModel(float(robot_params.get("tcp_offset_m", 0.0)))
        model_m, _ = model.ee_pose(np.asarray(receive.getActualQ(), dtype=float))
        rows.append(_tcp_row(model_m, np.asarray(receive.getActualTCPPose(), dtype=float)[:3], "actual_TCP_pose"))
    finally:
        receive.disconnect()
    return _RobotRows(rows)


def _check_external(graph: ResolvedGraph, robot_params: dict, sample_s: float) -> _RobotRows:
    topic = robot_params.get("state_topic", "/joint_states")
    note = f"robot:=external is reached over ROS topics: check with `ros2 topic hz {topic}`"
    return _RobotRows([Row(name, SKIP, note) for name in ("robot reachable", "control mode", "joint states",
                                                          "model TCP")])


def rt_kernel() -> bool:
    """A PREEMPT_RT kernel: /sys/kernel/realtime reads 1 (mainline RT), or `uname -v` says PREEMPT_RT."""
    try:
        if Path("/sys/kernel/realtime").read_text().strip() == "1":
            return True
    except OSError:
        pass
    return "PREEMPT_RT" in os.uname().version


def _rt_kernel_row(robot: str, robot_params: dict, is_rt: bool) -> Row:
    kernel = f"{os.uname().release} ({'PREEMPT_RT' if is_rt else 'no PREEMPT_RT'})"
    if robot != "franka":
        return Row("RT kernel", OK, f"{kernel}; robot:={robot} does not need one")
    if robot_params.get("realtime", True) is False:
        return Row("RT kernel", OK if is_rt else WARN, f"{kernel}; realtime:=false: libfranka will not enforce it")
    if is_rt:
        return Row("RT kernel", OK, kernel)
    return Row("RT kernel", FAIL, f"{kernel}: libfranka refuses torque control without PREEMPT_RT — boot an RT "
                                  "kernel or pass realtime:=false")


# --- cameras -------------------------------------------------------------------------------------------------
def _camera_nodes(graph: ResolvedGraph) -> list[str]:
    return [n.name for n in graph.nodes if n.executable == "camera_node"]


def _camera_row(graph: ResolvedGraph, node_name: str, sample_s: float) -> Row:
    from deploy.sensing.cameras import CameraError, camera_parameters, make_camera

    params = effective_parameters(graph.node(node_name))
    label = f"camera {params['camera_name']}"
    kind = params.get("kind", "sim")
    try:
        accepted = camera_parameters(kind)
        given = {k: v for k, v in params.items() if k in accepted and k != "link_name"}
        if "link_name" in accepted:
            given["link_name"] = params.get("link_name") or None
        if "intrinsics" in given:
            given["intrinsics"] = tuple(given["intrinsics"])
        camera = make_camera(kind, **given)
    except ConfigError as error:
        return Row(label, FAIL, str(error))
    try:
        camera.open()
        frames = _sample_frames(camera, sample_s)
    except CameraError as error:
        return Row(label, FAIL, str(error))
    finally:
        camera.close()
    if len(frames) < 2:
        return Row(label, FAIL, f"{camera.describe()}: {len(frames)} frame(s) within {CAMERA_FIRST_FRAME_S:g} s")
    height, width = frames[-1][1].image.shape[:2]
    span_s = frames[-1][1].stamp_s - frames[0][1].stamp_s
    fps = (len(frames) - 1) / span_s if span_s > 0 else float("inf")
    offset_s = statistics.median(host_s - frame.stamp_s for host_s, frame in frames)
    detail = (f"{camera.describe()}: {width}x{height} at {fps:.1f} fps, stamps {offset_s * 1000:+.0f} ms behind "
              "host time")
    if abs(offset_s) > CLOCK_OFFSET_FAIL_S:
        return Row(label, FAIL, f"{detail}: not on this host's clock")
    return Row(label, OK, detail)


def _sample_frames(camera, sample_s: float) -> list[tuple[float, Any]]:
    """(host time at read, frame) for `sample_s` after the first frame (waited for up to CAMERA_FIRST_FRAME_S)."""
    frames: list[tuple[float, Any]] = []
    deadline = time.monotonic() + CAMERA_FIRST_FRAME_S
    while time.monotonic() < deadline:
        frame = camera.read()
        if frame is not None:
            frames.append((time.time(), frame))
            if len(frames) == 1:
                deadline = time.monotonic() + sample_s
        time.sleep(0.002)
    return frames


# --- host ----------------------------------------------------------------------------------------------------
def _dds_row() -> Row:
    """The DDS environment a launched graph gets: `deploy launch` forces the package's; `ros2 launch` keeps
    values exported in this shell."""
    try:
        package = dds_environment()
    except ConfigError as error:
        return Row("DDS profile", FAIL, str(error))
    in_force = {name: os.environ.get(name, value) for name, value in package.items()}
    profile = Path(in_force["FASTDDS_DEFAULT_PROFILES_FILE"])
    try:
        ElementTree.parse(profile)
    except (OSError, ElementTree.ParseError) as error:
        return Row("DDS profile", FAIL, f"FASTDDS_DEFAULT_PROFILES_FILE={profile}: {error}")
    detail = (f"{profile}, ROS_AUTOMATIC_DISCOVERY_RANGE={in_force['ROS_AUTOMATIC_DISCOVERY_RANGE']}, "
              f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}")
    if in_force != package:
        return Row("DDS profile", WARN, f"{detail}: exported in this shell, not the package's "
                                        f"({DDS_ENV_DEFAULTS['FASTDDS_DEFAULT_PROFILES_FILE']}); ros2 launch "
                                        "keeps yours, deploy launch uses the package's")
    return Row("DDS profile", OK, f"the package's: {detail}")


def _disk_row(graph: ResolvedGraph) -> Row:
    """Free space where bags go (bag:= or runs/bags) against MIN_RECORDING_S of the graph's raw camera frames."""
    folder = Path(graph.args.get("bag") or "runs/bags").expanduser().resolve()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    free_b = shutil.disk_usage(existing).free
    rate_b_s = sum(_camera_bytes_per_s(effective_parameters(graph.node(name))) for name in _camera_nodes(graph))
    need_b = max(1e9, rate_b_s * MIN_RECORDING_S)
    minutes = f", {free_b / rate_b_s / 60:.0f} min of raw camera frames" if rate_b_s > 0 else ""
    detail = f"{free_b / 1e9:.1f} GB free at {existing}{minutes}"
    if free_b < need_b:
        return Row("disk for logging", FAIL, f"{detail}: need {need_b / 1e9:.1f} GB "
                                             f"({MIN_RECORDING_S / 60:.0f} min at {rate_b_s / 1e6:.1f} MB/s)")
    return Row("disk for logging", OK, detail)


def _camera_bytes_per_s(params: dict) -> float:
    """rgb8 bytes per second a camera node publishes (its output size; a sim camera: 128x128 at 30 Hz)."""
    width = params.get("output_width") or params.get("width") or 128
    height = params.get("output_height") or params.get("height") or 128
    return 3.0 * width * height * float(params.get("fps") or 30.0)
