"""Every message <-> array conversion of the package, as `*_to_msg` / `*_from_msg` pairs.

The core (`deploy/`, `policies/`) never sees a message; nodes call these. Mappings that are not obvious:
- Cartesian action chunk = trajectory_msgs/MultiDOFJointTrajectory, header.stamp = observation time,
  header.frame_id = "base", joint_names = ["tcp", "gripper"]; per point: transforms[0] = TCP pose,
  transforms[1].translation.x = gripper width [m]; time_from_start = offset from the stamp.
- Joint action chunk = trajectory_msgs/JointTrajectory with joint names joint1..joint7 + "gripper".
- Robot state (/robot/joint_states) = sensor_msgs/JointState, arm joints joint1..jointN (N from the robot:
  7 Panda, 6 UR) + "gripper" (position = width [m]). A foreign JointState (ros2_control's
  joint_state_broadcaster) is read by the joint names the backend gives, in any order.
- Gripper width command = std_msgs/Float64, data = width [m].
- External wrench on the end effector (/robot/ee_wrench, /proprio/ee_wrench, the sim's /sim/ee_wrench push) =
  geometry_msgs/WrenchStamped, header.stamp = the state sample's stamp, frame_id "base": force [N] and torque
  about the TCP [N m], both in the base frame (deploy.robots.base.RobotState.ee_wrench).
- Chunk execution status = std_msgs/Float64MultiArray whose layout.dim labels name the fields.
- JPEG image = sensor_msgs/CompressedImage with format "rgb8; jpeg compressed bgr8" (what image_transport's
  compressed plugin writes, so rqt/Foxglove/image_transport decode it); data = the JPEG file bytes.
- Chunk weight version = std_msgs/Header on /policy/chunk_version, published right before each chunk:
  stamp = the chunk's header.stamp (same nanoseconds), frame_id = the weight version (sha256 prefix of the
  weights file, or "scripted-<name>"). A log joins chunks to versions by exact stamp equality; the chunk's own
  frame_id stays "base". The current version is also latched on /policy/weight_version (std_msgs/String).
- Operator input (deploy.teleop.mapping) = sensor_msgs/Joy (axes, buttons as received) and/or
  geometry_msgs/TwistStamped; our operator nodes publish the twist normalised to -1..1 (fraction of full speed,
  frame_id "base") and the buttons deadman, gripper, success, failure, rerecord.
- Bags keep messages serialized (CDR bytes, typed by ROS 2 names such as "sensor_msgs/msg/Image"):
  `message_class` / `message_from_cdr` turn them into messages; QoS travels as deploy.bags.topics.QosSpec.
"""
from __future__ import annotations

import importlib

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Transform, TwistStamped, WrenchStamped
from rclpy.duration import Duration as RosDuration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState, Joy
from std_msgs.msg import Float64, Float64MultiArray, Header, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint, MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

from deploy.bags.topics import GRIPPER_JOINT, QosSpec
from deploy.control.chunks import CARTESIAN, JOINT, ActionSpace, Chunk

BASE_FRAME = "base"


def arm_joint_names(dof: int) -> list[str]:
    """joint1..joint<dof>: the package's own names for an arm's joints."""
    return [f"joint{i}" for i in range(1, dof + 1)]


ARM_JOINT_NAMES = arm_joint_names(7)  # joint-space chunks: a 7-joint arm
CARTESIAN_JOINT_NAMES = ["tcp", GRIPPER_JOINT]


def time_to_msg(stamp_s: float) -> Time:
    nanoseconds = int(round(stamp_s * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def time_from_msg(msg: Time) -> float:
    return msg.sec + msg.nanosec * 1e-9


def duration_to_msg(seconds: float) -> Duration:
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def duration_from_msg(msg: Duration) -> float:
    return msg.sec + msg.nanosec * 1e-9


def _transform(position, quat_xyzw) -> Transform:
    t = Transform()
    t.translation.x, t.translation.y, t.translation.z = (float(v) for v in position)
    t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w = (float(v) for v in quat_xyzw)
    return t


def chunk_to_msg(chunk: Chunk, space: ActionSpace) -> MultiDOFJointTrajectory | JointTrajectory:
    if space is CARTESIAN:
        msg = MultiDOFJointTrajectory()
        msg.joint_names = list(CARTESIAN_JOINT_NAMES)
        for t_s, action in zip(chunk.times_s, chunk.actions):
            point = MultiDOFJointTrajectoryPoint()
            point.transforms = [_transform(action[0:3], action[3:7]), _transform((action[7], 0.0, 0.0), (0, 0, 0, 1))]
            point.time_from_start = duration_to_msg(float(t_s))
            msg.points.append(point)
    else:
        msg = JointTrajectory()
        msg.joint_names = ARM_JOINT_NAMES + [GRIPPER_JOINT]
        for t_s, action in zip(chunk.times_s, chunk.actions):
            msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in action],
                                                   time_from_start=duration_to_msg(float(t_s))))
    msg.header.stamp = time_to_msg(chunk.stamp_s)
    msg.header.frame_id = BASE_FRAME
    return msg


def chunk_from_msg(msg: MultiDOFJointTrajectory | JointTrajectory, weight_version: str = "") -> tuple[Chunk, ActionSpace]:
    """Message -> (Chunk, space). Shape problems surface as ChunkError when the Chunk validates itself."""
    times_s = np.array([duration_from_msg(p.time_from_start) for p in msg.points])
    if isinstance(msg, MultiDOFJointTrajectory):
        space = CARTESIAN
        rows = []
        for p in msg.points:
            tcp, gripper = p.transforms[0], p.transforms[1] if len(p.transforms) > 1 else None
            rows.append([tcp.translation.x, tcp.translation.y, tcp.translation.z,
                         tcp.rotation.x, tcp.rotation.y, tcp.rotation.z, tcp.rotation.w,
                         gripper.translation.x if gripper is not None else np.nan])
        actions = np.array(rows, dtype=float).reshape(len(rows), 8)
    else:
        space = JOINT
        actions = np.array([list(p.positions) for p in msg.points], dtype=float)
    chunk = Chunk(stamp_s=time_from_msg(msg.header.stamp), times_s=times_s, actions=actions,
                  weight_version=weight_version)
    return chunk, space


def image_to_msg(image_rgb: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    """HxWx3 uint8 -> Image; `tobytes()` keeps this under a millisecond (per-element assignment is ~250 ms)."""
    msg = Image()
    msg.header.stamp = time_to_msg(stamp_s)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image_rgb.shape[0]), int(image_rgb.shape[1])
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(image_rgb, dtype=np.uint8).tobytes()
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    if msg.encoding != "rgb8":
        raise ValueError(f"image encoding '{msg.encoding}' is not supported (expected rgb8)")
    return np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)


JPEG_FORMAT = "rgb8; jpeg compressed bgr8"


def compressed_image_to_msg(image_rgb: np.ndarray, stamp_s: float, frame_id: str, quality: int = 90) -> CompressedImage:
    """HxWx3 uint8 RGB -> JPEG CompressedImage (OpenCV encodes BGR, so one cvtColor first)."""
    import cv2

    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding of a {image_rgb.shape} image failed")
    msg = CompressedImage()
    msg.header.stamp = time_to_msg(stamp_s)
    msg.header.frame_id = frame_id
    msg.format = JPEG_FORMAT
    msg.data = jpeg.tobytes()
    return msg


def compressed_image_from_msg(msg: CompressedImage) -> np.ndarray:
    """JPEG CompressedImage -> HxWx3 uint8 RGB."""
    import cv2

    if "jpeg" not in msg.format:
        raise ValueError(f"compressed image format '{msg.format}' is not supported (expected jpeg)")
    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("compressed image data is not a decodable JPEG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def camera_info_to_msg(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                       stamp_s: float, frame_id: str) -> CameraInfo:
    msg = CameraInfo()
    msg.header.stamp = time_to_msg(stamp_s)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def joint_state_to_msg(stamp_s: float, q_rad, dq_rad_s, tau_nm, gripper_width_m: float) -> JointState:
    """Arm joints joint1..jointN (N = len(q_rad)) + "gripper"."""
    msg = JointState()
    msg.header.stamp = time_to_msg(stamp_s)
    msg.name = arm_joint_names(len(q_rad)) + [GRIPPER_JOINT]
    msg.position = [float(v) for v in q_rad] + [float(gripper_width_m)]
    msg.velocity = [float(v) for v in dq_rad_s] + [0.0]
    msg.effort = [float(v) for v in tau_nm] + [0.0]
    return msg


def joint_state_from_msg(msg: JointState, joint_names=None, gripper_joint: str = GRIPPER_JOINT
                         ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, float]:
    """-> (stamp_s, q (N,), dq (N,), tau (N,), gripper_width_m), picked by name in `joint_names` order.

    joint_names None: the package's own joint1..jointN, N as many as the message has in sequence. Missing
    velocities/efforts read as zeros, a missing gripper entry as NaN (unknown).
    """
    index = {name: i for i, name in enumerate(msg.name)}
    if joint_names is None:
        dof = 0
        while f"joint{dof + 1}" in index:
            dof += 1
        joint_names = arm_joint_names(dof) if dof else ARM_JOINT_NAMES
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ValueError(f"JointState lacks joints {missing}")
    arm = [index[n] for n in joint_names]
    position = np.asarray(msg.position, dtype=float)
    if len(position) != len(msg.name):
        raise ValueError(f"JointState has {len(msg.name)} names but {len(position)} positions")
    velocity = np.asarray(msg.velocity, dtype=float) if len(msg.velocity) else np.zeros(len(position))
    effort = np.asarray(msg.effort, dtype=float) if len(msg.effort) else np.zeros(len(position))
    gripper = float(position[index[gripper_joint]]) if gripper_joint in index else float("nan")
    return time_from_msg(msg.header.stamp), position[arm], velocity[arm], effort[arm], gripper


def gripper_width_to_msg(width_m: float) -> Float64:
    return Float64(data=float(width_m))


def gripper_width_from_msg(msg: Float64) -> float:
    return float(msg.data)


def pose_to_msg(position_m, quat_xyzw, stamp_s: float, frame_id: str = BASE_FRAME) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = time_to_msg(stamp_s)
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in position_m)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in quat_xyzw)
    return msg


def pose_from_msg(msg: PoseStamped) -> tuple[float, np.ndarray, np.ndarray]:
    p, o = msg.pose.position, msg.pose.orientation
    return time_from_msg(msg.header.stamp), np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])


def labelled_array_to_msg(values: dict[str, float]) -> Float64MultiArray:
    """Small named vectors (chunk status) as Float64MultiArray with one labelled dim per field."""
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=k, size=1, stride=1) for k in values]
    msg.data = [float(v) for v in values.values()]
    return msg


def labelled_array_from_msg(msg: Float64MultiArray) -> dict[str, float]:
    return {d.label: float(v) for d, v in zip(msg.layout.dim, msg.data)}


def _stamped(msg_class, stamp_s: float, frame_id: str):
    msg = msg_class()
    msg.header.stamp = time_to_msg(stamp_s)
    msg.header.frame_id = frame_id
    return msg


def _set_xyz(vector, values) -> None:
    vector.x, vector.y, vector.z = (float(v) for v in values)


def twist_to_msg(twist_lin_ang, stamp_s: float, frame_id: str = BASE_FRAME) -> TwistStamped:
    """(6,) [linear m/s; angular rad/s] -> TwistStamped."""
    msg = _stamped(TwistStamped, stamp_s, frame_id)
    _set_xyz(msg.twist.linear, twist_lin_ang[:3])
    _set_xyz(msg.twist.angular, twist_lin_ang[3:])
    return msg


def twist_from_msg(msg: TwistStamped) -> tuple[float, np.ndarray]:
    """-> (stamp_s, (6,) [linear; angular])."""
    v, w = msg.twist.linear, msg.twist.angular
    return time_from_msg(msg.header.stamp), np.array([v.x, v.y, v.z, w.x, w.y, w.z])


def joy_to_msg(axes, buttons, stamp_s: float) -> Joy:
    msg = _stamped(Joy, stamp_s, "")
    msg.axes = [float(a) for a in axes]
    msg.buttons = [int(b) for b in buttons]
    return msg


def joy_from_msg(msg: Joy) -> tuple[float, list[float], list[int]]:
    """-> (stamp_s, axes, buttons)."""
    return time_from_msg(msg.header.stamp), list(msg.axes), list(msg.buttons)


def wrench_to_msg(wrench, stamp_s: float, frame_id: str = BASE_FRAME) -> WrenchStamped:
    """(6,) [force N; torque N m] -> WrenchStamped."""
    msg = _stamped(WrenchStamped, stamp_s, frame_id)
    _set_xyz(msg.wrench.force, wrench[:3])
    _set_xyz(msg.wrench.torque, wrench[3:])
    return msg


def wrench_from_msg(msg: WrenchStamped) -> tuple[float, np.ndarray]:
    """-> (stamp_s, (6,) [force N; torque N m])."""
    f, t = msg.wrench.force, msg.wrench.torque
    return time_from_msg(msg.header.stamp), np.array([f.x, f.y, f.z, t.x, t.y, t.z])


def chunk_version_to_msg(stamp_s: float, weight_version: str) -> Header:
    """The weight version a chunk was computed with, keyed by the chunk's stamp (see the module docstring)."""
    msg = Header()
    msg.stamp = time_to_msg(stamp_s)
    msg.frame_id = weight_version
    return msg


def chunk_version_from_msg(msg: Header) -> tuple[float, str]:
    """-> (chunk stamp_s, weight_version)."""
    return time_from_msg(msg.stamp), msg.frame_id


def message_class(msgtype: str) -> type:
    """"sensor_msgs/msg/Image" -> the installed message class; ValueError naming the type if there is none."""
    package, kind, name = (msgtype.split("/") + ["", ""])[:3]
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"message type '{msgtype}' is not installed") from None


def message_from_cdr(data: bytes, msgtype: str):
    """Serialized bytes (as a bag stores them) -> message of type `msgtype`."""
    return deserialize_message(bytes(data), message_class(msgtype))


def clock_to_msg(stamp_ns: int) -> Clock:
    return Clock(clock=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000))


def qos_to_profile(spec: QosSpec) -> QoSProfile:
    reliability = ReliabilityPolicy.RELIABLE if spec.reliable else ReliabilityPolicy.BEST_EFFORT
    durability = DurabilityPolicy.TRANSIENT_LOCAL if spec.transient_local else DurabilityPolicy.VOLATILE
    return QoSProfile(history=HistoryPolicy.KEEP_ALL if spec.keep_all else HistoryPolicy.KEEP_LAST, depth=spec.depth,
                      reliability=reliability, durability=durability,
                      deadline=RosDuration(nanoseconds=spec.deadline_ns),
                      lifespan=RosDuration(nanoseconds=spec.lifespan_ns),
                      liveliness=LivelinessPolicy.MANUAL_BY_TOPIC if spec.manual_liveliness else
                      LivelinessPolicy.SYSTEM_DEFAULT,
                      liveliness_lease_duration=RosDuration(nanoseconds=spec.liveliness_lease_ns))


def qos_from_profile(profile: QoSProfile) -> QosSpec:
    """An endpoint's QoS (e.g. a discovered publisher's) as the plain values bags record."""
    return QosSpec(reliable=profile.reliability == ReliabilityPolicy.RELIABLE,
                   transient_local=profile.durability == DurabilityPolicy.TRANSIENT_LOCAL,
                   depth=max(1, int(profile.depth)), keep_all=profile.history == HistoryPolicy.KEEP_ALL,
                   deadline_ns=profile.deadline.nanoseconds, lifespan_ns=profile.lifespan.nanoseconds,
                   manual_liveliness=profile.liveliness == LivelinessPolicy.MANUAL_BY_TOPIC,
                   liveliness_lease_ns=profile.liveliness_lease_duration.nanoseconds)


def diagnostics_to_msg(name: str, hardware_id: str, level: int, message: str, values: dict[str, str],
                       stamp_s: float) -> DiagnosticArray:
    """One status (level 0 OK, 1 WARN, 2 ERROR) in a DiagnosticArray stamped `stamp_s`."""
    status = DiagnosticStatus(level=bytes([level]), name=name, hardware_id=hardware_id, message=message,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = time_to_msg(stamp_s)
    return array
