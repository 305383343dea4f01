"""Frame recorder node: saves one camera's stream as an MP4 and a PNG strip (the demo's visible output)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import Image

from deploy.data.video import FrameRecorder
from deploy.errors import ConfigError
from deploy.nodes.common import SENSOR_QOS, declare_config, run_node
from deploy.nodes.conversions import image_from_msg, time_from_msg


@dataclasses.dataclass
class FrameRecorderConfig:
    camera_name: str = "front"
    output_path: str = "runs/demo/front.mp4"
    fps: float = 30.0

    def __post_init__(self):
        if not self.output_path.endswith(".mp4"):
            raise ConfigError(f"output_path '{self.output_path}' must end in .mp4")


class FrameRecorderNode(Node):
    def __init__(self):
        super().__init__("frame_recorder")
        self.config = declare_config(self, FrameRecorderConfig)
        self.recorder = FrameRecorder(Path(self.config.output_path), self.config.fps)
        self.create_subscription(Image, f"/cameras/{self.config.camera_name}/image_raw", self.on_image, SENSOR_QOS)

    def on_image(self, msg: Image):
        self.recorder.add(image_from_msg(msg), time_from_msg(msg.header.stamp))

    def close(self):
        strip = self.recorder.close()
        self.get_logger().info(f"wrote {self.recorder.frames_written} frames to {self.config.output_path}"
                               + (f" and {strip}" if strip else ""))


def main():
    run_node(FrameRecorderNode)


if __name__ == "__main__":
    main()
