"""ROS-free image preprocessing: crop, then resize to the policy's input, and its effect on the intrinsics."""
from __future__ import annotations

import numpy as np

from deploy.errors import ConfigError
from deploy.sensing.cameras import Intrinsics


def parse_crop(text: str) -> str | tuple[int, int, int, int] | None:
    """The camera node's `crop` parameter: "" / "none" | "center" | "x,y,w,h" (pixels of the device image)."""
    text = text.strip().lower()
    if text in ("", "none"):
        return None
    if text == "center":
        return "center"
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        raise ConfigError(f"crop '{text}' is not 'none', 'center' or 'x,y,w,h' with x,y >= 0 and w,h > 0")
    return box


def crop_box(width: int, height: int, crop, output_size: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the crop in a width x height image; "center" = the largest centred box with the
    aspect ratio of `output_size` (width, height)."""
    if crop is None:
        return 0, 0, width, height
    if crop == "center":
        if not output_size:
            raise ConfigError("crop 'center' needs an output size (output_width/output_height) for its aspect ratio")
        out_w, out_h = output_size
        w = min(width, round(height * out_w / out_h))
        h = min(height, round(width * out_h / out_w))
        return (width - w) // 2, (height - h) // 2, w, h
    x, y, w, h = crop
    if x + w > width or y + h > height:
        raise ConfigError(f"crop box {tuple(crop)} (x, y, w, h) exceeds the {width}x{height} image")
    return x, y, w, h


def preprocess(image: np.ndarray, crop=None, output_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, C) uint8 -> crop (see `crop_box`) -> resize to output_size (width, height) with INTER_AREA."""
    import cv2

    x, y, w, h = crop_box(image.shape[1], image.shape[0], crop, output_size)
    out = image[y:y + h, x:x + w]
    if output_size and (w, h) != tuple(output_size):
        out = cv2.resize(out, tuple(output_size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out)


def preprocess_intrinsics(intr: Intrinsics, crop=None, output_size: tuple[int, int] | None = None) -> Intrinsics:
    """The pinhole model of `preprocess`'s output. Pixel centres are at integer coordinates, so a resize by s
    maps u -> (u + 0.5)·s − 0.5. An uncalibrated camera (fx = fy = 0) stays all zeros (CameraInfo convention)."""
    x, y, w, h = crop_box(intr.width, intr.height, crop, output_size)
    out_w, out_h = output_size if output_size else (w, h)
    if intr.fx == 0.0 and intr.fy == 0.0:
        return Intrinsics(out_w, out_h, 0.0, 0.0, 0.0, 0.0)
    sx, sy = out_w / w, out_h / h
    return Intrinsics(out_w, out_h, intr.fx * sx, intr.fy * sy,
                      (intr.cx - x + 0.5) * sx - 0.5, (intr.cy - y + 0.5) * sy - 0.5)
