"""Camera frames to files a person can look at: an MP4 (H.264 via imageio-ffmpeg) and a PNG strip."""
from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np


class FrameRecorder:
    """Appends frames to an MP4 as they come and keeps a few evenly spaced ones for a PNG strip."""

    def __init__(self, video_path: Path, fps: float, strip_frames: int = 6, strip_every_s: float = 2.0):
        self.video_path = Path(video_path)
        self.video_path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = imageio.get_writer(self.video_path, fps=fps, codec="libx264", macro_block_size=1,
                                          ffmpeg_log_level="error")
        self._strip: list[np.ndarray] = []
        self._strip_frames = strip_frames
        self._strip_every_s = strip_every_s
        self._next_strip_s: float | None = None
        self.frames_written = 0

    def add(self, image_rgb: np.ndarray, stamp_s: float) -> None:
        self._writer.append_data(image_rgb)
        self.frames_written += 1
        if self._next_strip_s is None or (stamp_s >= self._next_strip_s and len(self._strip) < self._strip_frames):
            self._strip.append(image_rgb.copy())
            self._next_strip_s = stamp_s + self._strip_every_s

    def close(self) -> Path | None:
        """Finish the MP4; write `<video>.strip.png` beside it. Returns the strip path (None if no frame)."""
        self._writer.close()
        if not self._strip:
            return None
        strip_path = self.video_path.with_suffix(".strip.png")
        imageio.imwrite(strip_path, np.concatenate(self._strip, axis=1))
        return strip_path
