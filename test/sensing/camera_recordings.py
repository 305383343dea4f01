"""Recordings to play as cameras, made by the tools users make them with: pyrealsense2's own recorder (from a
software device, so no camera is needed) and OpenCV's video writer."""
import time

import cv2
import numpy as np
import pyrealsense2 as rs


def pattern(index: int, size=(64, 48)) -> np.ndarray:
    """(H, W, 3) RGB: red = the frame index, green = column, blue = row, so any frame identifies itself exactly."""
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = index % 256
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :]
    image[..., 2] = np.arange(height, dtype=np.uint8)[:, None]
    return image


BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "yuyv": 2}


def encode(image: np.ndarray, fmt: str) -> np.ndarray:
    """An RGB `pattern` in a RealSense colour format; yuyv keeps only grey: Y = 16 + red, U = V = 128."""
    alpha = np.full(image.shape[:2] + (1,), 255, np.uint8)
    if fmt == "yuyv":
        packed = np.full(image.shape[:2] + (2,), 128, np.uint8)
        packed[..., 0] = 16 + image[..., 0]
        return packed
    return {"rgb8": image, "bgr8": image[..., ::-1], "rgba8": np.concatenate([image, alpha], axis=2),
            "bgra8": np.concatenate([image[..., ::-1], alpha], axis=2)}[fmt]


def write_realsense_recording(path, n_frames: int, size=(64, 48), fps: int = 30, fmt: str = "rgb8") -> str:
    """A colour-only recording (`.db3`: pyrealsense2 2.59's recorder writes rosbag2) of frames `pattern(i)`,
    encoded as `fmt`.

    The recorder stores each frame's arrival time, which real-time playback reproduces, so frames are
    pushed one period apart."""
    width, height = size
    device = rs.software_device()
    sensor = device.add_sensor("Synthetic colour")
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy = 50.0, 50.0, width / 2, height / 2
    intrinsics.model, intrinsics.coeffs = rs.distortion.none, [0.0] * 5
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
    bpp = BYTES_PER_PIXEL[fmt]
    stream.width, stream.height, stream.fps, stream.bpp = width, height, fps, bpp
    stream.fmt, stream.intrinsics = getattr(rs.format, fmt), intrinsics
    profile = sensor.add_video_stream(stream).as_video_stream_profile()
    recorder = rs.recorder(str(path), device)
    sensor.open(profile)
    sensor.start(rs.syncer())
    start = time.monotonic()
    for i in range(n_frames):
        time.sleep(max(0.0, start + i / fps - time.monotonic()))
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(encode(pattern(i, size), fmt))
        frame.bpp, frame.stride = bpp, width * bpp
        frame.timestamp, frame.domain = 1000.0 * i / fps, rs.timestamp_domain.hardware_clock
        frame.frame_number, frame.profile = i, profile
        sensor.on_video_frame(frame)
    sensor.stop()
    sensor.close()
    recorder.pause()
    del recorder  # the file is complete once the recorder is gone
    return str(path)


def write_mp4(path, n_frames: int, fps: float = 30.0, size=(160, 120)) -> str:
    """MP4 (mp4v) with frame i uniformly grey level 15·(i mod 16), read back by `grey_index`."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), 15 * (i % 16), np.uint8))
    writer.release()
    return str(path)


def grey_index(image: np.ndarray) -> int:
    return int(round(image.mean() / 15))
