"""Camera-image transport between processes, per DDS transport setting, and proof that nothing left the host.

Two cameras' worth of 640x480 rgb8 sensor_msgs/Image at 30 Hz each, best-effort sensor-data QoS (as the camera
node publishes), from a publisher process to a subscriber process for --seconds. Reports loss % and latency
p50/p99 (header stamp = wall clock just before publish -> wall clock in the subscriber callback; same host).

Settings (each in its own ROS_DOMAIN_ID; `--settings` picks, default: default shipped):
  default            ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, no profile: rmw_fastrtps installs its own transports
                     (shared memory with the 512 KB default segment + UDPv4 with system socket buffers) and
                     ignores FASTDDS_BUILTIN_TRANSPORTS and the profile's transports.
  shipped            what every launched graph gets, deploy.graph.description.DDS_ENV_DEFAULTS: SYSTEM_DEFAULT +
                     config/fastdds_localhost.xml (16 MB shared memory + loopback-only UDPv4).
  loopback_udp, localhost+buffers, localhost+shm, localhost+shipped   evaluated alternatives (PROFILES below).

Leak check: while a setting runs, every UP interface is sniffed (AF_PACKET, needs root) for UDP packets on the
setting's RTPS ports or with an RTPS header (loopback is the control that the sniffer sees DDS traffic), and the
UDP sockets of both processes are listed (`ss -uanp`). Run it outside the private network namespace so that
the non-loopback interfaces exist:

    python bench/camera_transport.py --seconds 60 [--settings default shipped loopback_udp ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, RATE_HZ = 640, 480, 30.0
RTPS_PORT_BASE, RTPS_DOMAIN_GAIN = 7400, 250  # RTPS spec 9.6.1.1: a domain's ports are [PB + DG*d, PB + DG*(d+1))


def _profile(transports: dict[str, str], participant_rtps: str = "", loopback_locators: bool = False) -> str:
    """A Fast DDS profile: `transports` (id -> descriptor body) as the only user transports when given."""
    descriptors = "".join(f"<transport_descriptor><transport_id>{tid}</transport_id>{body}</transport_descriptor>"
                          for tid, body in transports.items())
    if transports:
        participant_rtps += ("<userTransports>" + "".join(f"<transport_id>{tid}</transport_id>" for tid in transports)
                             + "</userTransports><useBuiltinTransports>false</useBuiltinTransports>")
    if loopback_locators:
        loopback = "<locator><udpv4><address>127.0.0.1</address></udpv4></locator>"
        participant_rtps += (f"<builtin><metatrafficUnicastLocatorList>{loopback}</metatrafficUnicastLocatorList>"
                             f"<initialPeersList>{loopback}</initialPeersList></builtin>")
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com"><profiles>
  <transport_descriptors>{descriptors}</transport_descriptors>
  <participant profile_name="bench" is_default_profile="true"><rtps>{participant_rtps}</rtps></participant>
</profiles></dds>
"""


SHM_16MB = "<type>SHM</type><segment_size>16777216</segment_size>"
LOOPBACK_UDP_4MB = ("<type>UDPv4</type><interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>"
                    "<sendBufferSize>4194304</sendBufferSize><receiveBufferSize>4194304</receiveBufferSize>"
                    "<maxInitialPeersRange>32</maxInitialPeersRange>")
PROFILES = {  # evaluated alternatives to the shipped profile
    # participant-wide socket buffers: applied to the rmw's own UDPv4 transport (its buffer sizes are 0)
    "buffers": _profile({}, "<sendSocketBufferSize>4194304</sendSocketBufferSize>"
                            "<listenSocketBufferSize>4194304</listenSocketBufferSize>"),
    # a 16 MB shared-memory segment (under LOCALHOST the rmw appends its own SHM + UDPv4 after it)
    "shm": _profile({"shm_large": SHM_16MB}),
    # the shipped profile without shared memory: loopback-only UDPv4 with 4 MB socket buffers
    "loopback_udp": _profile({"loopback_udp": LOOPBACK_UDP_4MB}, loopback_locators=True),
}


@dataclass(frozen=True)
class Setting:
    discovery_range: str  # ROS_AUTOMATIC_DISCOVERY_RANGE ("" = the shipped one)
    profile: str | None  # None = no Fast DDS profile, "shipped" = the package's, else a key of PROFILES
    what: str


SETTINGS = {
    "default": Setting("LOCALHOST", None, "LOCALHOST, rmw_fastrtps's own transports"),
    "shipped": Setting("", "shipped", "DDS_ENV_DEFAULTS: SYSTEM_DEFAULT + config/fastdds_localhost.xml"),
    "loopback_udp": Setting("SYSTEM_DEFAULT", "loopback_udp", "SYSTEM_DEFAULT + loopback UDPv4 4 MB only"),
    "localhost+buffers": Setting("LOCALHOST", "buffers", "LOCALHOST + participant socket buffers 4 MB"),
    "localhost+shm": Setting("LOCALHOST", "shm", "LOCALHOST + 16 MB SHM profile"),
    "localhost+shipped": Setting("LOCALHOST", "shipped", "LOCALHOST + the shipped profile"),
}
DEFAULT_SETTINGS = ("default", "shipped")


def topics(cameras: int) -> list[str]:
    return [f"/bench/camera{i}/image_raw" for i in range(cameras)]


# ---------------------------------------------------------------------------------------- the two processes ---
def run_publisher(cameras: int, seconds: float, out: Path) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_camera_pub")
    pubs = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in topics(cameras)]
    deadline = time.monotonic() + 20.0
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let both sides finish discovery
    data = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8).tobytes()
    msgs = []
    for _ in range(cameras):
        msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
        msg.data = data
        msgs.append(msg)
    sent = 0
    cpu0, start = time.process_time(), time.monotonic()
    due = start
    while due - start < seconds:
        time.sleep(max(0.0, due - time.monotonic()))
        for pub, msg in zip(pubs, msgs):
            now_ns = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
            msg.header.frame_id = str(sent)
            pub.publish(msg)
        sent += 1
        due += 1.0 / RATE_HZ
    cpu = time.process_time() - cpu0
    out.write_text(json.dumps({"sent_per_camera": sent, "cpu_s": cpu, "wall_s": time.monotonic() - start}))
    node.destroy_node()
    rclpy.try_shutdown()


def run_subscriber(cameras: int, history_depth: int, stop_file: Path, out: Path) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_camera_sub")
    received: dict[str, list] = {t: [] for t in topics(cameras)}

    def on_image(topic):
        def callback(msg):
            now_ns = time.time_ns()
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            received[topic].append((int(msg.header.frame_id), (now_ns - stamp_ns) * 1e-6, len(msg.data)))
        return callback

    qos = QoSProfile(depth=history_depth, reliability=qos_profile_sensor_data.reliability,
                     history=qos_profile_sensor_data.history)
    for t in topics(cameras):
        node.create_subscription(Image, t, on_image(t), qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    cpu0 = time.process_time()
    while not stop_file.exists():
        executor.spin_once(timeout_sec=0.1)
    out.write_text(json.dumps({"received": received, "cpu_s": time.process_time() - cpu0}))
    node.destroy_node()
    rclpy.try_shutdown()


# ------------------------------------------------------------------------------------------- leak evidence ---
class WireWatch:
    """Counts UDP packets that belong to one DDS domain (its RTPS port range or an RTPS header), in both
    directions, on every UP interface while it runs; loopback is the control that the sniffer sees DDS traffic.
    Needs CAP_NET_RAW (root)."""

    def __init__(self, domain_id: int):
        self.ports = range(RTPS_PORT_BASE + RTPS_DOMAIN_GAIN * domain_id,
                           RTPS_PORT_BASE + RTPS_DOMAIN_GAIN * (domain_id + 1))
        self.interfaces = [name for _, name in socket.if_nameindex() if _is_up(name)]
        self.packets = {name: 0 for name in self.interfaces}  # our domain's packets seen per interface
        self.frames = {name: 0 for name in self.interfaces}  # all frames seen (the sniffer works)
        self._stop = threading.Event()
        self._threads = []

    def __enter__(self):
        for name in self.interfaces:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
            sock.bind((name, 0))
            sock.settimeout(0.2)
            thread = threading.Thread(target=self._sniff, args=(name, sock), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _sniff(self, name: str, sock: socket.socket):
        with sock:
            while not self._stop.is_set():
                try:
                    frame = sock.recv(128)  # headers + the RTPS magic are enough; the rest is not copied
                except socket.timeout:
                    continue
                self.frames[name] += 1
                if self._is_ours(frame):
                    self.packets[name] += 1

    def _is_ours(self, frame: bytes) -> bool:
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:  # IPv4, UDP
            return False
        ihl = (frame[14] & 0x0F) * 4
        src, dst = struct.unpack("!HH", frame[14 + ihl:14 + ihl + 4])
        payload = frame[14 + ihl + 8:14 + ihl + 12]
        return src in self.ports or dst in self.ports or payload == b"RTPS"


def _is_up(interface: str) -> bool:
    try:
        return Path(f"/sys/class/net/{interface}/operstate").read_text().strip() in ("up", "unknown")
    except OSError:
        return False


def udp_bindings(pids: list[int]) -> list[str]:
    """Local addresses of the UDP sockets the given processes hold (from `ss -uanp`)."""
    try:
        lines = subprocess.run(["ss", "-uanp"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = set()
    for line in lines:
        if any(f"pid={pid}," in line for pid in pids):
            local = line.split()[3]  # State Recv-Q Send-Q Local Peer Process
            found.add(re.sub(r":\d+$", "", local))
    return sorted(found)


# ------------------------------------------------------------------------------------------------ a setting ---
def setting_environment(setting: Setting, workdir: Path) -> dict[str, str]:
    """The DDS variables of one setting (everything else of ours is removed from the environment)."""
    if setting.profile == "shipped":
        from deploy.graph.description import DDS_ENV_DEFAULTS

        env = dict(DDS_ENV_DEFAULTS)
        if setting.discovery_range:
            env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = setting.discovery_range
        return env
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": setting.discovery_range}
    if setting.profile is not None:
        path = workdir / f"{setting.profile}.xml"
        path.write_text(PROFILES[setting.profile])
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(path)
    return env


def measure(name: str, setting: Setting, domain_id: int, seconds: float, cameras: int, history_depth: int,
            workdir: Path, watch_wire: bool) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FASTDDS_", "FASTRTPS_", "ROS_AUTOMATIC_DISCOVERY", "ROS_STATIC_PEERS"))}
    dds = setting_environment(setting, workdir)
    env.update(dds, ROS_DOMAIN_ID=str(domain_id), RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1")
    stop_file, sub_out, pub_out = (workdir / f"{domain_id}.{suffix}" for suffix in ("stop", "sub.json", "pub.json"))
    me = [sys.executable, os.path.abspath(__file__), "--cameras", str(cameras)]
    watch = WireWatch(domain_id) if watch_wire else None
    sub = pub = None
    bindings: list[str] = []
    try:
        if watch is not None:
            watch.__enter__()
        sub = subprocess.Popen(me + ["--role", "sub", "--history-depth", str(history_depth), "--stop-file",
                                     str(stop_file), "--out", str(sub_out)], env=env)
        time.sleep(1.0)
        pub = subprocess.Popen(me + ["--role", "pub", "--seconds", str(seconds), "--out", str(pub_out)], env=env)
        time.sleep(min(5.0, seconds / 2))
        bindings = udp_bindings([sub.pid, pub.pid])
        pub.wait(timeout=seconds + 60)
        time.sleep(1.0)  # in-flight frames
        stop_file.touch()
        sub.wait(timeout=30)
    finally:
        for proc in (pub, sub):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if watch is not None:
            watch.__exit__(None, None, None)
    sent = json.loads(pub_out.read_text())
    got = json.loads(sub_out.read_text())
    rows = [r for t in topics(cameras) for r in got["received"][t]]
    total = sent["sent_per_camera"] * cameras
    latency = np.array([r[1] for r in rows]) if rows else np.array([np.nan])
    return {"setting": name, "what": setting.what, "env": dds, "sent": total, "received": len(rows),
            "loss_pct": 100.0 * (1 - len(rows) / total) if total else float("nan"),
            "p50_ms": float(np.percentile(latency, 50)), "p99_ms": float(np.percentile(latency, 99)),
            "max_ms": float(np.max(latency)),
            "pub_cpu_pct": 100.0 * sent["cpu_s"] / sent["wall_s"], "sub_cpu_pct": 100.0 * got["cpu_s"] / sent["wall_s"],
            "udp_bound_to": bindings,
            "loopback_packets": None if watch is None else watch.packets.get("lo", 0),
            "off_host_packets": None if watch is None else sum(n for k, n in watch.packets.items() if k != "lo"),
            "off_host_interfaces": None if watch is None else {k: {"ours": watch.packets[k], "frames": watch.frames[k]}
                                                                for k in watch.interfaces}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing time per setting [s]")
    parser.add_argument("--settings", nargs="*", default=list(DEFAULT_SETTINGS), choices=list(SETTINGS),
                        help="which settings to run")
    parser.add_argument("--first-domain-id", type=int, default=200, help="setting i runs on domain id first + i")
    parser.add_argument("--cameras", type=int, default=2, help="image streams, each 640x480 at 30 Hz")
    parser.add_argument("--history-depth", type=int, default=5,
                        help="subscriber queue per topic (5 = sensor-data QoS, as the nodes subscribe); frames "
                             "overwritten there while the subscriber process is descheduled count as lost")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "pub":
        return run_publisher(args.cameras, args.seconds, Path(args.out))
    if args.role == "sub":
        return run_subscriber(args.cameras, args.history_depth, Path(args.stop_file), Path(args.out))

    watch_wire = os.geteuid() == 0 and any(name != "lo" for _, name in socket.if_nameindex())
    if not watch_wire:
        print("leak check off: needs root and a non-loopback interface (run outside `unshare -n`)", flush=True)
    load = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.settings):
            result = measure(name, SETTINGS[name], args.first_domain_id + i, args.seconds, args.cameras,
                             args.history_depth, Path(tmp), watch_wire)
            results.append(result)
            print(f"{name}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items() if k != 'setting'})}",
                  flush=True)
    print(f"\n{args.cameras} x {WIDTH}x{HEIGHT} rgb8 @ {RATE_HZ:g} Hz, best effort, subscriber history "
          f"{args.history_depth}, {args.seconds:g} s per setting; "
          f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"| {'setting':18} | loss % | p50 ms | p99 ms | max ms | pub CPU % | sub CPU % | UDP bound to | "
          f"DDS pkts on lo | off-host |")
    print(f"|{'-' * 20}|--------|--------|--------|--------|-----------|-----------|--------------|"
          f"----------------|----------|")
    for r in results:
        lo, leak = ("n/a", "n/a") if r["off_host_packets"] is None else (r["loopback_packets"], r["off_host_packets"])
        print(f"| {r['setting']:18} | {r['loss_pct']:6.2f} | {r['p50_ms']:6.2f} | {r['p99_ms']:6.2f} | {r['max_ms']:6.1f} "
              f"| {r['pub_cpu_pct']:9.0f} | {r['sub_cpu_pct']:9.0f} | {','.join(r['udp_bound_to']) or '-':12} "
              f"| {lo:>14} | {leak:>8} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
