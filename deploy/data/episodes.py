"""Crash-safe episode log: corrections, rollouts and demonstrations, one folder per episode.

    ROOT/episode_000000/meta.json     written atomically at start: format, index, start time, caller's meta
    ROOT/episode_000000/steps.rec     append-only, one record per step
    ROOT/episode_000000/outcome.json  written atomically at close; without it the episode is incomplete

A record is a 16-byte header (magic, payload length, payload crc32, crc32 of those 12 bytes) and a payload:
a u32 length, a JSON list of the step's fields (name, dtype, shape, byte count) and cameras, then their raw
bytes, frames as JPEG or PNG (the reader tells them by their bytes). Each step goes to the OS in one write
with no buffer in between, so kill -9 loses at most the step being written; a reader keeps every record up to
the first damaged one. No pickle anywhere.

Frames: JPEG quality 95 without chroma subsampling by default ("jpeg"), lossless PNG level 1 on request
("png"). JPEG because a pixel session's log must stay small. Measured (bench/episode_log.py, 2 cores, 128x128
sim renders): png 9.8 kB and 1.0-1.2 ms encode per frame, jpeg 4.5 kB and 0.15-0.17 ms at 46 dB PSNR (mean
error 0.6 of 255 levels, far below what the learner's random-shift augmentation does to a frame); with
camera-like noise (sigma 2) png grows to 28 kB, jpeg to 6 kB. A session step (front + wrist and the episode
node's 20 fields: 3.4 kB of JSON head and values) weighs 24 kB with png, 13 kB with jpeg (noisy: 59 / 17 kB).
At 20 steps/s, 60 episodes of 30 s (every episode timing out: the worst case) are 0.88 GB with png, 0.48 GB
with jpeg (noisy: 2.1 / 0.60 GB); a real session logged 14.2 kB a step, 3.8 MB per 13.5 s episode, so 0.23 GB
for 60 episodes. WebP lossless is half png's size but 25-65 ms a frame: too slow for two cameras at 20 Hz here.

A write that fails (a full disk: ENOSPC, or any OSError) stops the episode's log: `on_error` is told once,
naming the folder and the reason; the half-written record is cut off; every later `add_step` returns False
and `close()` writes nothing, so the episode has no outcome.json and reads as incomplete, with every step
written before the failure. Neither raises: a logger failing must not take the robot's graph down with it.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from deploy.errors import ConfigError, DeployError
from deploy.files import write_atomic

FORMAT = "deploy-episode/1"
MAGIC = b"DEPS"
FRAME_CODECS = {  # name -> (cv2 extension, encode parameters)
    "jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
    "png": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]),
}
STEPS_FILE, META_FILE, OUTCOME_FILE = "steps.rec", "meta.json", "outcome.json"
_HEADER = struct.Struct("<4sII")  # magic, payload length, payload crc32; then u32 crc32 of these 12 bytes
_U32 = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _U32.size
_STR = "str"  # dtype tag of a string field, stored as utf-8
_EPISODE_DIR = re.compile(r"episode_(\d{6,})")


def episode_dir(root: str | Path, index: int) -> Path:
    return Path(root) / f"episode_{index:06d}"


def _episode_dirs(root: Path) -> dict[int, Path]:
    return {int(m.group(1)): path for path in root.iterdir()
            if path.is_dir() and (m := _EPISODE_DIR.fullmatch(path.name))}


def _json_default(obj):
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} {obj!r} is not JSON-serialisable")


def _dumps(obj, what: str) -> str:
    try:
        return json.dumps(obj, indent=1, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"episode {what}: {exc}") from None


def _encode_field(name, value) -> tuple[list, bytes]:
    """-> ([name, dtype, shape, nbytes], raw bytes) of a number, bool, array of those, or str."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"episode field names must be non-empty strings, got {name!r}")
    if isinstance(value, str):
        raw = value.encode()
        return [name, _STR, [], len(raw)], raw
    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        raise ConfigError(f"episode field '{name}': cannot log {array.dtype} values (numbers, bools, arrays or a str)")
    raw = np.ascontiguousarray(array).tobytes()
    return [name, array.dtype.str, list(array.shape), len(raw)], raw


def _encode_frame(camera, frame, codec: str) -> tuple[list, bytes]:
    """-> ([camera, shape, nbytes], encoded bytes) of one (H, W, 3) uint8 RGB frame."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ConfigError(f"episode camera '{camera}': frames must be (H, W, 3) uint8 RGB, "
                          f"got {frame.dtype} {frame.shape}")
    extension, parameters = FRAME_CODECS[codec]
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), parameters)
    if not ok:
        raise DeployError(f"episode camera '{camera}': {codec} encoding failed")
    return [str(camera), list(frame.shape), len(encoded)], encoded.tobytes()


def _schema(head: dict) -> dict[str, str]:
    """{"field 'x'" | "camera 'c'": "float64 (8,)"}: what every step of an episode must share."""
    schema = {f"field '{name}'": f"{np.dtype(dtype).name if dtype != _STR else _STR} {tuple(shape)}"
              for name, dtype, shape, _ in head["fields"]}
    schema.update({f"camera '{camera}'": f"uint8 {tuple(shape)}" for camera, shape, _ in head["frames"]})
    return schema


class EpisodeWriter:
    """Writes one new episode under `root`: index = highest existing + 1, so a resumed session appends.

    One thread only. As a context manager an exception closes the episode with outcome
    {"success": False, "reason": "<exception>"} (and propagates); leaving without `close()` closes with {}.
    A failed write (`error` is then set) is reported once to `on_error` (default: this module's logger at
    ERROR) and stops the log, never raising: see the module docstring.
    """

    def __init__(self, root: str | Path, meta: dict | None = None, fsync_each_step: bool = False,
                 frame_codec: str = "jpeg", on_error: Callable[[str], None] | None = None):
        if frame_codec not in FRAME_CODECS:
            raise ConfigError(f"episode frame codec '{frame_codec}' is not one of {sorted(FRAME_CODECS)}")
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"episode log {root} is not a folder")
        self.fsync_each_step = fsync_each_step
        self.frame_codec = frame_codec
        self.on_error = on_error or logging.getLogger(__name__).error
        self.num_steps = 0
        self.closed = False
        self.error: str | None = None  # why the log stopped; None while it works
        self._schema: dict[str, str] | None = None
        self._fd: int | None = None
        self._size = 0  # bytes of whole records in the steps file
        self.index, self.path = -1, root  # until the episode's folder exists
        meta = dict(meta or {})
        try:
            root.mkdir(parents=True, exist_ok=True)
            index = max(_episode_dirs(root), default=-1) + 1
            meta_text = _dumps({"format": FORMAT, "index": index, "start_wall_s": time.time(),
                                "frame_codec": frame_codec, "meta": meta}, "meta")
            episode_dir(root, index).mkdir()  # never reuses a folder: a concurrent writer on the same root fails here
            self.index, self.path = index, episode_dir(root, index)
            self._fd = os.open(self.path / STEPS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            write_atomic(self.path / META_FILE, meta_text)
        except FileExistsError:
            raise
        except OSError as exc:
            self._fail(f"cannot start an episode in {self.path}", exc)

    def add_step(self, values: dict, frames: dict | None = None) -> bool:
        """Append one step: `values` {name: number | bool | array | str}, `frames` {camera: (H, W, 3) uint8 RGB}.
        -> True when written, False once the log has stopped (`error` says why).

        The first step fixes the schema (names, dtypes, shapes, cameras, frame sizes); a later step that
        differs raises ConfigError and is not written.
        """
        if self.closed:
            raise ConfigError(f"episode {self.index} is closed; start a new EpisodeWriter")
        if self.error is not None:
            return False
        fields = [_encode_field(name, value) for name, value in values.items()]
        cameras = [_encode_frame(camera, frame, self.frame_codec) for camera, frame in (frames or {}).items()]
        head = {"fields": [entry for entry, _ in fields], "frames": [entry for entry, _ in cameras]}
        schema = _schema(head)
        if self._schema is None:
            self._schema = schema
        elif schema != self._schema:
            diffs = [f"{key} is {schema.get(key, 'missing')}, step 0 had {self._schema.get(key, 'none')}"
                     for key in sorted(schema.keys() | self._schema.keys()) if schema.get(key) != self._schema.get(key)]
            raise ConfigError(f"episode {self.index} step {self.num_steps} breaks the schema: {'; '.join(diffs)}")
        head_bytes = json.dumps(head, separators=(",", ":")).encode()
        payload = b"".join([_U32.pack(len(head_bytes)), head_bytes, *(raw for _, raw in fields + cameras)])
        header = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload))
        record = memoryview(header + _U32.pack(zlib.crc32(header)) + payload)
        try:
            while record:  # in the OS now: survives kill -9 (not power loss, unless fsync)
                record = record[os.write(self._fd, record):]
            if self.fsync_each_step:
                os.fsync(self._fd)
        except OSError as exc:
            self._fail(f"cannot write step {self.num_steps} of {self.path}", exc)
            return False
        self._size += len(header) + _U32.size + len(payload)
        self.num_steps += 1
        return True

    def close(self, outcome: dict | None = None) -> None:
        """fsync the steps, then write outcome.json (the caller's outcome, e.g. {"success": True}, + n_steps).
        After a failed write it only releases the file: the episode stays incomplete."""
        if self.closed:
            raise ConfigError(f"episode {self.index} is already closed")
        if self.error is not None:
            self.closed = True
            return
        text = _dumps({"n_steps": self.num_steps, "outcome": dict(outcome or {})}, "outcome")
        self.closed = True
        try:
            os.fsync(self._fd)
            fd, self._fd = self._fd, None
            os.close(fd)
            write_atomic(self.path / OUTCOME_FILE, text)
        except OSError as exc:
            self._fail(f"cannot close episode {self.path}", exc)

    def _fail(self, what: str, exc: OSError) -> None:
        """Stop the log: cut a half-written record off, release the file, report once."""
        reason = f"{errno.errorcode.get(exc.errno, 'OSError')}: {exc.strerror}" if exc.strerror else repr(exc)
        kept = (f"; its {self.num_steps} steps written before stay readable, without {OUTCOME_FILE} "
                f"(incomplete)" if self.num_steps else "")
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                pass  # the reader drops a cut-off last record anyway
            finally:
                os.close(fd)
        self.error = f"episode log stopped: {what} ({reason}){kept}"
        self.on_error(self.error)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            self.close({"success": False, "reason": f"{exc_type.__name__}: {exc}"} if exc_type else {})


def _scan_records(path: Path, read_payloads: bool) -> tuple[list[tuple[int, bytes | None]], int, str | None]:
    """-> ([(payload offset, payload or None)], dropped bytes, problem) of a steps file.

    Stops at the first damaged record (problem says where); a cut-off last record (the writer died
    mid-write) is dropped without a problem. Without `read_payloads` payloads are skipped, not checked.
    """
    if not path.exists():
        return [], 0, None
    size = path.stat().st_size
    records, offset, problem = [], 0, None
    with open(path, "rb") as f:
        while offset + HEADER_SIZE <= size:
            header = f.read(HEADER_SIZE)
            magic, length, crc = _HEADER.unpack_from(header)
            if magic != MAGIC or _U32.unpack_from(header, _HEADER.size)[0] != zlib.crc32(header[:_HEADER.size]):
                problem = f"bad record header at byte {offset} (step {len(records)})"
                break
            if offset + HEADER_SIZE + length > size:
                break
            if read_payloads:
                payload = f.read(length)
                if zlib.crc32(payload) != crc:
                    problem = f"bad checksum in step {len(records)} at byte {offset}"
                    break
            else:
                payload = None
                f.seek(length, os.SEEK_CUR)
            records.append((offset + HEADER_SIZE, payload))
            offset += HEADER_SIZE + length
    return records, size - offset, problem


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Episode:
    """One episode read back: `steps` {name: (T, ...) array | list[str]}, frames decoded on demand."""

    index: int
    path: Path
    meta: dict
    start_wall_s: float | None
    outcome: dict | None  # None: the writer never closed it
    num_steps: int
    steps: dict[str, np.ndarray | list[str]]
    cameras: dict[str, tuple[int, ...]]  # camera -> (H, W, 3)
    dropped_bytes: int
    problem: str | None
    _frame_spans: dict[str, list[tuple[int, int]]] = field(repr=False)  # camera -> [(file offset, nbytes)]

    @property
    def complete(self) -> bool:
        return self.outcome is not None

    def frames(self, camera: str, steps=None) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB of `camera`; `steps` (a sequence of step indices) decodes only those."""
        if camera not in self._frame_spans:
            raise ConfigError(f"episode {self.path} has no camera '{camera}' (cameras: {sorted(self.cameras)})")
        spans = self._frame_spans[camera]
        chosen = spans if steps is None else [spans[i] for i in steps]
        out = np.empty((len(chosen), *self.cameras[camera]), np.uint8)
        with open(self.path / STEPS_FILE, "rb") as f:
            for i, (offset, length) in enumerate(chosen):
                f.seek(offset)
                cv2.cvtColor(cv2.imdecode(np.frombuffer(f.read(length), np.uint8), cv2.IMREAD_COLOR),
                             cv2.COLOR_BGR2RGB, dst=out[i])
        return out


def read_episode(path: str | Path) -> Episode:
    """Read an episode folder; a damaged or cut-off steps file gives the good steps and never raises."""
    path = Path(path)
    if not (path / STEPS_FILE).is_file() and not (path / META_FILE).is_file():
        raise ConfigError(f"{path} is not an episode folder (no {STEPS_FILE} or {META_FILE})")
    meta_file, outcome_file = _read_json(path / META_FILE), _read_json(path / OUTCOME_FILE)
    records, dropped, problem = _scan_records(path / STEPS_FILE, read_payloads=True)
    parts: dict[str, list] = {}
    spans: dict[str, list[tuple[int, int]]] = {}
    first, num_steps = None, 0
    for payload_offset, payload in records:
        view = memoryview(payload)
        head_len = _U32.unpack_from(view)[0]
        head = json.loads(bytes(view[_U32.size:_U32.size + head_len]))
        if first is None:
            first, schema = head, _schema(head)
        elif _schema(head) != schema:
            problem = f"step {num_steps} changes the schema"
            dropped += sum(HEADER_SIZE + len(later) for _, later in records[num_steps:])
            break
        offset = _U32.size + head_len
        for name, _, _, nbytes in head["fields"]:
            parts.setdefault(name, []).append(view[offset:offset + nbytes])
            offset += nbytes
        for camera, _, nbytes in head["frames"]:
            spans.setdefault(camera, []).append((payload_offset + offset, nbytes))
            offset += nbytes
        num_steps += 1
    steps: dict[str, np.ndarray | list[str]] = {}
    for name, dtype, shape, _ in first["fields"] if first else []:
        if dtype == _STR:
            steps[name] = [bytes(raw).decode() for raw in parts[name]]
        else:
            steps[name] = np.frombuffer(bytearray(b"".join(parts[name])), np.dtype(dtype)).reshape(num_steps, *shape)
    if outcome_file and problem is None and outcome_file["n_steps"] != num_steps:
        problem = f"outcome.json says {outcome_file['n_steps']} steps, {STEPS_FILE} holds {num_steps}"
    if meta_file is None:  # the writer died between creating the folder and writing meta.json
        problem = problem or f"{META_FILE} is missing"
        match = _EPISODE_DIR.fullmatch(path.name)
        meta_file = {"index": int(match.group(1)) if match else -1, "start_wall_s": None, "meta": {}}
    return Episode(
        index=meta_file["index"], path=path, meta=meta_file["meta"], start_wall_s=meta_file["start_wall_s"],
        outcome=outcome_file["outcome"] if outcome_file else None, num_steps=num_steps, steps=steps,
        cameras={camera: tuple(shape) for camera, shape, _ in first["frames"]} if first else {},
        dropped_bytes=dropped, problem=problem, _frame_spans=spans)


@dataclass(frozen=True)
class EpisodeSummary:
    index: int
    path: Path
    num_steps: int  # whole records, counted from their headers (read_episode also checks the payloads)
    complete: bool
    outcome: dict | None


def _log_root(root: str | Path) -> dict[int, Path]:
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"episode log {root} does not exist or is not a folder")
    episodes = _episode_dirs(root)
    if not episodes:
        raise ConfigError(f"{root} is not an episode log (no episode_NNNNNN folders)")
    return episodes


def finished_episodes(root: str | Path, skip: set[int] = frozenset()) -> list[tuple[int, Path, dict]]:
    """(index, folder, outcome) of every closed episode under `root` not in `skip`, by index. Reads outcome files
    only (no record scan): cheap enough to poll a growing log."""
    found = []
    for index, path in sorted(_episode_dirs(Path(root)).items()):
        outcome_file = None if index in skip else _read_json(path / OUTCOME_FILE)
        if outcome_file is not None:
            found.append((index, path, outcome_file["outcome"]))
    return found


def list_episodes(root: str | Path) -> list[EpisodeSummary]:
    """Every episode under `root`, by index, without decoding any payload."""
    summaries = []
    for index, path in sorted(_log_root(root).items()):
        outcome_file = _read_json(path / OUTCOME_FILE)
        records, _, _ = _scan_records(path / STEPS_FILE, read_payloads=False)
        summaries.append(EpisodeSummary(index, path, len(records), outcome_file is not None,
                                        outcome_file["outcome"] if outcome_file else None))
    return summaries


def find_episode(root: str | Path, index: int) -> Path:
    """The folder of episode `index` under `root`; ConfigError naming what exists when it does not."""
    episodes = _log_root(root)
    if index not in episodes:
        raise ConfigError(f"episode log {root} has no episode {index} (has {min(episodes)}..{max(episodes)})")
    return episodes[index]
