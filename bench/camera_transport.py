"""Camera-image transport between processes, per Fast DDS transport setting.

Two cameras' worth of 640x480 rgb8 sensor_msgs/Image at 30 Hz each, best-effort sensor-data QoS (as the camera
node publishes), from a publisher process to a subscriber process for --seconds. Reports loss % and latency
p50/p99 (header stamp = wall clock just before publish -> wall clock in the subscriber callback; same host).

Each setting runs in its own ROS_DOMAIN_ID with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (nothing leaves the
machine). Results pass between processes as JSON files.

    python bench/camera_transport.py --seconds 20
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, RATE_HZ, CAMERAS = 640, 480, 30.0, 2
UNSET = None
SETTINGS = {  # label -> FASTDDS_BUILTIN_TRANSPORTS value (None = unset: Fast DDS default, UDPv4 + SHM)
    "unset (default)": UNSET,
    "UDPv4?sockets_size=4MB (DDS_ENV_DEFAULTS)": "UDPv4?sockets_size=4MB",
    "SHM": "SHM",
    "DEFAULT (UDPv4+SHM)": "DEFAULT",
    "LARGE_DATA": "LARGE_DATA",
    "LARGE_DATA?sockets_size=4MB": "LARGE_DATA?sockets_size=4MB",
}
DEFAULT_SETTINGS = ("unset (default)", "UDPv4?sockets_size=4MB (DDS_ENV_DEFAULTS)", "SHM")


def topics():
    return [f"/bench/camera{i}/image_raw" for i in range(CAMERAS)]


def run_publisher(seconds: float, out: Path) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_camera_pub")
    pubs = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in topics()]
    deadline = time.monotonic() + 20.0
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let both sides finish discovery
    data = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8).tobytes()
    msgs = []
    for i in range(CAMERAS):
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


def run_subscriber(stop_file: Path, out: Path) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_camera_sub")
    received: dict[str, list] = {t: [] for t in topics()}

    def on_image(topic):
        def callback(msg):
            now_ns = time.time_ns()
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            received[topic].append((int(msg.header.frame_id), (now_ns - stamp_ns) * 1e-6, len(msg.data)))
        return callback

    for t in topics():
        node.create_subscription(Image, t, on_image(t), qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    cpu0 = time.process_time()
    while not stop_file.exists():
        executor.spin_once(timeout_sec=0.1)
    out.write_text(json.dumps({"received": received, "cpu_s": time.process_time() - cpu0}))
    node.destroy_node()
    rclpy.try_shutdown()


def measure(label: str, transports: str | None, domain_id: int, seconds: float, workdir: Path,
            discovery_range: str = "LOCALHOST") -> dict:
    env = dict(os.environ)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    if transports is not None:
        env["FASTDDS_BUILTIN_TRANSPORTS"] = transports
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE=discovery_range,
               RMW_IMPLEMENTATION="rmw_fastrtps_cpp", PYTHONUNBUFFERED="1")
    stop_file, sub_out, pub_out = workdir / f"{domain_id}.stop", workdir / f"{domain_id}.sub.json", workdir / f"{domain_id}.pub.json"
    me = [sys.executable, os.path.abspath(__file__), "--cameras", str(CAMERAS)]
    sub = subprocess.Popen(me + ["--role", "sub", "--stop-file", str(stop_file), "--out", str(sub_out)], env=env)
    pub = None
    try:
        time.sleep(1.0)
        pub = subprocess.Popen(me + ["--role", "pub", "--seconds", str(seconds), "--out", str(pub_out)], env=env)
        pub.wait(timeout=seconds + 60)
        time.sleep(1.0)  # in-flight frames
        stop_file.touch()
        sub.wait(timeout=30)
    finally:
        for proc in (pub, sub):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    sent = json.loads(pub_out.read_text())
    got = json.loads(sub_out.read_text())
    rows = [r for t in topics() for r in got["received"][t]]
    total = sent["sent_per_camera"] * CAMERAS
    latency = np.array([r[1] for r in rows]) if rows else np.array([np.nan])
    return {"setting": label, "sent": total, "received": len(rows),
            "loss_pct": 100.0 * (1 - len(rows) / total) if total else float("nan"),
            "p50_ms": float(np.percentile(latency, 50)), "p99_ms": float(np.percentile(latency, 99)),
            "max_ms": float(np.max(latency)),
            "pub_cpu_pct": 100.0 * sent["cpu_s"] / sent["wall_s"], "sub_cpu_pct": 100.0 * got["cpu_s"] / sent["wall_s"]}


def main():
    global CAMERAS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing time per setting [s]")
    parser.add_argument("--settings", nargs="*", default=list(DEFAULT_SETTINGS),
                        help=f"which settings (labels or raw FASTDDS_BUILTIN_TRANSPORTS values); known: {list(SETTINGS)}")
    parser.add_argument("--first-domain-id", type=int, default=200, help="setting i runs on domain id first + i")
    parser.add_argument("--cameras", type=int, default=2, help="image streams, each 640x480 at 30 Hz")
    parser.add_argument("--discovery-range", default="LOCALHOST", choices=("LOCALHOST", "SUBNET"),
                        help="SUBNET only inside a loopback-only network namespace: unshare -n sh -c "
                             "'ip link set lo up; python bench/camera_transport.py --discovery-range SUBNET'")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--role", choices=("pub", "sub"), help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    CAMERAS = args.cameras
    if args.role == "pub":
        return run_publisher(args.seconds, Path(args.out))
    if args.role == "sub":
        return run_subscriber(Path(args.stop_file), Path(args.out))

    if args.discovery_range != "LOCALHOST" and [name for _, name in socket.if_nameindex()] != ["lo"]:
        sys.exit("--discovery-range SUBNET multicasts on every interface: run it in a loopback-only netns (unshare -n)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.settings):
            transports = SETTINGS.get(name, name)
            label = name if name in SETTINGS else f"FASTDDS_BUILTIN_TRANSPORTS={name}"
            result = measure(label, transports, args.first_domain_id + i, args.seconds, Path(tmp), args.discovery_range)
            results.append(result)
            print(f"{label}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items() if k != 'setting'})}",
                  flush=True)
    print(f"\n{CAMERAS} x {WIDTH}x{HEIGHT} rgb8 @ {RATE_HZ:g} Hz, best effort, {args.seconds:g} s per setting, "
          f"ROS_AUTOMATIC_DISCOVERY_RANGE={args.discovery_range}")
    print(f"| {'FASTDDS_BUILTIN_TRANSPORTS':44} | loss % | p50 ms | p99 ms | max ms | pub CPU % | sub CPU % |")
    print(f"|{'-' * 46}|--------|--------|--------|--------|-----------|-----------|")
    for r in results:
        print(f"| {r['setting']:44} | {r['loss_pct']:6.2f} | {r['p50_ms']:6.2f} | {r['p99_ms']:6.2f} | {r['max_ms']:6.1f} "
              f"| {r['pub_cpu_pct']:9.0f} | {r['sub_cpu_pct']:9.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
