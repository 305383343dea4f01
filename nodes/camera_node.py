"""Camera node: one process per camera; publishes Image + CameraInfo under /cameras/<name>/ with the
frame's own capture stamp (sensor-data QoS)."""
from __future__ import annotations

import dataclasses

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from deploy.errors import ConfigError
from deploy.sensing.cameras import make_camera
from deploy.nodes.common import SENSOR_QOS, connect_with_retry, declare_config, run_node
from deploy.nodes.conversions import camera_info_to_msg, image_to_msg


@dataclasses.dataclass
class CameraNodeConfig:
    camera_name: str = "front"  # publishes under /cameras/<camera_name>/
    kind: str = "sim"  # camera backend: sim
    link_name: str = ""  # sim backend: the sim's link ("" = this ROS domain's default)
    poll_rate_hz: float = 100.0  # how often the device is asked for a new frame [Hz]

    def __post_init__(self):
        if not self.camera_name:
            raise ConfigError("parameter camera_name must not be empty")
        if not 1.0 <= self.poll_rate_hz <= 1000.0:
            raise ConfigError(f"poll_rate_hz {self.poll_rate_hz} outside [1, 1000]")


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera")
        self.config = declare_config(self, CameraNodeConfig)
        params = {"camera_name": self.config.camera_name}
        if self.config.kind == "sim":
            params["link_name"] = self.config.link_name or None
        self.camera = make_camera(self.config.kind, **params)
        connect_with_retry(self, self.camera.open, f"camera '{self.config.camera_name}'")
        self.frame_id = f"{self.config.camera_name}_optical_frame"
        base = f"/cameras/{self.config.camera_name}"
        self.image_pub = self.create_publisher(Image, f"{base}/image_raw", SENSOR_QOS)
        self.info_pub = self.create_publisher(CameraInfo, f"{base}/camera_info", SENSOR_QOS)
        self.create_timer(1.0 / self.config.poll_rate_hz, self.poll)

    def poll(self):
        frame = self.camera.read()
        if frame is None:
            return
        intr = self.camera.intrinsics
        self.image_pub.publish(image_to_msg(frame.image, frame.stamp_s, self.frame_id))
        self.info_pub.publish(camera_info_to_msg(intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy,
                                                 frame.stamp_s, self.frame_id))

    def close(self):
        self.camera.close()


def main():
    run_node(CameraNode)


if __name__ == "__main__":
    main()
