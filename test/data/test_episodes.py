"""The episode log (deploy.data.episodes) on real files, a real logger process killed with SIGKILL, and the
`deploy episodes` CLI."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from episode_log_writer import EPISODE0_STEPS, step_frames, step_values
from harness import wait_until

from deploy.cli import main
from deploy.data.episodes import (EpisodeWriter, episode_dir, find_episode, finished_episodes, list_episodes,
                                   read_episode)
from deploy.errors import ConfigError

HERE = Path(__file__).resolve().parent


def assert_matches_writer(episode, episode_index: int) -> None:
    """Every step read back equals what episode_log_writer.py wrote for it, frames bit for bit."""
    expected = [step_values(episode_index, step) for step in range(episode.num_steps)]
    for name, first in expected[0].items():
        if isinstance(first, str):
            assert episode.steps[name] == [values[name] for values in expected]
        else:
            want = np.stack([np.asarray(values[name]) for values in expected])
            assert episode.steps[name].dtype == want.dtype, name
            np.testing.assert_array_equal(episode.steps[name], want, err_msg=name)
    for camera in episode.cameras:
        want = np.stack([step_frames(episode_index, step)[camera] for step in range(episode.num_steps)])
        np.testing.assert_array_equal(episode.frames(camera), want, err_msg=camera)


def write_steps(root, n_steps: int, close: dict | None = None) -> list[int]:
    """An episode of episode_log_writer's steps; -> steps-file size after each step (index 0: empty)."""
    writer = EpisodeWriter(root, {"seed": 5}, frame_codec="png")
    sizes = [0]
    for step in range(n_steps):
        writer.add_step(step_values(0, step), step_frames(0, step))
        sizes.append(os.path.getsize(writer.path / "steps.rec"))  # flushed: the OS has every byte
    writer.close(close)
    return sizes


def test_round_trip_of_every_field_type(tmp_path):
    rng = np.random.default_rng(0)
    steps = [{"f32": rng.normal(size=3).astype(np.float32), "chunk": rng.normal(size=(16, 8)),
              "nan_action": np.full(8, np.nan), "u16_grid": rng.integers(0, 60000, (2, 3), dtype=np.uint16),
              "i8": np.int8(-step), "flag": step % 2 == 0, "bools": np.array([True, step == 1]),
              "py_int": step, "py_float": 0.25 * step, "c64": np.complex64(step + 2j),
              "version": ["", "v1 ✓", "ünïcode"][step]} for step in range(3)]
    frames = [{"front": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
               "wrist": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)} for _ in range(3)]
    with EpisodeWriter(tmp_path, {"seed": 7, "checkpoint": "ckpt/a", "gains": np.arange(2.0)},
                       frame_codec="png") as writer:
        for values, images in zip(steps, frames):
            writer.add_step(values, images)
        writer.close({"success": True, "reason": "cube on patch", "return": np.float32(1.5)})

    episode = read_episode(tmp_path / "episode_000000")
    assert (episode.index, episode.num_steps, episode.complete, episode.dropped_bytes, episode.problem) == \
        (0, 3, True, 0, None)
    assert episode.meta == {"seed": 7, "checkpoint": "ckpt/a", "gains": [0.0, 1.0]}
    assert episode.outcome == {"success": True, "reason": "cube on patch", "return": 1.5}
    assert episode.steps["version"] == ["", "v1 ✓", "ünïcode"]
    for name in steps[0]:
        if name != "version":
            want = np.stack([np.asarray(values[name]) for values in steps])
            assert episode.steps[name].dtype == want.dtype and episode.steps[name].shape == want.shape, name
            np.testing.assert_array_equal(episode.steps[name], want, err_msg=name)
    assert episode.cameras == {"front": (128, 128, 3), "wrist": (48, 64, 3)}
    for camera in ("front", "wrist"):
        np.testing.assert_array_equal(episode.frames(camera), np.stack([f[camera] for f in frames]))
    np.testing.assert_array_equal(episode.frames("wrist", [2, 0]), np.stack([frames[2]["wrist"], frames[0]["wrist"]]))
    episode.steps["chunk"][0] += 1.0  # arrays are the caller's to modify
    outcome_file = json.loads((tmp_path / "episode_000000" / "outcome.json").read_text())  # plain JSON
    assert outcome_file["n_steps"] == 3
    with pytest.raises(ConfigError, match="no camera 'top'"):
        episode.frames("top")


def test_next_index_follows_the_highest_episode_so_a_session_resumes(tmp_path):
    for expected in (0, 1):
        with EpisodeWriter(tmp_path, {}) as writer:
            assert writer.index == expected
    (tmp_path / "episode_000001").rename(tmp_path / "episode_000007")
    with EpisodeWriter(tmp_path, {"resumed": True}) as writer:
        writer.add_step({"x": 1.0})
    assert writer.index == 8
    assert [s.index for s in list_episodes(tmp_path)] == [0, 7, 8]
    assert read_episode(find_episode(tmp_path, 8)).meta == {"resumed": True}


def test_finished_episodes_lists_closed_episodes_only_and_skips_the_given_ones(tmp_path):
    assert finished_episodes(tmp_path) == []  # a log folder before its first episode
    for success in (True, False):
        with EpisodeWriter(tmp_path, {}) as writer:
            writer.add_step({"x": 1.0})
            writer.close({"success": success})
    still_running = EpisodeWriter(tmp_path, {})
    still_running.add_step({"x": 2.0})
    assert [(i, o["success"]) for i, _, o in finished_episodes(tmp_path)] == [(0, True), (1, False)]
    assert [i for i, _, _ in finished_episodes(tmp_path, skip={0})] == [1]
    still_running.close({"success": True})
    assert [i for i, _, _ in finished_episodes(tmp_path, skip={0, 1})] == [2]


def test_exception_inside_the_writer_context_closes_the_episode_as_failed(tmp_path):
    with pytest.raises(RuntimeError, match="gripper jammed"):
        with EpisodeWriter(tmp_path, {}) as writer:
            writer.add_step({"x": np.zeros(2)})
            raise RuntimeError("gripper jammed")
    episode = read_episode(writer.path)
    assert episode.complete and episode.num_steps == 1
    assert episode.outcome == {"success": False, "reason": "RuntimeError: gripper jammed"}
    with pytest.raises(ConfigError, match="closed"):
        writer.add_step({"x": np.zeros(2)})


def test_a_step_that_breaks_the_schema_is_refused_naming_the_field(tmp_path):
    good = {"action": np.zeros(8), "flag": True, "version": "v1"}
    image = {"front": np.zeros((32, 32, 3), np.uint8)}
    writer = EpisodeWriter(tmp_path, {})
    writer.add_step(good, image)
    cases = [
        (dict(good, action=np.zeros(7)), image, r"field 'action' is float64 \(7,\), step 0 had float64 \(8,\)"),
        (dict(good, action=np.zeros(8, np.float32)), image, r"field 'action' is float32 \(8,\), step 0 had float64"),
        ({"action": np.zeros(8), "flag": True}, image, r"field 'version' is missing, step 0 had str \(\)"),
        (dict(good, extra=1.0), image, r"field 'extra' is float64 \(\), step 0 had none"),
        (good, {"front": np.zeros((32, 16, 3), np.uint8)}, r"camera 'front' is uint8 \(32, 16, 3\), step 0 had uint8 \(32, 32, 3\)"),
        (good, None, r"camera 'front' is missing"),
    ]
    for values, frames, message in cases:
        with pytest.raises(ConfigError, match=r"episode 0 step 1 breaks the schema: .*" + message):
            writer.add_step(values, frames)
    with pytest.raises(ConfigError, match="field 'names': cannot log <U1"):
        writer.add_step(dict(good, names=np.array(["a", "b"])), image)
    with pytest.raises(ConfigError, match=r"camera 'front': frames must be \(H, W, 3\) uint8 RGB, got float32"):
        writer.add_step(good, {"front": np.zeros((32, 32, 3), np.float32)})
    writer.add_step(good, image)  # refused steps left nothing behind
    writer.close({})
    episode = read_episode(writer.path)
    assert (episode.num_steps, episode.problem, episode.dropped_bytes) == (2, None, 0)


def test_a_cut_off_last_record_is_dropped_and_the_rest_kept(tmp_path):
    sizes = write_steps(tmp_path / "log", 6, {"success": True})
    last_record = sizes[6] - sizes[5]
    for cut in (1, last_record // 2, last_record - 8, last_record - 1):
        copy = shutil.copytree(tmp_path / "log", tmp_path / f"cut{cut}")
        os.truncate(copy / "episode_000000" / "steps.rec", sizes[6] - cut)
        episode = read_episode(copy / "episode_000000")
        assert episode.num_steps == 5 and episode.dropped_bytes == last_record - cut
        assert episode.problem == "outcome.json says 6 steps, steps.rec holds 5"
        assert_matches_writer(episode, 0)
        assert list_episodes(copy)[0].num_steps == 5
        (copy / "episode_000000" / "outcome.json").unlink()  # as if the writer had died
        assert read_episode(copy / "episode_000000").problem is None


def test_a_corrupt_record_in_the_middle_stops_reading_there(tmp_path):
    sizes = write_steps(tmp_path / "log", 6)
    for where, position, problem in [("magic", sizes[3], "bad record header"),
                                     ("length", sizes[3] + 5, "bad record header"),
                                     ("payload", (sizes[3] + sizes[4]) // 2, "bad checksum")]:
        copy = shutil.copytree(tmp_path / "log", tmp_path / where)
        path = copy / "episode_000000" / "steps.rec"
        data = bytearray(path.read_bytes())
        data[position] ^= 0xFF
        path.write_bytes(bytes(data))
        episode = read_episode(copy / "episode_000000")
        assert episode.num_steps == 3, where
        assert episode.problem.startswith(problem) and "step 3" in episode.problem, episode.problem
        assert episode.dropped_bytes == sizes[6] - sizes[3]
        assert_matches_writer(episode, 0)


def test_bad_roots_and_folders_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=f"episode log {tmp_path / 'missing'} does not exist"):
        list_episodes(tmp_path / "missing")
    with pytest.raises(ConfigError, match=f"{tmp_path} is not an episode log"):
        list_episodes(tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path} is not an episode folder"):
        read_episode(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        EpisodeWriter(tmp_path / "file", {})
    with pytest.raises(ConfigError, match="cannot log object"):
        EpisodeWriter(tmp_path / "log", {}).add_step({"x": object()})
    with pytest.raises(ConfigError, match="has no episode 3"):
        find_episode(tmp_path / "log", 3)
    with pytest.raises(ConfigError, match="episode meta: .*not JSON-serialisable"):
        EpisodeWriter(tmp_path / "log", {"when": object()})


def smooth_frame(seed: int, shape=(128, 128, 3)) -> np.ndarray:
    """A camera-like frame: smooth shading, a hard-edged coloured block, a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    frame = np.stack([90 + 0.5 * x, 110 + 0.4 * y, 130 + 0.2 * (x + y)], axis=-1)
    top, left = rng.integers(10, 80, 2)
    frame[top:top + 30, left:left + 30] = [200, 40, 30]
    return np.clip(frame + rng.normal(0, 1.0, shape), 0, 255).astype(np.uint8)


def test_default_jpeg_frames_are_close_to_the_camera_and_smaller_than_png(tmp_path):
    frames = [{"front": smooth_frame(step), "wrist": smooth_frame(100 + step)} for step in range(5)]
    sizes = {}
    for codec in ("jpeg", "png"):
        with EpisodeWriter(tmp_path / codec, {}, **({} if codec == "jpeg" else {"frame_codec": codec})) as writer:
            for step_frames_ in frames:
                assert writer.add_step({"x": 1.0}, step_frames_)
        sizes[codec] = os.path.getsize(writer.path / "steps.rec")
        episode = read_episode(writer.path)
        assert json.loads((writer.path / "meta.json").read_text())["frame_codec"] == codec
        for camera in ("front", "wrist"):
            error = np.abs(episode.frames(camera).astype(int) - np.stack([f[camera] for f in frames]))
            if codec == "jpeg":
                assert error.mean() < 1.5 and np.percentile(error, 99.9) <= 12 and error.max() <= 32, camera
            else:
                assert error.max() == 0, camera
    assert sizes["jpeg"] < sizes["png"] / 2, sizes
    with pytest.raises(ConfigError, match="frame codec 'webp' is not one of"):
        EpisodeWriter(tmp_path / "webp", {}, frame_codec="webp")


def test_a_disk_that_fills_stops_the_log_with_one_error_keeping_every_step_written(small_disk, caplog):
    root = small_disk(512) / "session"
    with EpisodeWriter(root, {"seed": 0}, frame_codec="png") as first:  # noise frames: ~100 kB a step
        for step in range(2):
            assert first.add_step(step_values(0, step), step_frames(0, step))
        first.close({"success": True})
    caplog.set_level(logging.ERROR)
    writer = EpisodeWriter(root, {"seed": 1}, frame_codec="png")
    written = [writer.add_step(step_values(1, step), step_frames(1, step)) for step in range(8)]
    assert written[:2] == [True, True] and written.index(False) < 6 and not any(written[written.index(False):])
    writer.close({"success": True})  # neither raises after the failure

    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.message for record in errors]
    assert errors[0].message == (
        f"episode log stopped: cannot write step {writer.num_steps} of {root / 'episode_000001'} (ENOSPC: No space "
        f"left on device); its {writer.num_steps} steps written before stay readable, without outcome.json "
        f"(incomplete)")
    assert writer.error == errors[0].message
    kept = read_episode(writer.path)
    assert (kept.num_steps, kept.complete, kept.problem, kept.dropped_bytes) == (writer.num_steps, False, None, 0)
    assert_matches_writer(kept, 1)  # the half-written record was cut off, every whole one reads back
    assert_matches_writer(read_episode(first.path), 0)
    assert [(s.index, s.num_steps, s.complete) for s in list_episodes(root)] == [(0, 2, True),
                                                                                (1, writer.num_steps, False)]
    assert not list(root.rglob("*.tmp"))

    after = EpisodeWriter(root, {"seed": 2}, frame_codec="png")  # the next episode cannot start: told, not raised
    assert not after.add_step(step_values(2, 0), step_frames(2, 0))
    after.close({})
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2 and "ENOSPC" in after.error
    assert main(["episodes", "list", str(root)]) == 0  # the CLI reads the full disk's log


def fill(path: Path) -> None:
    """Write zeros to `path` until its disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, bytes(65536)):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_disk_full_at_close_leaves_the_episode_incomplete_with_its_steps(small_disk, caplog):
    disk = small_disk(256)
    writer = EpisodeWriter(disk / "log", {}, frame_codec="png")
    for step in range(2):
        assert writer.add_step(step_values(0, step), step_frames(0, step))
    fill(disk / "filler")
    caplog.set_level(logging.ERROR)
    writer.close({"success": True})
    assert [record.message for record in caplog.records] == [
        f"episode log stopped: cannot close episode {writer.path} (ENOSPC: No space left on device); its 2 steps "
        f"written before stay readable, without outcome.json (incomplete)"]
    kept = read_episode(writer.path)
    assert (kept.num_steps, kept.complete, kept.problem) == (2, False, None)
    assert_matches_writer(kept, 0)
    assert not list(disk.rglob("*.tmp"))  # the half-written outcome.json.tmp was removed


def steps_on_disk(root: Path, index: int) -> int:
    try:
        return next((s.num_steps for s in list_episodes(root) if s.index == index), 0)
    except ConfigError:  # the logger has not created the root yet
        return 0


def test_kill_9_loses_at_most_the_step_being_written(tmp_path):
    rng = np.random.default_rng(3)
    for round_index in range(6):
        root = tmp_path / f"run{round_index}"
        min_steps = int(rng.integers(1, 30))
        options = [["--no-frames"], [], ["--fsync"], ["--no-frames", "--fsync"]][round_index % 4]
        proc = subprocess.Popen([sys.executable, str(HERE / "episode_log_writer.py"), str(root), *options],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_until(lambda: steps_on_disk(root, 1) >= min_steps or proc.poll() is not None, 120.0)
            time.sleep(rng.uniform(0.0, 0.05))  # a random moment, usually in the middle of a step
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, err
        finished = len(out.split())  # steps whose add_step had returned

        first = read_episode(episode_dir(root, 0))
        assert (first.complete, first.num_steps, first.dropped_bytes, first.problem) == (True, EPISODE0_STEPS, 0, None)
        assert first.meta == {"seed": 0, "task": "push cube"}
        assert first.outcome == {"success": True, "reason": "cube on patch"}
        assert_matches_writer(first, 0)

        killed = read_episode(episode_dir(root, 1))
        assert not killed.complete and killed.outcome is None and killed.problem is None
        assert max(finished, min_steps) <= killed.num_steps <= finished + 1, (finished, killed.num_steps, options)
        assert set(killed.cameras) == (set() if "--no-frames" in options else {"wrist", "front"})
        assert_matches_writer(killed, 1)

        with EpisodeWriter(root, {"resumed": True}) as resumed:  # the next session carries on after it
            resumed.add_step(step_values(2, 0), step_frames(2, 0))  # default codec: not compared
        assert [(s.index, s.complete) for s in list_episodes(root)] == [(0, True), (1, False), (2, True)]


@pytest.fixture
def cli_log(tmp_path):
    """Episode 0: 10 steps, closed as a success; episode 1: 4 steps, its writer died (no outcome.json)."""
    rng = np.random.default_rng(1)
    flags = [[i in (2, 3, 7) for i in range(10)], [True, False, False, False]]
    stamps = [100.0 + 0.1 * np.arange(10), 5.0 + 0.05 * np.arange(4)]
    frames = [{"front": rng.integers(0, 256, (10, 32, 48, 3), dtype=np.uint8),
               "wrist": rng.integers(0, 256, (10, 24, 40, 3), dtype=np.uint8)} for _ in range(2)]
    actions = rng.normal(size=(10, 8))
    for episode in range(2):
        with EpisodeWriter(tmp_path, {"seed": episode}, frame_codec="png") as writer:
            for i in range(len(flags[episode])):
                writer.add_step({"stamp_s": stamps[episode][i], "intervention": flags[episode][i],
                                 "action": actions[i], "weight_version": f"v{i}"},
                                {camera: frames[episode][camera][i] for camera in ("front", "wrist")})
            writer.close({"success": True})
    (tmp_path / "episode_000001" / "outcome.json").unlink()
    return tmp_path, stamps, flags, frames, actions


def test_cli_list(cli_log, capsys):
    root, stamps, flags, _, _ = cli_log
    assert main(["episodes", "list", str(root)]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["index", "steps", "complete", "success", "duration_s", "intervention", "note"]
    assert [row.split() for row in rows] == [
        ["0", "10", "yes", "yes", f"{stamps[0][-1] - stamps[0][0]:.2f}", f"{np.mean(flags[0]):.2f}"],
        ["1", "4", "no", "-", f"{stamps[1][-1] - stamps[1][0]:.2f}", f"{np.mean(flags[1]):.2f}"]]


def test_cli_show_with_strip(cli_log, capsys, tmp_path):
    root, _, _, frames, actions = cli_log
    strip_path = tmp_path / "out" / "strip.png"
    assert main(["episodes", "show", str(root), "0", "--strip", str(strip_path)]) == 0
    out = capsys.readouterr().out
    assert '"seed": 0' in out and '"success": true' in out
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    assert fields["action"] == ["float64", "(8,)", f"{actions.min():.4g}", f"{actions.max():.4g}"]
    assert fields["intervention"] == ["bool", "()", "False", "True"]
    assert fields["weight_version"] == ["str", "()", "v0", "v9"]
    assert "camera front: 48x32 RGB, 10 frames" in out and "camera wrist: 40x24 RGB, 10 frames" in out

    strip = cv2.cvtColor(cv2.imread(str(strip_path)), cv2.COLOR_BGR2RGB)  # read back by OpenCV
    assert strip.shape == (32 + 24, 8 * 48, 3)
    for camera, (top, height, width) in {"front": (0, 32, 48), "wrist": (32, 24, 40)}.items():
        tiles = [strip[top:top + height, k * width:(k + 1) * width] for k in range(8)]
        picked = [next(i for i, frame in enumerate(frames[0][camera]) if np.array_equal(frame, tile)) for tile in tiles]
        assert picked[0] == 0 and picked[-1] == 9 and picked == sorted(set(picked)), picked
    assert not strip[32:, 8 * 40:].any()  # the narrower camera's row is padded with black


def test_cli_bad_root_or_index_is_one_line_and_exit_2(cli_log, capsys, tmp_path):
    root = cli_log[0]
    for argv, message in [(["list", str(tmp_path / "nope")], f"episode log {tmp_path / 'nope'} does not exist"),
                          (["show", str(root), "5"], f"episode log {root} has no episode 5"),
                          (["show", str(root / "episode_000000"), "0"], "is not an episode log")]:
        assert main(["episodes", *argv]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.splitlines()) == 1 and message in captured.err, captured
