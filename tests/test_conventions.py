"""facebench.conventions against scipy's Rotation, hand-computed projections and gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facebench import conventions as cv

RNG = np.random.default_rng(1234)


def random_quats(n: int, seed: int = 0) -> np.ndarray:
    """Random unit quaternions (w, x, y, z), mixed signs of w."""
    xyzw = Rotation.random(n, random_state=seed).as_quat()
    q = xyzw[:, [3, 0, 1, 2]]
    q[::2] *= -1  # both hemispheres
    return q


def scipy_matrix(q: np.ndarray) -> np.ndarray:
    return Rotation.from_quat(q[..., [1, 2, 3, 0]]).as_matrix()


# ---------------------------------------------------------------------------- quaternions
def test_quat_to_matrix_matches_scipy():
    q = random_quats(200)
    np.testing.assert_allclose(cv.quat_to_matrix(q), scipy_matrix(q), atol=1e-12)


def test_quat_to_matrix_is_the_design_formula_for_a_hand_example():
    # 90 degrees about +z: x -> y, y -> -x.
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    np.testing.assert_allclose(cv.quat_to_matrix(q), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)


def test_matrix_to_quat_matches_scipy_and_has_nonnegative_w():
    q = random_quats(500, seed=1)
    R = scipy_matrix(q)
    got = cv.matrix_to_quat(R)
    expected = Rotation.from_matrix(R).as_quat()[:, [3, 0, 1, 2]]
    expected *= np.sign(expected[:, :1])
    assert np.all(got[:, 0] >= 0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    "R",
    [
        np.eye(3),
        np.diag([1.0, -1.0, -1.0]),  # 180 deg about x: w = 0
        np.diag([-1.0, 1.0, -1.0]),  # 180 deg about y
        np.diag([-1.0, -1.0, 1.0]),  # 180 deg about z
        Rotation.from_rotvec([np.pi - 1e-9, 0, 0]).as_matrix(),
        Rotation.from_rotvec([0.3, -0.2, np.pi * 0.999]).as_matrix(),
    ],
)
def test_matrix_to_quat_is_stable_near_half_turns(R):
    q = cv.matrix_to_quat(R)
    np.testing.assert_allclose(cv.quat_to_matrix(q), R, atol=1e-7)
    assert q[0] >= 0


def test_quat_multiply_composes_rotations_like_scipy():
    a, b = random_quats(100, seed=2), random_quats(100, seed=3)
    product = cv.quat_multiply(a, b)
    np.testing.assert_allclose(cv.quat_to_matrix(product), scipy_matrix(a) @ scipy_matrix(b), atol=1e-12)
    expected = (Rotation.from_quat(a[:, [1, 2, 3, 0]]) * Rotation.from_quat(b[:, [1, 2, 3, 0]])).as_quat()
    # same rotation up to sign
    dots = np.abs(np.sum(product * expected[:, [3, 0, 1, 2]], axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-12)


def test_front_constants_agree():
    np.testing.assert_allclose(cv.quat_to_matrix(cv.Q_FRONT), cv.R_FRONT, atol=1e-15)
    np.testing.assert_allclose(cv.matrix_to_quat(cv.R_FRONT), cv.Q_FRONT, atol=1e-15)


# ---------------------------------------------------------------------------- points
def test_transform_matches_scipy_apply():
    q = random_quats(4, seed=4)
    t = RNG.normal(size=(4, 3)) * 100
    x = RNG.normal(size=(4, 7, 3)) * 50
    got = cv.transform(x, q, t)
    for i in range(4):
        expected = Rotation.from_quat(q[i, [1, 2, 3, 0]]).apply(x[i]) + t[i]
        np.testing.assert_allclose(got[i], expected, atol=1e-10)


def test_project_hand_computed_frontal_view():
    # Frontal camera 600 mm away, focal 1000 px, 224x224 image: centre pixel at 111.5.
    K = cv.intrinsics(1000.0, 224)
    assert K[0, 2] == 111.5 and K[1, 2] == 111.5
    points = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, 30.0, 0.0], [0.0, 0.0, 100.0], [30.0, 60.0, 100.0]])
    pixels = cv.project(points, cv.Q_FRONT, np.array([0.0, 0.0, 600.0]), K)
    expected = np.array(
        [
            [111.5, 111.5],
            [111.5 + 1000 * 30 / 600, 111.5],  # subject's left -> image right
            [111.5, 111.5 - 1000 * 30 / 600],  # up in the head frame -> up in the image
            [111.5, 111.5],  # toward the camera: Z = 500
            [111.5 + 1000 * 30 / 500, 111.5 - 1000 * 60 / 500],
        ]
    )
    np.testing.assert_allclose(pixels, expected, atol=1e-10)


def test_project_general_pose_and_batched_K():
    q = random_quats(3, seed=5)
    t = np.array([[5.0, -3.0, 700.0], [0.0, 10.0, 500.0], [-20.0, 0.0, 900.0]])
    K = np.stack([cv.intrinsics(f, 256, 200) for f in (800.0, 1000.0, 1200.0)])
    x = RNG.normal(size=(3, 11, 3)) * 60
    got = cv.project(x, q, t, K)
    for i in range(3):
        cam = x[i] @ scipy_matrix(q[i]).T + t[i]
        u = K[i, 0, 0] * cam[:, 0] / cam[:, 2] + K[i, 0, 2]
        v = K[i, 1, 1] * cam[:, 1] / cam[:, 2] + K[i, 1, 2]
        np.testing.assert_allclose(got[i], np.stack([u, v], axis=1), atol=1e-9)


def test_numpy_float32_in_gives_float32_out():
    x = np.zeros((2, 3), np.float32)
    out = cv.project(x, cv.Q_FRONT.astype(np.float32), np.array([0, 0, 600], np.float32),
                     cv.intrinsics(1000, 224).astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (2, 2)


# ---------------------------------------------------------------------------- errors, angles
def test_rotation_error_matches_acos_formula_and_sign_invariance():
    a, b = random_quats(300, seed=6), random_quats(300, seed=7)
    expected = np.degrees(2 * np.arccos(np.clip(np.abs(np.sum(a * b, axis=1)), 0, 1)))
    np.testing.assert_allclose(cv.rotation_error_deg(a, b), expected, atol=1e-6)
    np.testing.assert_allclose(cv.rotation_error_deg(a, -b), expected, atol=1e-6)
    scipy_angle = np.degrees(
        (Rotation.from_quat(a[:, [1, 2, 3, 0]]).inv() * Rotation.from_quat(b[:, [1, 2, 3, 0]])).magnitude()
    )
    np.testing.assert_allclose(cv.rotation_error_deg(a, b), scipy_angle, atol=1e-6)


def test_rotation_error_small_angle_is_accurate():
    q = cv.pose_from_angles(0.0, 0.0, 0.0)
    q2 = cv.pose_from_angles(1e-4, 0.0, 0.0)
    np.testing.assert_allclose(cv.rotation_error_deg(q, q2), 1e-4, rtol=1e-6)


def test_pose_from_angles_matches_scipy_intrinsic_yxz():
    yaw = RNG.uniform(-170, 170, 100)
    pitch = RNG.uniform(-85, 85, 100)
    roll = RNG.uniform(-170, 170, 100)
    q = cv.pose_from_angles(yaw, pitch, roll)
    R_head = Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], 1), degrees=True).as_matrix()
    np.testing.assert_allclose(cv.quat_to_matrix(q), cv.R_FRONT @ R_head, atol=1e-12)
    back = np.stack(cv.head_angles(q), axis=1)
    np.testing.assert_allclose(back, np.stack([yaw, pitch, roll], 1), atol=1e-6)


def test_head_angle_signs_mean_what_the_docs_say():
    # positive yaw: the face's +z axis turns toward the subject's left (+x), seen by the camera
    # as the nose moving to image right.
    K, t = cv.intrinsics(1000.0, 224), np.array([0.0, 0.0, 600.0])
    nose = np.array([[0.0, 0.0, 100.0]])
    assert cv.project(nose, cv.pose_from_angles(30.0, 0.0, 0.0), t, K)[0, 0] > 111.5
    # positive pitch: face looks down, the nose tip goes down in the image (v grows)
    assert cv.project(nose, cv.pose_from_angles(0.0, 30.0, 0.0), t, K)[0, 1] > 111.5
    # positive roll: subject's left side (+x) goes up in the image
    left_ear = np.array([[70.0, 0.0, 0.0]])
    assert cv.project(left_ear, cv.pose_from_angles(0.0, 0.0, 20.0), t, K)[0, 1] < 111.5


def test_head_angles_of_frontal_is_zero():
    np.testing.assert_allclose(cv.head_angles(cv.Q_FRONT), (0.0, 0.0, 0.0), atol=1e-12)


# ---------------------------------------------------------------------------- torch
def test_torch_and_numpy_paths_agree_and_keep_type():
    q = random_quats(8, seed=8)
    qt = torch.tensor(q, dtype=torch.float64)
    R = cv.quat_to_matrix(qt)
    assert isinstance(R, torch.Tensor) and R.dtype == torch.float64
    np.testing.assert_allclose(R.numpy(), cv.quat_to_matrix(q), atol=1e-15)
    yaw, pitch, roll = cv.head_angles(qt.float())
    assert yaw.dtype == torch.float32
    np.testing.assert_allclose(torch.stack([yaw, pitch, roll], 1).numpy(),
                               np.stack(cv.head_angles(q), 1), atol=1e-3)


def test_gradcheck_quaternion_functions():
    q = torch.tensor(random_quats(3, seed=9), dtype=torch.float64, requires_grad=True)
    q2 = torch.tensor(random_quats(3, seed=10), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cv.quat_to_matrix, (q,))
    assert torch.autograd.gradcheck(cv.quat_multiply, (q, q2))
    assert torch.autograd.gradcheck(cv.rotation_error_deg, (q, q2))
    assert torch.autograd.gradcheck(cv.head_angles, (q,))
    R = cv.quat_to_matrix(q).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(cv.matrix_to_quat, (R,))


def test_gradcheck_projection_and_transform():
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 50
    x.requires_grad_(True)
    q = torch.tensor(random_quats(2, seed=11), dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1.0, 2.0, 600.0], [-3.0, 0.5, 700.0]], dtype=torch.float64, requires_grad=True)
    K = torch.tensor(cv.intrinsics(1000.0, 224), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: cv.project(a, b, c, K), (x, q, t))
    assert torch.autograd.gradcheck(cv.transform, (x, q, t))
    angles = torch.tensor([20.0, -10.0, 5.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: cv.pose_from_angles(a[0], a[1], a[2]), (angles,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    q = torch.tensor(random_quats(16, seed=12))
    x = torch.randn(16, 9, 3, dtype=torch.float64) * 50
    t = torch.tensor([0.0, 0.0, 600.0], dtype=torch.float64).expand(16, 3)
    K = torch.tensor(cv.intrinsics(1000.0, 224))
    cpu = cv.project(x, q, t, K)
    gpu = cv.project(x.cuda(), q.cuda(), t.cuda(), K.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


def test_numpy_only_callers_never_import_torch():
    """Scoring scans needs no torch: conventions and metrics import it on first tensor use only."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "import facebench.conventions as cv, facebench.benchmark.metrics as m\n"
            "assert m.shape_error_mm(np.zeros((1, 3, 3)), np.ones((1, 3, 3)))[0] > 1.7\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "cv.quat_to_matrix(np.array([1.0, 0, 0, 0]))\n"
            "assert 'torch' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
