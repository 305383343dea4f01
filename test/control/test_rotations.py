"""The fast MuJoCo-based rotation helpers agree with scipy's Rotation (the reference)."""
import numpy as np
from scipy.spatial.transform import Rotation

from deploy.control import rotations


def random_pairs(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return zip(Rotation.random(n, random_state=rng), Rotation.random(n, random_state=rng))


def test_local_rotvec_matches_scipy():
    for a, b in random_pairs():
        expected = (a.inv() * b).as_rotvec()
        np.testing.assert_allclose(rotations.local_rotvec(a.as_quat(), b.as_quat()), expected, atol=1e-9)


def test_apply_local_rotvec_inverts_local_rotvec():
    for a, b in random_pairs():
        q = rotations.apply_local_rotvec(a.as_quat(), rotations.local_rotvec(a.as_quat(), b.as_quat()))
        assert Rotation.from_quat(q).approx_equal(b, atol=1e-9)


def test_base_frame_error_matches_scipy():
    for current, target in random_pairs(seed=1):
        expected = (current * target.inv()).as_rotvec()
        np.testing.assert_allclose(rotations.base_frame_error(current.as_quat(), target.as_quat()), expected,
                                   atol=1e-9)


def test_sign_of_quaternion_does_not_matter():
    a, b = Rotation.random(2, random_state=3)
    np.testing.assert_allclose(rotations.local_rotvec(a.as_quat(), -b.as_quat()),
                               rotations.local_rotvec(a.as_quat(), b.as_quat()), atol=1e-9)
