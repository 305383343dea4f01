"""The tick's written-out small linear algebra agrees with numpy's LAPACK on seeded random matrices."""
import numpy as np
import pytest

from deploy.control.linalg import matmul, matvec, psd_sqrt, spd_inverse


def random_spd(n, seed, condition=1e4):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (basis * np.geomspace(1.0, condition, n)) @ basis.T


@pytest.mark.parametrize("seed", range(5))
def test_spd_inverse_matches_numpy(seed):
    for n in (6, 7):
        matrix = random_spd(n, seed)
        inverse = spd_inverse(matrix)
        np.testing.assert_allclose(inverse, np.linalg.inv(matrix), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(inverse, inverse.T, atol=0.0)


def test_spd_inverse_refuses_an_indefinite_matrix():
    with pytest.raises(ValueError, match="not positive definite"):
        spd_inverse(np.diag([1.0, -1.0, 1.0]))


@pytest.mark.parametrize("seed", range(5))
def test_psd_sqrt_squares_back_and_matches_the_eigendecomposition(seed):
    matrix = random_spd(6, seed, condition=1e6)
    root = psd_sqrt(matrix)
    np.testing.assert_allclose(root @ root, matrix, rtol=1e-10, atol=1e-10 * np.abs(matrix).max())
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    np.testing.assert_allclose(root, (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T, atol=1e-9)


def test_psd_sqrt_of_a_singular_matrix_and_of_rounding_below_zero():
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((6, 3))
    singular = vectors @ vectors.T  # rank 3
    root = psd_sqrt(singular)
    np.testing.assert_allclose(root @ root, singular, atol=1e-9)
    slightly_negative = np.diag([4.0, 1.0, -1e-15])
    np.testing.assert_allclose(psd_sqrt(slightly_negative), np.diag([2.0, 1.0, 0.0]), atol=1e-12)


def test_matmul_and_matvec_match_numpy():
    rng = np.random.default_rng(3)
    a, b, x = rng.standard_normal((6, 7)), rng.standard_normal((7, 5)), rng.standard_normal(7)
    np.testing.assert_allclose(matmul(a, b), a @ b, atol=1e-12)
    np.testing.assert_allclose(matmul(a, a.T), a @ a.T, atol=1e-12)  # transposed (non-C) operand
    np.testing.assert_allclose(matvec(a, x), a @ x, atol=1e-12)
    np.testing.assert_allclose(matvec(a.T, x[:6]), a.T @ x[:6], atol=1e-12)
