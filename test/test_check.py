"""`deploy check`: the bring-up pre-flight against the real embedded sim, an address where nothing listens,
cameras that are not there and one that is (a video file), and the UR path against an in-process RTDE fake."""
import os
import re
import socket
import subprocess
import sys
import time
import types

import cv2
import numpy as np
import pytest

from deploy import check
from deploy.errors import ConfigError
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.robots.ur_model import UR5eModel
from harness import wait_until

HOME_Q_RAD = [0.0, -1.57, 1.57, -1.57, -1.57, 0.0]


def deploy_check(*args: str, timeout_s: float = 240.0) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run `deploy check` as a user would; returns (exit code, {check: (status, detail)}, stdout)."""
    proc = subprocess.run([sys.executable, "-m", "deploy.cli", "check", *args], capture_output=True, text=True,
                          timeout=timeout_s, env=dict(os.environ))
    rows = {}
    for line in proc.stdout.splitlines()[:-1]:  # the last line is the summary
        name, status, detail = re.split(r"\s{2,}", line, maxsplit=2)
        rows[name] = (status, detail)
    return proc.returncode, rows, proc.stdout + proc.stderr


def test_sim_passes_and_reports_the_joint_state_rate(domain_id):
    code, rows, out = deploy_check("robot:=sim", "cameras:=")  # no renderer: the sim's physics alone
    assert code == 0, out
    assert rows["robot reachable"] == ("ok", f"sim link 'deploy_sim_{domain_id}' (started by deploy check)")
    assert rows["control mode"] == ("ok", "torque control over the sim link, real time")
    status, detail = rows["joint states"]
    assert status in ("ok", "warn") and re.fullmatch(r"\d+ Hz over \d\.\d s \(nominal 1000 Hz\).*", detail), out
    assert 20 <= float(detail.split(" Hz")[0]) <= 1100  # the sim stepped on its own 1 kHz clock (slower when busy)
    assert rows["RT kernel"][0] == "ok" and rows["DDS profile"][0] == "ok"
    assert out.splitlines()[-1] == "deploy check: all passed"
    assert not any(name.startswith(f"deploy_sim_{domain_id}") for name in os.listdir("/dev/shm"))  # sim stopped


def test_sim_of_a_running_graph_is_attached_to_not_started(launch_graph, domain_id, monkeypatch):
    graph = launch_graph("robot", "cameras:=")  # sim, controller, proprioception
    link = f"/dev/shm/deploy_sim_{domain_id}"
    assert wait_until(lambda: os.path.exists(link), timeout_s=240), graph.output[-3000:]
    monkeypatch.delenv("ROS_DOMAIN_ID")  # the domain comes from --domain-id, as with deploy launch
    code, rows, out = deploy_check("robot:=sim", "cameras:=", "--domain-id", str(domain_id))
    assert rows["robot reachable"] == ("ok", f"sim link 'deploy_sim_{domain_id}' (a running sim)"), out
    # beside a running graph the rate is the machine's (ok, warn, or FAIL when the sim barely steps)
    assert re.fullmatch(r"\d+ Hz over \d\.\d s \(nominal 1000 Hz\).*", rows["joint states"][1]), out
    assert code == (1 if rows["joint states"][0] == "FAIL" else 0), out
    assert rows["DDS profile"][1].endswith(f"ROS_DOMAIN_ID={domain_id}")
    assert os.path.exists(link) and graph.proc.poll() is None  # the graph's sim still runs


def test_franka_where_nothing_listens_fails_naming_the_address(domain_id):
    code, rows, out = deploy_check("robot:=franka", "robot_ip:=127.0.0.2", "cameras:=")
    assert code == 1
    status, detail = rows["robot reachable"]
    assert status == "FAIL" and detail.startswith("nothing answers at 127.0.0.2:1337 (Franka FCI): "), out
    assert "\n" not in detail
    assert rows["control mode"] == ("skip", "not checked: Franka at 127.0.0.2 not reachable")
    assert out.splitlines()[-1].startswith("deploy check: ") and "robot reachable" in out.splitlines()[-1]


def test_cameras_that_are_not_there_fail_their_rows_and_a_video_file_passes(domain_id, tmp_path):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (160, 120))
    for i in range(90):
        writer.write(np.full((120, 160, 3), i, dtype=np.uint8))
    writer.release()
    code, rows, out = deploy_check("robot:=external", "cameras:=front,wrist,side",
                                   "camera_serials:=front:012345678901,wrist:/dev/video63,side:" + str(clip),
                                   "--sample", "1")
    assert code == 1
    assert rows["camera front"] == ("FAIL", "no RealSense device found (looked for serial 012345678901)"), out
    assert rows["camera wrist"] == ("FAIL", "cannot open camera device /dev/video63"), out
    status, detail = rows["camera side"]
    assert status == "ok" and detail.startswith(f"video file {clip}: 160x120 at "), out  # the file's own size
    assert rows["robot reachable"][0] == "skip"  # external: checked over ROS, not here


# --- UR, against an in-process fake of ur_rtde's receive interface (no UR or URSim on this machine) -----------
class FakeReceive:
    robot_mode = 7

    def __init__(self, ip, frequency):
        self.start_s = time.monotonic()

    def getTimestamp(self):
        return 0.002 * int((time.monotonic() - self.start_s) / 0.002)

    def getRobotMode(self):
        return FakeReceive.robot_mode

    def getSafetyMode(self):
        return 1

    def getActualQ(self):
        return list(HOME_Q_RAD)

    def getActualTCPPose(self):
        position, _ = UR5eModel().ee_pose(np.array(HOME_Q_RAD))
        return [*(position + [0.0, 0.0, 0.012]), 0.0, 0.0, 0.0]  # a tool 12 mm longer than the model's

    def disconnect(self):
        pass


@pytest.fixture
def ur(monkeypatch):
    receive = types.ModuleType("rtde_receive")
    receive.RTDEReceiveInterface = FakeReceive
    monkeypatch.setitem(sys.modules, "rtde_receive", receive)
    monkeypatch.setitem(sys.modules, "rtde_control", types.ModuleType("rtde_control"))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", check.RTDE_PORT))
    listener.listen()
    yield
    listener.close()
    FakeReceive.robot_mode = 7


def rows_of(rows):
    return {row.check: (row.status, row.detail) for row in rows}


def test_ur_rows_from_rtde(ur):
    rows = rows_of(check.run_checks({"robot": "ur", "robot_ip": "127.0.0.1", "cameras": ""}, sample_s=1.0))
    assert rows["robot reachable"] == ("ok", "UR RTDE at 127.0.0.1:30004 accepts connections")
    assert rows["control mode"][0] == "ok"
    detail = rows["joint states"][1]  # 2 ms RTDE samples polled: ok, or FAIL below 450 Hz on a busy machine
    assert re.fullmatch(r"\d+ Hz over 1\.\d s \(nominal 500 Hz\)(: below 90% of nominal)?", detail), detail
    assert float(detail.split(" Hz")[0]) > 50
    assert rows["model TCP"][0] == "warn" and rows["model TCP"][1].startswith("model TCP 12.0 mm from")


def test_ur_powered_off_fails_control_mode(ur):
    FakeReceive.robot_mode = 3
    rows = check.run_checks({"robot": "ur", "robot_ip": "127.0.0.1", "cameras": ""}, sample_s=0.5)
    assert rows_of(rows)["control mode"][0] == "FAIL"
    assert rows_of(rows)["control mode"][1].startswith("robot mode 3 (want 7: RUNNING)")
    assert check.exit_code(rows) == 1


# --- Franka, against an in-process fake of pylibfranka 0.21's Robot (reading only) ------------------------------
FRANKA_Q_RAD = np.array([0.0, -0.4, 0.0, -2.2, 0.0, 1.8, 0.8])
FRANKA_O_T_EE = np.eye(4)
FRANKA_O_T_EE[:3, 3] = MujocoRobotModel().ee_pose(FRANKA_Q_RAD)[0]
FRANKA_O_T_EE = FRANKA_O_T_EE.T.ravel()  # column-major, as libfranka


class FakeFrankaRobot:
    robot_mode = "Idle"

    def __init__(self, ip, realtime_config):
        assert realtime_config == "kIgnore"  # the check only reads: it never asks for RT scheduling

    def read_once(self):
        time.sleep(0.001)  # the robot's 1 kHz state
        return types.SimpleNamespace(robot_mode=f"RobotMode.{FakeFrankaRobot.robot_mode}", q=FRANKA_Q_RAD,
                                     O_T_EE=FRANKA_O_T_EE)


@pytest.fixture
def franka(monkeypatch):
    module = types.ModuleType("pylibfranka")
    module.Robot = FakeFrankaRobot
    module.RealtimeConfig = types.SimpleNamespace(kIgnore="kIgnore", kEnforce="kEnforce")
    module.FrankaException = RuntimeError
    monkeypatch.setitem(sys.modules, "pylibfranka", module)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", check.FRANKA_PORT))
    listener.listen()
    yield
    listener.close()
    FakeFrankaRobot.robot_mode = "Idle"


def test_franka_rows_from_read_once(franka):
    rows = rows_of(check.run_checks({"robot": "franka", "robot_ip": "127.0.0.1", "cameras": ""}, sample_s=1.0))
    assert rows["robot reachable"] == ("ok", "Franka FCI at 127.0.0.1:1337 accepts connections")
    assert rows["control mode"] == ("ok", "robot mode Idle: ready for torque control")
    detail = rows["joint states"][1]  # read_once paced at ~1 ms: ok, or FAIL below 900 Hz on a busy machine
    assert re.fullmatch(r"\d+ Hz over 1\.\d s \(nominal 1000 Hz\)(: below 90% of nominal)?", detail), detail
    assert float(detail.split(" Hz")[0]) > 50
    assert rows["model TCP"] == ("ok", "model TCP 0.0 mm from the robot's O_T_EE")


def test_franka_without_pylibfranka_names_the_extra(franka, monkeypatch):
    monkeypatch.setitem(sys.modules, "pylibfranka", None)  # as on a machine without deploy[franka]
    rows = rows_of(check.run_checks({"robot": "franka", "robot_ip": "127.0.0.1", "cameras": ""}, sample_s=0.2))
    assert rows["robot reachable"][0] == "ok"
    assert rows["control mode"][0] == "FAIL"
    assert rows["control mode"][1].startswith("robot 'franka' needs the pylibfranka package: pip install "
                                              "'deploy[franka]'")


def test_franka_user_stop_fails_control_mode(franka):
    FakeFrankaRobot.robot_mode = "UserStopped"
    rows = rows_of(check.run_checks({"robot": "franka", "robot_ip": "127.0.0.1", "cameras": ""}, sample_s=0.2))
    assert rows["control mode"][0] == "FAIL"
    assert rows["control mode"][1].startswith("robot mode UserStopped, not Idle: release the user stop")


# --- single rows --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("robot, params, is_rt, status", [
    ("franka", {}, False, "FAIL"), ("franka", {}, True, "ok"), ("franka", {"realtime": False}, False, "warn"),
    ("sim", {}, False, "ok"), ("ur", {}, False, "ok")])
def test_rt_kernel_row(robot, params, is_rt, status):
    row = check._rt_kernel_row(robot, params, is_rt)
    assert row.status == status
    if status == "FAIL":
        assert "realtime:=false" in row.detail


def test_dds_profile_row_names_a_missing_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(tmp_path / "gone.xml"))
    row = check._dds_row()
    assert row.status == "FAIL" and row.detail.startswith(f"FASTDDS_DEFAULT_PROFILES_FILE={tmp_path}/gone.xml: ")


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="launch argument 'robot_ip' does not apply to robot:=sim"):
        check.run_checks({"robot": "sim", "robot_ip": "1.2.3.4"})
