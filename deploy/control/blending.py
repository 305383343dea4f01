"""Interpolation, averaging and dense precomputed plans for action chunks (the maths behind `chunks`).

Rows are action vectors; `quat` is the slice holding an xyzw quaternion (or None). Rotations go through
scipy.spatial.transform (Slerp, RotationSpline, Rotation.mean); every other component is componentwise.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.interpolate import CubicSpline, make_interp_spline
from scipy.spatial.transform import Rotation, RotationSpline, Slerp

INTERPOLATIONS = ("linear", "cubic", "minimum_jerk")


SMOOTHSTEP5_PEAK_SLOPE = 1.875


def smoothstep5(tau: np.ndarray) -> np.ndarray:
    """Quintic 0→1 ramp with zero velocity and acceleration at both ends; peak slope 1.875."""
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10.0 - 15.0 * tau + 6.0 * tau**2)


def _other(width: int, quat: slice | None) -> np.ndarray:
    """Column indices that are not the quaternion."""
    mask = np.ones(width, dtype=bool)
    if quat is not None:
        mask[quat] = False
    return np.flatnonzero(mask)


def continuous_quat(quat_xyzw: np.ndarray, ref_xyzw: np.ndarray | None = None) -> np.ndarray:
    """Pick the sign of each row (N, 4) so consecutive rows (and row 0 vs `ref`) lie in one hemisphere.

    q and -q are the same rotation; without this a sign flip would be a jump in the published vector.
    """
    dots = np.einsum("ij,ij->i", quat_xyzw[1:], quat_xyzw[:-1])
    signs = np.concatenate(([1.0], np.cumprod(np.where(dots < 0.0, -1.0, 1.0))))
    if ref_xyzw is not None and float(quat_xyzw[0] @ ref_xyzw) < 0.0:
        signs = -signs
    return quat_xyzw * signs[:, None]


def crossfade(a: np.ndarray, b: np.ndarray, alpha: np.ndarray, quat: slice | None) -> np.ndarray:
    """(N, A) rows going from `a` (alpha=0) to `b` (alpha=1): lerp, and slerp along the geodesic for rotations."""
    out = a + alpha[:, None] * (b - a)
    if quat is not None:
        ra, rb = Rotation.from_quat(a[:, quat]), Rotation.from_quat(b[:, quat])
        out[:, quat] = (ra * Rotation.from_rotvec(alpha[:, None] * (ra.inv() * rb).as_rotvec())).as_quat()
    return out


def weighted_mean(values: np.ndarray, weights: np.ndarray, quat: slice | None) -> np.ndarray:
    """Per-row weighted average over candidates: values (N, C, A), weights (N, C) ≥ 0 → (N, A)."""
    w = weights / weights.sum(axis=1, keepdims=True)  # (N, C)
    out = np.einsum("nc,nca->na", w, values)
    if quat is not None:
        out[:, quat] = Rotation.from_quat(values[:, :, quat]).mean(weights=w, axis=1).as_quat()
    return out


class Interpolant:
    """Evaluates knots (K,) / (K, A) at any times: `method` between knots, held after the last knot, and
    extended linearly (geodesically for rotations) from the first segment before the first knot, so a plan
    that starts between "now" and its first live point neither stalls nor uses dropped points."""

    def __init__(self, knot_times_s: np.ndarray, knot_values: np.ndarray, method: str, quat: slice | None):
        self.times_s, self.values, self.quat = knot_times_s, knot_values, quat
        self._other = _other(knot_values.shape[1], quat)
        k = len(knot_times_s)
        self._rot = Rotation.from_quat(knot_values[:, quat]) if quat is not None else None
        # Cubic through 2 knots and natural quintic through 2 knots are both the straight line.
        if method == "linear" or k == 2:
            self._pos = None  # np.interp per column
            self._rot_fn = Slerp(knot_times_s, self._rot) if (quat is not None and k > 1) else None
        else:
            y = knot_values[:, self._other]  # (K, A')
            if method == "cubic":
                self._pos = CubicSpline(knot_times_s, y, bc_type="natural")
            else:
                # Natural quintic (3rd and 4th derivatives zero at both ends): of all interpolants through
                # the knots it has the least integrated squared jerk.
                zero = np.zeros(y.shape[1])
                natural = [(3, zero), (4, zero)]
                self._pos = make_interp_spline(knot_times_s, y, k=5, bc_type=(natural, natural))
            # RotationSpline is C2 (cubic in rotation vectors); scipy has no quintic rotation spline.
            self._rot_fn = RotationSpline(knot_times_s, self._rot) if quat is not None else None

    def __call__(self, times_s: np.ndarray) -> np.ndarray:
        """(N,) → (N, A)."""
        kt, kv = self.times_s, self.values
        out = np.empty((len(times_s), kv.shape[1]))
        if len(kt) == 1:
            out[:] = kv[0]
            return out
        t = np.clip(times_s, kt[0], kt[-1])
        if self._pos is None:
            for col in self._other:
                out[:, col] = np.interp(t, kt, kv[:, col])
        else:
            out[:, self._other] = self._pos(t)
        if self.quat is not None:
            out[:, self.quat] = self._rot_fn(t).as_quat()
        early = times_s < kt[0]
        if early.any():  # linear extension of the first segment backwards in time
            s = (times_s[early] - kt[0]) / (kt[1] - kt[0])  # < 0
            out[early] = kv[0] + s[:, None] * (kv[1] - kv[0])
            if self.quat is not None:
                r0 = self._rot[0]
                step = (r0.inv() * self._rot[1]).as_rotvec()
                out[early, self.quat] = (r0 * Rotation.from_rotvec(s[:, None] * step)).as_quat()
        return out


def dense_grid(start_s: float, knot_times_s: np.ndarray, end_s: float, dt_s: float) -> np.ndarray:
    """Times from start_s to end_s that include every knot exactly and are at most dt_s apart."""
    bounds = np.unique(np.concatenate(([start_s], knot_times_s[knot_times_s > start_s], [end_s])))
    bounds = bounds[bounds <= max(end_s, start_s)]
    if len(bounds) == 1:
        return bounds
    span = np.diff(bounds)
    n = np.maximum(1, np.ceil(span / dt_s - 1e-9).astype(int))  # subdivisions per segment
    seg = np.repeat(np.arange(len(n)), n)
    sub = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return np.concatenate((bounds[seg] + span[seg] * sub / n[seg], bounds[-1:]))


@njit(nogil=True, cache=True)
def sample_plan(times_s, values, slopes, t_s, quat_start, quat_stop, out):
    """out (A,) = the plan at t_s: held before the first and after the last grid time, else a lerp between
    grid points with the quaternion columns [quat_start, quat_stop) renormalised (quat_start < 0: none)."""
    i = np.searchsorted(times_s, t_s, side="right")
    if i == 0 or i == times_s.shape[0]:
        out[:] = values[i - 1 if i else 0]
        return
    frac = (t_s - times_s[i - 1]) / (times_s[i] - times_s[i - 1])
    for a in range(values.shape[1]):
        out[a] = values[i - 1, a] + frac * slopes[i - 1, a]
    if quat_start >= 0:
        norm = 0.0
        for a in range(quat_start, quat_stop):
            norm += out[a] * out[a]
        norm = math.sqrt(norm)
        for a in range(quat_start, quat_stop):
            out[a] /= norm


@njit(nogil=True, cache=True)
def _sample_plan_many(times_s, values, slopes, ts_s, quat_start, quat_stop):
    out = np.empty((ts_s.shape[0], values.shape[1]))
    for k in range(ts_s.shape[0]):
        sample_plan(times_s, values, slopes, ts_s[k], quat_start, quat_stop, out[k])
    return out


class DensePlan:
    """A reference precomputed on a ≤ 1 ms grid, so sampling at 1 kHz is a bisect plus one lerp.

    Between grid points the quaternion is lerped and renormalised; grid rows are sign-continuous and at most
    1 ms apart, so this differs from slerp by O(angle³) (< 1e-10 rad at 10 rad/s).
    Also keeps the plan's knots (K,) / (K, A): the points a strategy may freeze or merge at the next splice.
    """

    def __init__(self, times_s, values, knot_times_s, knot_values, quat: slice | None, fade_end_s: float = -math.inf):
        self.times_s, self.values = times_s, values  # (N,), (N, A)
        self.fade_end_s = fade_end_s  # until then the plan still fades in from the one before it
        self.knot_times_s, self.knot_values = knot_times_s, knot_values  # (K,), (K, A)
        self.quat = quat
        self._slopes = np.diff(values, axis=0)  # (N-1, A) per-interval increments
        self._quat_columns = (quat.start, quat.stop) if quat is not None else (-1, -1)

    @classmethod
    def constant(cls, value: np.ndarray, quat: slice | None) -> "DensePlan":
        """Hold `value` forever; it has no knots (nothing to freeze or merge with)."""
        width = len(value)
        return cls(np.array([-np.inf]), value[None, :].copy(), np.empty(0), np.empty((0, width)), quat)

    @property
    def end_s(self) -> float:
        return float(self.times_s[-1])

    @property
    def compiled_sampling(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """The arguments `sample_plan` takes besides the time and the output (for a compiled tick)."""
        return (self.times_s, self.values, self._slopes, *self._quat_columns)

    def sample(self, t_s: float) -> np.ndarray:
        """(A,) at t_s; held before the start and after the end (compiled: this runs in every control tick)."""
        out = np.empty(self.values.shape[1])
        sample_plan(self.times_s, self.values, self._slopes, t_s, *self._quat_columns, out)
        return out

    def sample_many(self, times_s: np.ndarray) -> np.ndarray:
        """(N,) → (N, A), same rule as `sample`."""
        return _sample_plan_many(self.times_s, self.values, self._slopes, np.asarray(times_s, dtype=float),
                                 *self._quat_columns)


def warm_up() -> None:
    """Compile (or load from numba's cache) the sampling kernels now, not in the first control tick."""
    plan = DensePlan(np.array([0.0, 1.0]), np.ones((2, 5)), np.empty(0), np.empty((0, 5)), slice(1, 5))
    plan.sample(0.5), plan.sample_many(np.array([0.5]))


def build_plan(
    knot_times_s: np.ndarray,
    knot_values: np.ndarray,
    start_s: float,
    method: str,
    quat: slice | None,
    dt_s: float,
    previous: DensePlan | None,
    blend_s: float,
    seam_speed: float = math.inf,
) -> DensePlan:
    """Dense plan through the knots from start_s on, faded in from `previous` so the reference keeps its value,
    velocity and acceleration at the splice (quintic ramp). The fade lasts blend_s, or, given a finite
    `seam_speed` (a new writer), as long as closing the gap between the two plans no faster than that needs
    (units/s, quaternion aside): an operator starting away from the executing reference glides there instead of
    jumping. A fade still under way keeps its end time when the next chunk is spliced in (chunks come faster
    than a long glide lasts; restarting it each time would never arrive)."""
    interp = Interpolant(knot_times_s, knot_values, method, quat)
    fade = previous is not None and blend_s > 0.0
    if fade and math.isfinite(seam_speed):
        other = _other(knot_values.shape[1], quat)
        gap = float(np.abs(interp(np.array([start_s]))[0, other] - previous.sample(start_s)[other]).max())
        blend_s = max(blend_s, SMOOTHSTEP5_PEAK_SLOPE * gap / seam_speed)
    elif fade:
        blend_s = max(blend_s, previous.fade_end_s - start_s)
    end_s = max(knot_times_s[-1], start_s + blend_s) if fade else knot_times_s[-1]
    grid = dense_grid(start_s, knot_times_s, end_s, dt_s)  # (N,)
    values = interp(grid)  # (N, A)
    if fade:
        win = grid < start_s + blend_s
        alpha = smoothstep5((grid[win] - start_s) / blend_s)
        values[win] = crossfade(previous.sample_many(grid[win]), values[win], alpha, quat)
    if quat is not None:
        ref = previous.sample(start_s)[quat] if previous is not None else None
        values[:, quat] = continuous_quat(values[:, quat], ref)
    return DensePlan(grid, values, knot_times_s, knot_values, quat, start_s + blend_s if fade else -math.inf)
