"""Inverse and square root of small symmetric positive (semi-)definite matrices, compiled for the 1 kHz tick.

The impedance law inverts the 7x7 joint inertia and the 6x6 task mobility and takes the square root of the
task inertia every tick. LAPACK through numba costs several µs per call on such sizes (workspace queries,
copies to Fortran order); a Cholesky and a cyclic Jacobi eigensolver written out are a fraction of that and
allocate only their results. Checked against numpy in the tests.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_JACOBI_SWEEPS = 20  # upper bound; 6x6 inertias converge to machine precision in 4-6
_JACOBI_TOLERANCE = 1e-26  # stop when the squared off-diagonal mass is below this times the squared diagonal


@njit(nogil=True, cache=True)
def spd_inverse(matrix):
    """(n, n) inverse of a symmetric positive definite matrix, by Cholesky (M = L L^T, M^-1 = L^-T L^-1)."""
    n = matrix.shape[0]
    lower = np.zeros((n, n))
    for j in range(n):
        diagonal = matrix[j, j]
        for k in range(j):
            diagonal -= lower[j, k] * lower[j, k]
        if diagonal <= 0.0:
            raise ValueError("spd_inverse: matrix is not positive definite")
        lower[j, j] = math.sqrt(diagonal)
        for i in range(j + 1, n):
            value = matrix[i, j]
            for k in range(j):
                value -= lower[i, k] * lower[j, k]
            lower[i, j] = value / lower[j, j]
    inverse_lower = np.zeros((n, n))  # L^-1, lower triangular
    for j in range(n):
        inverse_lower[j, j] = 1.0 / lower[j, j]
        for i in range(j + 1, n):
            value = 0.0
            for k in range(j, i):
                value -= lower[i, k] * inverse_lower[k, j]
            inverse_lower[i, j] = value / lower[i, i]
    inverse = np.empty((n, n))
    for i in range(n):
        for j in range(i + 1):
            value = 0.0
            for k in range(i, n):
                value += inverse_lower[k, i] * inverse_lower[k, j]
            inverse[i, j] = inverse[j, i] = value
    return inverse


@njit(nogil=True, cache=True)
def matmul(a, b):
    """(n, m) @ (m, k) written out: BLAS through numba costs more than the product on these sizes."""
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            aik = a[i, k]
            for j in range(b.shape[1]):
                out[i, j] += aik * b[k, j]
    return out


@njit(nogil=True, cache=True)
def matvec(a, x):
    """(n, m) @ (m,) written out."""
    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            out[i] += a[i, k] * x[k]
    return out


@njit(nogil=True, cache=True)
def psd_sqrt(matrix):
    """(n, n) symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues, from
    rounding, count as zero), by cyclic Jacobi rotations: A = V diag(sqrt(max(w, 0))) V^T."""
    n = matrix.shape[0]
    a = matrix.copy()
    vectors = np.eye(n)
    for _ in range(_JACOBI_SWEEPS):
        off, diagonal = 0.0, 0.0
        for p in range(n):
            diagonal += a[p, p] * a[p, p]
            for q in range(p + 1, n):
                off += a[p, q] * a[p, q]
        if off <= _JACOBI_TOLERANCE * diagonal:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                if a[p, q] == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * a[p, q])
                t = (1.0 if theta >= 0.0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):  # A <- A G (columns p, q)
                    akp, akq = a[k, p], a[k, q]
                    a[k, p], a[k, q] = c * akp - s * akq, s * akp + c * akq
                for k in range(n):  # A <- G^T A (rows p, q)
                    apk, aqk = a[p, k], a[q, k]
                    a[p, k], a[q, k] = c * apk - s * aqk, s * apk + c * aqk
                for k in range(n):
                    vkp, vkq = vectors[k, p], vectors[k, q]
                    vectors[k, p], vectors[k, q] = c * vkp - s * vkq, s * vkp + c * vkq
    root = np.zeros((n, n))
    for m in range(n):
        w = math.sqrt(max(a[m, m], 0.0))
        for i in range(n):
            for j in range(n):
                root[i, j] += vectors[i, m] * w * vectors[j, m]
    return root
