"""`deploy episodes list ROOT` and `deploy episodes show ROOT INDEX [--strip OUT.png]`: look into an episode log."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deploy.errors import ConfigError

STRIP_FRAMES = 8


def register(commands) -> None:
    episodes = commands.add_parser("episodes", help="inspect an episode log (corrections, rollouts, demos)",
                                   description="Inspect an episode log written by deploy.data.episodes.")
    actions = episodes.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(episodes))
    listing = actions.add_parser("list", help="one line per episode")
    listing.add_argument("root", help="episode log folder (holds episode_NNNNNN/)")
    listing.set_defaults(func=_cmd_list)
    show = actions.add_parser("show", help="meta, outcome, fields and cameras of one episode")
    show.add_argument("root", help="episode log folder (holds episode_NNNNNN/)")
    show.add_argument("index", type=int, help="episode index")
    show.add_argument("--strip", metavar="OUT.png", help=f"write ~{STRIP_FRAMES} evenly spaced frames per camera")
    show.set_defaults(func=_cmd_show)


def _yes_no(value) -> str:
    return "-" if value is None else "yes" if value else "no"


def _cmd_list(ns: argparse.Namespace) -> int:
    """Duration from a `stamp_s` field, intervention fraction from a bool `intervention` field, when present."""
    from deploy.data.episodes import list_episodes, read_episode

    summaries = list_episodes(ns.root)
    print(f"{'index':>6} {'steps':>6} {'complete':>8} {'success':>7} {'duration_s':>10} {'intervention':>12}  note")
    for summary in summaries:
        episode = read_episode(summary.path)
        stamps, flags = episode.steps.get("stamp_s"), episode.steps.get("intervention")
        duration = f"{stamps[-1] - stamps[0]:.2f}" if isinstance(stamps, np.ndarray) and len(stamps) else "-"
        fraction = (f"{flags.mean():.2f}" if isinstance(flags, np.ndarray) and flags.dtype == bool and len(flags)
                    else "-")
        note = episode.problem or (f"dropped {episode.dropped_bytes} bytes" if episode.dropped_bytes else "")
        print(f"{episode.index:>6} {episode.num_steps:>6} {_yes_no(episode.complete):>8} "
              f"{_yes_no((episode.outcome or {}).get('success')):>7} {duration:>10} {fraction:>12}  {note}".rstrip())
    return 0


def _value_range(values) -> tuple[str, str]:
    """(min, max) as text: numbers over finite entries, strings by first/last step."""
    if isinstance(values, list):
        return (values[0], values[-1]) if values else ("-", "-")
    finite = values[np.isfinite(values)] if values.dtype.kind in "fc" else values
    if finite.size == 0:
        return ("-", "-")
    return tuple(f"{x:.4g}" if values.dtype != bool else str(bool(x)) for x in (finite.min(), finite.max()))


def _cmd_show(ns: argparse.Namespace) -> int:
    from deploy.data.episodes import find_episode, read_episode

    episode = read_episode(find_episode(ns.root, ns.index))
    print(f"episode {episode.index}: {episode.path}")
    print(f"meta: {json.dumps(episode.meta)}")
    print(f"outcome: {json.dumps(episode.outcome) if episode.complete else 'none (incomplete: the writer died)'}")
    print(f"steps: {episode.num_steps}, dropped bytes: {episode.dropped_bytes}, problem: {episode.problem or 'none'}")
    rows = [("field", "dtype", "shape", "min", "max")]
    for name, values in episode.steps.items():
        kind = ("str", "()") if isinstance(values, list) else (str(values.dtype), str(values.shape[1:]))
        rows.append((name, *kind, *_value_range(values)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    for camera, (height, width, _) in episode.cameras.items():
        print(f"camera {camera}: {width}x{height} RGB, {episode.num_steps} frames")
    if ns.strip:
        _write_strip(episode, Path(ns.strip))
    return 0


def _write_strip(episode, path: Path) -> None:
    """One row per camera of evenly spaced frames (rows padded to the widest), as a PNG."""
    import cv2

    if not episode.cameras or episode.num_steps == 0:
        raise ConfigError(f"episode {episode.index} has no camera frames for --strip")
    picks = np.unique(np.linspace(0, episode.num_steps - 1, min(STRIP_FRAMES, episode.num_steps)).round().astype(int))
    rows = [np.concatenate(list(episode.frames(camera, picks)), axis=1) for camera in episode.cameras]
    width = max(row.shape[1] for row in rows)
    strip = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"--strip: cannot write {path} (a .png path in a writable folder?)")
    print(f"strip: {path} ({len(picks)} frames per camera)")
