"""The five losses of Ramon et al. 2019 (facebench.baselines.ramon2019.losses): hand-computed values with a
realistic camera (focal 1000 px, principal point (111.5, 111.5), ~600 mm away), an independent
scipy reference, gradients, head-frame invariances, MRL views, the registry and the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facebench import conventions as cv
from facebench.baselines.ramon2019 import losses as L
from facebench.errors import FacebenchError

F64 = torch.float64
K_NP = cv.intrinsics(1000.0, 224)  # principal point (111.5, 111.5)
K = torch.tensor(K_NP)
FRONT = torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=F64)
HAND_FREE = ("gal", "srl", "mrl")
ALL = ("coarse", "xqt", "gal", "srl", "mrl")
PARAMS = {"coarse": {"alpha": 2.0}, "xqt": {"beta": 3.0, "gamma": 0.5}, "gal": {}, "srl": {}, "mrl": {}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fixed_views(B: int, yaws, pitches, distance=600.0, dtype=F64) -> torch.Tensor:
    """``(B, V, 7)`` virtual views at the given angles (degrees), ``t_v = (0, 0, distance)``."""
    yaw = torch.tensor(yaws, dtype=F64)
    q_v = cv.pose_from_angles(yaw, torch.tensor(pitches, dtype=F64), torch.zeros_like(yaw))
    t_v = torch.zeros(len(yaws), 3, dtype=F64)
    t_v[:, 2] = distance
    return torch.cat((q_v, t_v), -1).expand(B, -1, -1).to(dtype).clone()


def call(name, x_hat, q_hat, t_hat, x, q, t, k=K, views=None, **extra):
    params = dict(PARAMS[name], **extra)
    if name == "mrl":
        params.setdefault("views", views if views is not None else fixed_views(len(x), [0.0, 40.0], [10.0, -20.0]))
    return L.get_loss(name)(x_hat, q_hat, t_hat, x, q, t, k, **params)


def case(B=2, N=4, seed=0, dtype=F64):
    """A random ground truth (points within ±80 mm, poses within ±40°, ~600 mm away) and a
    prediction near it; every tensor ``dtype``."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.rand(*shape, generator=g, dtype=F64) * 2 - 1

    x = 80 * r(B, N, 3)
    q = cv.pose_from_angles(40 * r(B), 30 * r(B), 20 * r(B))
    t = torch.stack((20 * r(B), 20 * r(B), 600 + 50 * r(B)), -1)
    x_hat = x + 3 * r(B, N, 3)
    q_hat = cv.pose_from_angles(*(a + 5 * r(B) for a in cv.head_angles(q)))
    t_hat = t + 10 * r(B, 3)
    return tuple(a.to(dtype) for a in (x_hat, q_hat, t_hat, x, q, t))


def random_rigid(seed=1):
    g = torch.Generator().manual_seed(seed)
    q_T = torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=F64), dim=0)
    t_T = 30 * torch.randn(3, generator=g, dtype=F64)
    return q_T, t_T


def change_frame(points, q, t, q_T, t_T):
    """Head frame moved by T = (q_T, t_T): points ``T x`` (None: skipped), poses ``E T⁻¹`` (same
    camera points)."""
    B = q.shape[0]
    new_points = None if points is None else cv.transform(points, q_T.expand(len(points), 4), t_T.expand(len(points), 3))
    new_q = cv.quat_multiply(q, cv.quat_conjugate(q_T).expand(B, 4))
    new_t = t - (cv.quat_to_matrix(new_q) @ t_T[:, None])[..., 0]
    return new_points, new_q, new_t


# ---------------------------------------------------------------------------- zero / positive
@pytest.mark.parametrize("name", ALL)
def test_zero_at_ground_truth_and_positive_away(name):
    x_hat, q_hat, t_hat, x, q, t = case()
    assert torch.allclose(call(name, x, q, t, x, q, t), torch.zeros(2, dtype=F64), atol=1e-9)
    for args in ((x_hat, q, t), (x, q_hat, t), (x, q, t_hat)):
        value = call(name, *args, x, q, t)
        assert value.shape == (2,)
        assert (value > 1e-5).all(), (name, value)  # a 5 degree q error is ~1e-3 in Coarse/XQT


# ---------------------------------------------------------------------------- hand-computed values
def test_srl_one_millimetre_at_600_and_500_mm():
    x = torch.zeros(2, 1, 3, dtype=F64)
    x_hat = x.clone()
    x_hat[..., 0] = 1.0
    q = FRONT.expand(2, 4)
    t = torch.tensor([[0.0, 0.0, 600.0], [0.0, 0.0, 500.0]], dtype=F64)
    # u moves by f·1/Z pixels, v not at all; mean over (u, v) halves it.
    expected = torch.tensor([1000 / 600 / 2, 1000 / 500 / 2], dtype=F64)
    assert torch.allclose(L.srl(x_hat, q, t, x, q, t, K), expected, atol=1e-12)
    # A 1 mm shift along the head's y is a 1 mm shift along the camera's -y: v moves instead.
    x_hat = x.clone()
    x_hat[..., 1] = 1.0
    assert torch.allclose(L.srl(x_hat, q, t, x, q, t, K), expected, atol=1e-12)


def test_srl_translation_error_of_a_point_off_axis():
    # Point 30 mm right of the axis (camera X = 30) at 600 mm; the prediction 10 mm farther:
    # u: 1000·30/600 − 1000·30/610, v: 0.
    x = torch.tensor([[[30.0, 0.0, 0.0]]], dtype=F64)
    t = torch.tensor([[0.0, 0.0, 600.0]], dtype=F64)
    value = L.srl(x, FRONT, t + torch.tensor([0.0, 0.0, 10.0], dtype=F64), x, FRONT, t, K)
    assert value.item() == pytest.approx((1000 * 30 / 600 - 1000 * 30 / 610) / 2, abs=1e-10)


def test_gal_hand_values():
    x = torch.zeros(1, 2, 3, dtype=F64)
    t = torch.tensor([[0.0, 0.0, 600.0]], dtype=F64)
    shifted = t + torch.tensor([3.0, 0.0, 0.0], dtype=F64)
    assert L.gal(x, FRONT, shifted, x, FRONT, t, K).item() == pytest.approx(1.0, abs=1e-12)
    x_hat = x.clone()
    x_hat[0, 1, 1] = 2.0  # one of 2 points 2 mm up: camera (0, -2, 0); mean over 6 numbers
    assert L.gal(x_hat, FRONT, t, x, FRONT, t, K).item() == pytest.approx(2 / 6, abs=1e-12)


def test_coarse_and_xqt_hand_values():
    x = torch.zeros(1, 2, 3, dtype=F64)
    x_hat = x.clone()
    x_hat[0, 0, 2] = 2.0  # shape MSE = 4 / 6
    t = torch.tensor([[0.0, 0.0, 600.0]], dtype=F64)
    q_hat = torch.tensor([[0.1, 1.0, 0.0, 0.0]], dtype=F64)  # not unit: used as given
    t_hat = t + torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    coarse = L.coarse(x_hat, q_hat, t_hat, x, FRONT, t, K, alpha=2.0)
    assert coarse.item() == pytest.approx(4 / 6 + 2.0 * (0.01 + 9.0) / 7, abs=1e-12)
    value = L.xqt(x_hat, q_hat, t_hat, x, FRONT, t, K, beta=3.0, gamma=0.5)
    assert value.item() == pytest.approx(4 / 6 + 3.0 * 0.01 / 4 + 0.5 * 9.0 / 3, abs=1e-12)


def test_mrl_hand_values():
    x = torch.zeros(1, 1, 3, dtype=F64)
    x_hat = x.clone()
    x_hat[..., 0] = 1.0
    t = torch.tensor([[0.0, 0.0, 600.0]], dtype=F64)
    # Frontal view: 1 mm along head x = (1000/600) px on u. Yaw 90: head x points at the camera
    # (a pure depth change of a point on the axis): 0 px.
    front, side = fixed_views(1, [0.0], [0.0]), fixed_views(1, [90.0], [0.0])
    assert L.mrl(x_hat, FRONT, t, x, FRONT, t, K, views=front).item() == pytest.approx(1000 / 600 / 2, abs=1e-12)
    assert L.mrl(x_hat, FRONT, t, x, FRONT, t, K, views=side).item() == pytest.approx(0.0, abs=1e-9)
    both = torch.cat((front, side), 1)
    assert L.mrl(x_hat, FRONT, t, x, FRONT, t, K, views=both).item() == pytest.approx(1000 / 600 / 4, abs=1e-9)
    # A pose error moves the prediction in the ground-truth head frame: t̂ = t + (3, 0, 0) with a
    # frontal R = diag(1, -1, -1) gives D x̂ = x + (3, 0, 0): 3·1000/600 px on u in the frontal view.
    t_hat = t + torch.tensor([3.0, 0.0, 0.0], dtype=F64)
    assert L.mrl(x, FRONT, t_hat, x, FRONT, t, K, views=front).item() == pytest.approx(2.5, abs=1e-12)


# ---------------------------------------------------------------------------- independent reference
def reference(name, x_hat, q_hat, t_hat, x, q, t, views):
    """GAL/SRL/MRL with scipy rotations and numpy, per sample (an independent code path)."""

    def rot(quat):
        w, a, b, c = quat
        return Rotation.from_quat([a, b, c, w]).as_matrix()  # scipy is scalar-last; normalizes

    def pix(points_cam):
        h = points_cam @ K_NP.T
        return h[:, :2] / h[:, 2:3]

    out = []
    for i in range(len(x)):
        xi, xh = x[i].numpy(), x_hat[i].numpy()
        R, Rh = rot(q[i].numpy()), rot(q_hat[i].numpy())
        ti, th = t[i].numpy(), t_hat[i].numpy()
        cam, cam_h = xi @ R.T + ti, xh @ Rh.T + th
        if name == "gal":
            out.append(np.abs(cam - cam_h).mean())
        elif name == "srl":
            out.append(np.abs(pix(cam) - pix(cam_h)).mean())
        else:
            D = (cam_h - ti) @ R  # R^T (R̂ x̂ + t̂ − t)
            errors = []
            for view in views[i].numpy():
                Rv, tv = rot(view[:4]), view[4:]
                errors.append(np.abs(pix(xi @ Rv.T + tv) - pix(D @ Rv.T + tv)).mean())
            out.append(np.mean(errors))
    return np.array(out)


@pytest.mark.parametrize("name", HAND_FREE)
def test_matches_an_independent_scipy_reference(name):
    x_hat, q_hat, t_hat, x, q, t = case(B=2, N=4, seed=3)
    q_hat = 1.7 * q_hat  # non-unit q̂ is normalized by GAL/SRL/MRL
    views = fixed_views(2, [-70.0, 15.0, 80.0], [30.0, -40.0, 5.0], distance=620.0)
    value = L.get_loss(name)(x_hat, q_hat, t_hat, x, q, t, K, **({"views": views} if name == "mrl" else {}))
    np.testing.assert_allclose(value.numpy(), reference(name, x_hat, q_hat, t_hat, x, q, t, views), rtol=1e-10)


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ALL)
def test_gradcheck(name):
    x_hat, q_hat, t_hat, x, q, t = case(B=2, N=3, seed=5)
    inputs = tuple(a.clone().requires_grad_(True) for a in (x_hat, q_hat, t_hat))

    def fn(a, b, c):
        return call(name, a, b, c, x, q, t)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_float32_gradients_reach_every_prediction(name):
    x_hat, q_hat, t_hat, x, q, t = case(B=2, N=50, seed=6, dtype=torch.float32)
    inputs = [a.clone().requires_grad_(True) for a in (x_hat, q_hat, t_hat)]
    value = call(name, *inputs, x, q, t, views=fixed_views(2, [20.0, -60.0], [0.0, 30.0], dtype=torch.float32))
    assert value.dtype == torch.float32
    exact = call(name, *(a.double() for a in (x_hat, q_hat, t_hat, x, q, t)), views=fixed_views(2, [20.0, -60.0], [0.0, 30.0]))
    assert torch.allclose(value.double(), exact, rtol=1e-4)
    value.mean().backward()
    for tensor in inputs:
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize("name", HAND_FREE)
def test_non_unit_and_zero_q_hat(name):
    x_hat, q_hat, t_hat, x, q, t = case(seed=7)
    assert torch.allclose(call(name, x_hat, 3 * q_hat, t_hat, x, q, t), call(name, x_hat, q_hat, t_hat, x, q, t))
    zero = torch.zeros_like(q_hat, requires_grad=True)
    x_hat = x_hat.clone().requires_grad_(True)
    value = call(name, x_hat, zero, t_hat, x, q, t)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(zero.grad).all() and torch.isfinite(x_hat.grad).all()


def test_coarse_and_xqt_use_q_hat_unnormalized():
    x_hat, q_hat, t_hat, x, q, t = case(seed=8)
    for name in ("coarse", "xqt"):
        assert not torch.allclose(call(name, x_hat, 3 * q_hat, t_hat, x, q, t), call(name, x_hat, q_hat, t_hat, x, q, t))


def test_quaternion_sign():
    x_hat, q_hat, t_hat, x, q, t = case(seed=9)
    for name in ("coarse", "xqt"):
        assert torch.allclose(call(name, x_hat, q_hat, t_hat, x, -q, t), call(name, x_hat, q_hat, t_hat, x, q, t))
        literal = call(name, x_hat, q_hat, t_hat, x, -q, t, sign_invariant=False)
        assert (literal > call(name, x_hat, q_hat, t_hat, x, q, t, sign_invariant=False) + 1.0).all()
        assert torch.allclose(call(name, x, -q, t, x, q, t), torch.zeros(2, dtype=F64))


# ---------------------------------------------------------------------------- invariances
def test_head_frame_invariance():
    x_hat, q_hat, t_hat, x, q, t = case(seed=10)
    views = fixed_views(2, [-50.0, 30.0], [20.0, -10.0])
    q_T, t_T = random_rigid()
    x2, q2, t2 = change_frame(x, q, t, q_T, t_T)
    x_hat2, q_hat2, t_hat2 = change_frame(x_hat, q_hat, t_hat, q_T, t_T)
    B, V = views.shape[:2]
    _, q_v2, t_v2 = change_frame(None, views[..., :4].reshape(-1, 4), views[..., 4:].reshape(-1, 3), q_T, t_T)
    views2 = torch.cat((q_v2, t_v2), -1).reshape(B, V, 7)
    for name in HAND_FREE:
        before = call(name, x_hat, q_hat, t_hat, x, q, t, views=views)
        after = call(name, x_hat2, q_hat2, t_hat2, x2, q2, t2, views=views2)
        assert torch.allclose(before, after, rtol=1e-10, atol=1e-10), name
    for name in ("coarse", "xqt"):
        before = call(name, x_hat, q_hat, t_hat, x, q, t)
        after = call(name, x_hat2, q_hat2, t_hat2, x2, q2, t2)
        assert ((before - after).abs() > 1e-3 * before).all(), name


def test_prediction_in_another_head_frame_is_perfect_for_the_free_losses():
    _, _, _, x, q, t = case(seed=11)
    q_T, t_T = random_rigid(seed=2)
    x_hat, q_hat, t_hat = change_frame(x, q, t, q_T, t_T)  # x̂ = T x, Ê = E T⁻¹: D x̂ = x
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(L.mrl(x_hat, q_hat, t_hat, x, q, t, K, n_views=4, generator=generator),
                          torch.zeros(2, dtype=F64), atol=1e-9)
    for name in ("gal", "srl"):
        assert torch.allclose(call(name, x_hat, q_hat, t_hat, x, q, t), torch.zeros(2, dtype=F64), atol=1e-9)
    assert (call("coarse", x_hat, q_hat, t_hat, x, q, t) > 1.0).all()


# ---------------------------------------------------------------------------- MRL views
def test_mrl_is_the_mean_of_single_view_terms():
    x_hat, q_hat, t_hat, x, q, t = case(seed=12)
    views = fixed_views(2, [-80.0, -10.0, 35.0, 70.0], [40.0, 0.0, -30.0, 10.0])
    views[1] = fixed_views(1, [5.0, 60.0, -45.0, 0.0], [-5.0, 20.0, 0.0, 45.0], distance=580.0)[0]
    together = L.mrl(x_hat, q_hat, t_hat, x, q, t, K, views=views)
    single = torch.stack([L.mrl(x_hat, q_hat, t_hat, x, q, t, K, views=views[:, v : v + 1]) for v in range(4)])
    assert torch.allclose(together, single.mean(0), rtol=1e-12)
    assert single.std(0).min() > 1e-3  # the views really differ


def test_sampled_views_are_deterministic_and_in_range():
    t = torch.tensor([[10.0, -5.0, 600.0], [0.0, 0.0, 550.0], [3.0, 4.0, 700.0]], dtype=F64)
    a = L.sample_views(t, 64, generator=torch.Generator().manual_seed(3))
    b = L.sample_views(t, 64, generator=torch.Generator().manual_seed(3))
    c = L.sample_views(t, 64, generator=torch.Generator().manual_seed(4))
    assert a.shape == (3, 64, 7) and torch.equal(a, b) and not torch.equal(a, c)
    yaw, pitch, roll = cv.head_angles(a[..., :4])
    assert yaw.min() >= -90 - 1e-9 and yaw.max() <= 90 + 1e-9 and yaw.max() - yaw.min() > 120
    assert pitch.min() >= -45 - 1e-9 and pitch.max() <= 45 + 1e-9 and pitch.max() - pitch.min() > 60
    assert roll.abs().max() < 1e-9
    assert torch.allclose(a[..., 4:6], torch.zeros(3, 64, 2, dtype=F64))
    assert torch.allclose(a[..., 6], torch.linalg.vector_norm(t, dim=-1)[:, None].expand(3, 64))
    narrow = L.sample_views(t, 16, generator=torch.Generator().manual_seed(5), yaw_range=(10, 20), pitch_range=(-5, -1))
    yaw, pitch, _ = cv.head_angles(narrow[..., :4])
    assert yaw.min() >= 10 - 1e-9 and yaw.max() <= 20 + 1e-9 and pitch.min() >= -5 - 1e-9 and pitch.max() <= -1 + 1e-9


def test_mrl_sampling_uses_the_generator():
    x_hat, q_hat, t_hat, x, q, t = case(seed=13)

    def run(seed):
        return L.mrl(x_hat, q_hat, t_hat, x, q, t, K, n_views=3, generator=torch.Generator().manual_seed(seed))

    views = L.sample_views(t, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    assert torch.equal(run(1), L.mrl(x_hat, q_hat, t_hat, x, q, t, K, views=views))


# ---------------------------------------------------------------------------- K, devices, errors
@pytest.mark.parametrize("name", ("srl", "mrl"))
def test_shared_and_per_sample_K_agree(name):
    x_hat, q_hat, t_hat, x, q, t = case(seed=14)
    shared = call(name, x_hat, q_hat, t_hat, x, q, t, k=K)
    assert torch.allclose(shared, call(name, x_hat, q_hat, t_hat, x, q, t, k=K.expand(2, 3, 3)))
    assert torch.allclose(shared, call(name, x_hat, q_hat, t_hat, x, q, t, k=K_NP))
    other = K.clone().expand(2, 3, 3).clone()
    other[1, 0, 0] = other[1, 1, 1] = 500.0
    mixed = call(name, x_hat, q_hat, t_hat, x, q, t, k=other)
    assert mixed[0] == pytest.approx(shared[0].item()) and mixed[1] < 0.75 * shared[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_cpu(name):
    args = case(seed=15)
    cpu = call(name, *args[:3], *args[3:])
    cuda_args = [a.cuda() for a in args]
    views = fixed_views(2, [0.0, 40.0], [10.0, -20.0]).cuda()
    gpu = call(name, *cuda_args[:3], *cuda_args[3:], k=K.cuda(), views=views)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-9)
    generator = torch.Generator(device="cuda").manual_seed(0)
    assert L.mrl(*cuda_args, K.cuda(), generator=generator).device.type == "cuda"


def test_bad_shapes_raise_value_errors():
    x_hat, q_hat, t_hat, x, q, t = case()
    with pytest.raises(ValueError, match="x_hat and x"):
        L.gal(x_hat[:, :2], q_hat, t_hat, x, q, t)
    with pytest.raises(ValueError, match="q_hat"):
        L.srl(x_hat, q_hat[:, :3], t_hat, x, q, t, K)
    with pytest.raises(ValueError, match="K must be"):
        L.srl(x_hat, q_hat, t_hat, x, q, t, torch.eye(3).expand(3, 3, 3))
    with pytest.raises(ValueError, match="views"):
        L.mrl(x_hat, q_hat, t_hat, x, q, t, K, views=torch.zeros(2, 2, 6))
    with pytest.raises(ValueError, match="n_views"):
        L.mrl(x_hat, q_hat, t_hat, x, q, t, K, n_views=0)


# ---------------------------------------------------------------------------- registry
def test_registry_and_params():
    assert set(L.LOSSES) == set(ALL)
    assert L.get_loss("srl") is L.srl
    with pytest.raises(FacebenchError, match="unknown loss 'mse'"):
        L.get_loss("mse")
    assert L.required_params("coarse") == ("alpha",)
    assert L.required_params("xqt") == ("beta", "gamma")
    assert all(L.required_params(n) == () for n in HAND_FREE)
    with pytest.raises(FacebenchError, match="--beta, --gamma"):
        L.check_params("xqt", {"beta": None})
    with pytest.raises(FacebenchError, match="takes no alpha"):
        L.check_params("gal", {"alpha": 1.0})
    with pytest.raises(FacebenchError, match="finite"):
        L.check_params("coarse", {"alpha": float("nan")})
    L.check_params("mrl", {"n_views": 4, "alpha": None})
    x_hat, q_hat, t_hat, x, q, t = case()
    with pytest.raises(FacebenchError, match="needs the weight alpha"):
        L.coarse(x_hat, q_hat, t_hat, x, q, t, K)
    bound = L.make_loss("xqt", beta=3.0, gamma=0.5)
    assert torch.equal(bound(x_hat, q_hat, t_hat, x, q, t, K), L.xqt(x_hat, q_hat, t_hat, x, q, t, K, beta=3.0, gamma=0.5))


# ---------------------------------------------------------------------------- weights from data
def known_targets():
    """4 samples with hand-computable variances: shape 4 mm², q 0.025, t 100/3 mm²."""
    base = np.array([[0.0, 0.0, 100.0], [30.0, -20.0, 80.0]])
    offsets = np.array([-2.0, 2.0, -2.0, 2.0])
    vertices = base[None] + offsets[:, None, None]
    # (0, -1, 0, 0) is the frontal rotation with the other sign: aligned to (0, 1, 0, 0).
    q = np.array([[0.0, 1.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0]])
    t = np.array([[0.0, 0.0, 590.0], [0.0, 0.0, 610.0], [0.0, 0.0, 590.0], [0.0, 0.0, 610.0]])
    return {"vertices": vertices, "q": q, "t": t}


def test_scale_weights_hand_values():
    v = L.target_variances(known_targets())
    assert v["shape"] == pytest.approx(4.0) and v["q"] == pytest.approx(0.025) and v["t"] == pytest.approx(100 / 3)
    w = L.ramon2019_scale_weights(known_targets())
    assert w == pytest.approx({"alpha": 4 * 7 / 100.1, "beta": 160.0, "gamma": 0.12})


def test_scale_weights_balance_the_terms_at_the_mean_predictor():
    _, _, _, x, q, t = case(B=16, N=5, seed=16)
    data = {"vertices": x.numpy(), "q": q.numpy(), "t": t.numpy()}
    w = L.ramon2019_scale_weights(data)
    aligned = torch.where(q[:, 1:2] < 0, -q, q)
    mean = [a.mean(0, keepdim=True).expand_as(a) for a in (x, aligned, t)]
    shape_term = L.coarse(*mean, x, q, t, alpha=0.0).mean()
    coarse_pose = (L.coarse(*mean, x, q, t, alpha=w["alpha"]) - L.coarse(*mean, x, q, t, alpha=0.0)).mean()
    xqt_q = (L.xqt(*mean, x, q, t, beta=w["beta"], gamma=0.0) - L.xqt(*mean, x, q, t, beta=0.0, gamma=0.0)).mean()
    xqt_t = (L.xqt(*mean, x, q, t, beta=0.0, gamma=w["gamma"]) - L.xqt(*mean, x, q, t, beta=0.0, gamma=0.0)).mean()
    for term in (coarse_pose, xqt_q, xqt_t):
        assert term.item() == pytest.approx(shape_term.item(), rel=1e-9)


def test_scale_weights_from_a_dataset_file_stream_in_chunks(tmp_path):
    from facebench.datasets.dataset_file import DatasetWriter, FaceDataset

    rng = np.random.default_rng(0)
    n, V = 7, 3
    vertices = (rng.normal(size=(n, V, 3)) * 5 + [0, 0, 90]).astype(np.float32)
    q = cv.quat_canonical(cv.pose_from_angles(rng.uniform(-60, 60, n), rng.uniform(-20, 20, n), rng.uniform(-9, 9, n)))
    t = np.column_stack((rng.normal(size=n), rng.normal(size=n), 600 + 20 * rng.normal(size=n)))
    path = tmp_path / "tiny.h5"
    with DatasetWriter(path, n=n, height=2, width=2, faces=np.array([[0, 1, 2]]), landmark_indices=np.array([0]),
                       n_vertices=V, n_coefficients={}, K=K_NP) as writer:
        writer.write(0, {
            "ids": [str(i) for i in range(n)], "images": np.zeros((n, 2, 2, 3), np.uint8),
            "masks": np.zeros((n, 2, 2), bool), "reflectance_images": np.zeros((n, 2, 2, 3), np.uint8),
            "vertices": vertices, "landmarks_2d": np.zeros((n, 1, 2), np.float32), "q": q, "t": t,
            "sh": np.zeros((n, 9, 3), np.float32), "yaw": np.zeros(n), "pitch": np.zeros(n), "roll": np.zeros(n),
        })
    expected = L.ramon2019_scale_weights({"vertices": vertices, "q": q, "t": t})
    assert L.ramon2019_scale_weights(FaceDataset(path), chunk=3) == pytest.approx(expected, rel=1e-9)
    assert L.ramon2019_scale_weights(str(path)) == pytest.approx(expected, rel=1e-9)


def test_scale_weights_refuse_constant_targets():
    data = known_targets()
    data["q"] = np.tile([0.0, 1.0, 0.0, 0.0], (4, 1))
    with pytest.raises(FacebenchError, match="rotations do not vary"):
        L.ramon2019_scale_weights(data)
    with pytest.raises(FacebenchError, match="at least 2"):
        L.ramon2019_scale_weights({k: v[:1] for k, v in known_targets().items()})
