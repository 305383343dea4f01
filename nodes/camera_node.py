"""Camera node: one process per camera; publishes Image + CameraInfo (and optionally a JPEG CompressedImage)
under /cameras/<name>/ with the frame's own capture stamp (sensor-data QoS), and its health on /diagnostics.

A device that is absent or lost never stops the node: the error (naming the device) goes to /diagnostics, the
device is closed and reopened every `reconnect_period_s`; frames held from before the loss are never published.
A recording (`path`) is held back until the image has a subscriber (`wait_for_subscriber`), so a subscriber that
starts after the node still gets the first frame.
"""
from __future__ import annotations

import dataclasses

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from deploy.errors import ConfigError
from deploy.sensing.cameras import CameraError, camera_parameters, make_camera
from deploy.sensing.preprocess import parse_crop, preprocess, preprocess_intrinsics
from deploy.nodes.common import COMMAND_QOS, SENSOR_QOS, declare_config, run_node
from deploy.nodes.conversions import camera_info_to_msg, compressed_image_to_msg, image_to_msg, time_to_msg

# Fields of CameraNodeConfig handed to the backend (each backend takes the ones its constructor names).
BACKEND_FIELDS = ("link_name", "device", "path", "serial", "width", "height", "fps", "fourcc", "loop",
                  "real_time", "auto_exposure", "exposure_us", "intrinsics")


@dataclasses.dataclass
class CameraNodeConfig:
    camera_name: str = "front"  # publishes under /cameras/<camera_name>/
    kind: str = "sim"  # camera backend: sim | opencv | realsense
    link_name: str = ""  # sim: the sim's link ("" = this ROS domain's default)
    device: str = ""  # opencv: "/dev/video0" or an index as a string ('0')
    path: str = ""  # a recording played as this camera: opencv a video file, realsense a .db3/.bag recording
    serial: str = ""  # realsense: serial number ("" = the first device found)
    width: int = 0  # opencv device / realsense: capture width [px] (0 = device default; realsense 640)
    height: int = 0  # capture height [px] (0 = device default; realsense 480)
    fps: float = 0.0  # capture rate [Hz] (0 = device default / the file's own rate; realsense 30)
    fourcc: str = ""  # opencv device: pixel format, e.g. MJPG or YUYV ("" = driver default)
    loop: bool = False  # path: start again at the end
    real_time: bool = True  # path: play at the recorded rate; false = every frame, as fast as this node publishes
    wait_for_subscriber: bool = True  # path: play once the image has a subscriber (a late one sees frame 0)
    auto_exposure: bool = True  # realsense: auto exposure on/off
    exposure_us: float = 0.0  # realsense: manual exposure [us] when auto_exposure is false
    intrinsics: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)  # opencv: [fx, fy, cx, cy] px; zeros = uncalibrated
    crop: str = "none"  # none | center (largest centred box of the output aspect) | "x,y,w,h" px
    output_width: int = 0  # resize (INTER_AREA) after the crop [px]; 0 = no resize
    output_height: int = 0
    jpeg: bool = False  # also publish sensor_msgs/CompressedImage on .../image_raw/compressed
    jpeg_quality: int = 90  # 1..100
    poll_rate_hz: float = 100.0  # how often the device is asked for a new frame [Hz]
    reconnect_period_s: float = 1.0  # after a device error: close, and try to reopen this often [s]
    diagnostics_period_s: float = 1.0  # /diagnostics status period [s]

    def __post_init__(self):
        if not self.camera_name:
            raise ConfigError("parameter camera_name must not be empty")
        if not 1.0 <= self.poll_rate_hz <= 1000.0:
            raise ConfigError(f"poll_rate_hz {self.poll_rate_hz} outside [1, 1000]")
        if (self.output_width > 0) != (self.output_height > 0) or self.output_width < 0 or self.output_height < 0:
            raise ConfigError(f"output_width {self.output_width} / output_height {self.output_height}: "
                              "set both > 0, or both 0 (no resize)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality {self.jpeg_quality} outside [1, 100]")
        if not 0.05 <= self.reconnect_period_s <= 60.0:
            raise ConfigError(f"reconnect_period_s {self.reconnect_period_s} outside [0.05, 60]")
        if not 0.1 <= self.diagnostics_period_s <= 60.0:
            raise ConfigError(f"diagnostics_period_s {self.diagnostics_period_s} outside [0.1, 60]")
        self.crop_spec = parse_crop(self.crop)
        self.output_size = (self.output_width, self.output_height) if self.output_width else None
        if self.crop_spec == "center" and self.output_size is None:
            raise ConfigError("crop 'center' needs output_width/output_height (they give the aspect ratio)")


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera")
        self.numbers_as_strings(("device", "serial"))
        self.config = declare_config(self, CameraNodeConfig)
        self.camera = make_camera(self.config.kind, **self.backend_params())
        self.frame_id = f"{self.config.camera_name}_optical_frame"
        base = f"/cameras/{self.config.camera_name}"
        self.image_pub = self.create_publisher(Image, f"{base}/image_raw", SENSOR_QOS)
        self.info_pub = self.create_publisher(CameraInfo, f"{base}/camera_info", SENSOR_QOS)
        self.jpeg_pub = (self.create_publisher(CompressedImage, f"{base}/image_raw/compressed", SENSOR_QOS)
                         if self.config.jpeg else None)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.streaming = False
        self.last_error = ""
        self.frames_published = 0
        self.frames_stale = 0
        self.reconnects = 0
        self.last_stamp_s = float("-inf")
        self.out_intrinsics = None
        self.try_open()
        self.create_timer(1.0 / self.config.poll_rate_hz, self.poll)
        self.create_timer(self.config.reconnect_period_s, self.reconnect)
        self.create_timer(self.config.diagnostics_period_s, self.publish_diagnostics)

    def numbers_as_strings(self, names) -> None:
        """`-p serial:=123` / `-p device:=0` arrive as integers; these parameters are strings. (Leading zeros of
        a serial are lost that way: quote it, `serial:="'0123'"`, or write it as a YAML string.)"""
        for name in names:
            given = self._parameter_overrides.get(name)
            if given is not None and given.type_ == Parameter.Type.INTEGER:
                self._parameter_overrides[name] = Parameter(name, Parameter.Type.STRING, str(given.value))

    def backend_params(self) -> dict:
        """The config fields this backend takes; a field set for another backend is refused by name."""
        accepted = camera_parameters(self.config.kind)
        defaults = CameraNodeConfig.__dataclass_fields__
        stray = [name for name in BACKEND_FIELDS if name not in accepted
                 and getattr(self.config, name) != defaults[name].default]
        if stray:
            raise ConfigError(f"parameter(s) {', '.join(stray)} do not apply to camera kind '{self.config.kind}'")
        params = {name: getattr(self.config, name) for name in BACKEND_FIELDS if name in accepted}
        params["camera_name"] = self.config.camera_name
        if "wait_for_play" in accepted:
            params["wait_for_play"] = self.config.wait_for_subscriber and bool(self.config.path)
        if "link_name" in params:
            params["link_name"] = params["link_name"] or None
        if "clock" in accepted:
            params["clock"] = lambda: self.get_clock().now().nanoseconds * 1e-9
        return params

    def try_open(self) -> None:
        try:
            self.camera.open()
        except CameraError as error:
            self.report_error(str(error))
            return
        self.out_intrinsics = preprocess_intrinsics(self.camera.intrinsics, self.config.crop_spec,
                                                    self.config.output_size)
        self.streaming = True
        self.get_logger().info(f"streaming from {self.camera.describe()}")
        self.publish_diagnostics()

    def reconnect(self) -> None:
        if not self.streaming:
            self.reconnects += 1
            self.try_open()

    def report_error(self, error: str) -> None:
        if error != self.last_error:
            self.get_logger().warning(f"camera '{self.config.camera_name}': {error} (retrying every "
                                      f"{self.config.reconnect_period_s:g} s)")
        self.last_error = error
        self.publish_diagnostics()

    def poll(self) -> None:
        if not self.streaming:
            return
        if self.camera.waiting_for_play and self.subscribers() > 0:
            self.get_logger().info(f"a subscriber appeared: playing {self.camera.describe()}")
            self.camera.play()
        try:
            frame = self.camera.read()
        except CameraError as error:
            self.streaming = False
            self.camera.close()  # drops whatever it held: nothing from before the loss is published
            self.report_error(str(error))
            return
        if frame is None:
            return
        if frame.stamp_s <= self.last_stamp_s:
            self.frames_stale += 1
            return
        self.last_stamp_s = frame.stamp_s
        image = frame.image
        if self.config.crop_spec is not None or self.config.output_size is not None:
            image = preprocess(image, self.config.crop_spec, self.config.output_size)
        intr = self.out_intrinsics
        self.image_pub.publish(image_to_msg(image, frame.stamp_s, self.frame_id))
        self.info_pub.publish(camera_info_to_msg(intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy,
                                                 frame.stamp_s, self.frame_id))
        if self.jpeg_pub is not None:
            self.jpeg_pub.publish(compressed_image_to_msg(image, frame.stamp_s, self.frame_id,
                                                          self.config.jpeg_quality))
        self.frames_published += 1

    def subscribers(self) -> int:
        return self.image_pub.get_subscription_count() + (self.jpeg_pub.get_subscription_count()
                                                           if self.jpeg_pub is not None else 0)

    def publish_diagnostics(self) -> None:
        if self.streaming and self.camera.ended:
            level, message = DiagnosticStatus.WARN, "end of recording"
        elif self.streaming:
            level, message = DiagnosticStatus.OK, ("waiting for a subscriber" if self.camera.waiting_for_play
                                                   else "streaming")
        else:
            level, message = DiagnosticStatus.ERROR, self.last_error or "not open"
        values = {"kind": self.config.kind, "device": self.camera.describe(),
                  "frames_published": str(self.frames_published), "frames_stale_dropped": str(self.frames_stale),
                  "reconnect_attempts": str(self.reconnects), "last_error": self.last_error}
        if self.out_intrinsics is not None:
            values["output_size"] = f"{self.out_intrinsics.width}x{self.out_intrinsics.height}"
        status = DiagnosticStatus(level=level, name=f"camera {self.config.camera_name}",
                                  hardware_id=self.camera.describe(), message=message,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = time_to_msg(self.get_clock().now().nanoseconds * 1e-9)
        self.diagnostics_pub.publish(array)

    def close(self):
        self.camera.close()


def main():
    run_node(CameraNode)


if __name__ == "__main__":
    main()
