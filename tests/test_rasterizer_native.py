"""The rasterizer's C kernel (facebench/render/native.py) against the pure-torch passes: the same
fragment buffers bit for bit on random meshes (small, big and screen-filling triangles,
degenerate and edge-on ones, exact depth ties, vertices on pixel centres and behind the near
plane), empty images, both dtypes, culling; gradients unchanged; a clean fallback without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facebench import conventions as cv
from facebench.render import interpolate, native, rasterize

needs_kernel = pytest.mark.skipif(native.kernel() is None, reason=f"C kernel unavailable: {native.unavailable_reason()}")


def _both(monkeypatch, *args, **kwargs):
    """(torch passes, C kernel) fragments of the same call."""
    monkeypatch.setenv(native.ENV_VARIABLE, "0")
    reference = rasterize(*args, **kwargs)
    monkeypatch.setenv(native.ENV_VARIABLE, "1")
    return reference, rasterize(*args, **kwargs)


def _assert_same(a, b):
    for name in ("face_id", "mask", "pix_index", "packed_vertex_ids", "packed_image"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # bit for bit, NaN-free (equal() is exact)
    assert a.packed_bary.dtype == b.packed_bary.dtype and torch.equal(a.packed_bary, b.packed_bary)
    assert torch.equal(a.packed_depth, b.packed_depth)
    assert a._flat_vertex_ids[0] == b._flat_vertex_ids[0]
    assert torch.equal(a._flat_vertex_ids[1], b._flat_vertex_ids[1])
    assert torch.equal(a.bary, b.bary) and torch.equal(a.depth, b.depth)


def _random_scene(seed, batch, dtype, n_small=400, n_big=6, n_degenerate=10, size=(40, 56)):
    """Camera-frame triangle soups ``(B, V, 3)`` mm and faces: sub-pixel to screen-filling
    triangles at depths 50..150 mm, duplicates (exact depth ties), degenerate triangles
    (collinear, repeated vertex), edge-on triangles, vertices on pixel centres, off-screen and
    behind-the-near-plane triangles; per-image intrinsics."""
    rng = np.random.default_rng(seed)
    height, width = size
    Ks = np.stack([cv.intrinsics(f, width, height) for f in rng.uniform(40, 70, batch)])
    all_vertices, faces = [], []

    def add(points_cam):  # (B, 3, 3) corners of one triangle in every image
        base = sum(len(v[0]) for v in all_vertices) if all_vertices else 0
        all_vertices.append(points_cam)
        faces.append([base, base + 1, base + 2])

    def unproject(uv, z, K):  # pixels (3, 2), depths (3,) -> camera frame (3, 3)
        return np.concatenate((((uv - K[:2, 2]) / np.diag(K)[:2]) * z[:, None], z[:, None]), 1)

    def triangle(spread, integer=False):
        per_image = []
        for b in range(batch):
            centre = rng.uniform([-5, -5], [width + 5, height + 5])
            uv = centre + rng.normal(0, spread, (3, 2))
            if integer:
                uv = np.round(uv)
            per_image.append(unproject(uv, rng.uniform(50, 150, 3), Ks[b]))
        return np.stack(per_image)

    for i in range(n_small):
        add(triangle(rng.choice([0.3, 0.8, 2.0, 4.0]), integer=i % 5 == 0))
    for _ in range(n_big):
        add(triangle(40.0))
    add(np.stack([unproject(np.array([[-100, -100], [400, -100], [-100, 400.0]]), np.full(3, 160.0), K) for K in Ks]))
    for i in range(n_degenerate):  # collinear, repeated vertex, edge-on (zero pixel area)
        t = triangle(5.0)
        if i % 3 == 0:
            t[:, 2] = 0.5 * (t[:, 0] + t[:, 1])
        elif i % 3 == 1:
            t[:, 2] = t[:, 0]
        else:  # in a plane through the camera centre: seen edge-on
            t[:, 2] = 0.6 * t[:, 0] + 0.7 * t[:, 1]
        add(t)
    behind = triangle(5.0)
    behind[:, 0, 2] = 0.5  # one corner in front of the near plane (1 mm)
    add(behind)
    vertices = np.concatenate(all_vertices, axis=1)
    faces = np.array(faces)
    dup = faces[rng.choice(n_small, min(20, n_small), replace=False)]  # exact duplicates: ties go to the lower index
    faces = np.concatenate((faces, dup))
    faces[1::2] = faces[1::2, ::-1]  # both windings
    return torch.tensor(vertices, dtype=dtype), torch.tensor(faces), torch.tensor(Ks, dtype=dtype), height, width


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_fragments_as_torch_passes_on_random_scenes(monkeypatch, dtype, cull, seed):
    vertices, faces, K, height, width = _random_scene(seed, 3, dtype)
    reference, fast = _both(monkeypatch, vertices, faces, K, height, width, cull_backfaces=cull)
    assert reference.mask.float().mean() > 0.3  # the scene covers the images
    _assert_same(reference, fast)
    attributes = torch.rand(vertices.shape, dtype=dtype)
    assert torch.equal(interpolate(reference, attributes), interpolate(fast, attributes))
    assert torch.equal(interpolate(reference, attributes[0]), interpolate(fast, attributes[0]))


@needs_kernel
def test_big_triangles_and_shared_intrinsics(monkeypatch):
    # Few triangles much larger than the image (bboxes clipped to it), one K for the batch.
    vertices, faces, K, height, width = _random_scene(5, 2, torch.float32, n_small=10, n_big=30, size=(64, 48))
    reference, fast = _both(monkeypatch, vertices, faces, K[0], height, width)
    assert reference.mask.all()
    _assert_same(reference, fast)


@needs_kernel
def test_ties_go_to_the_lower_face_index(monkeypatch):
    # Two copies of one triangle: identical depth everywhere, face 0 must win in both passes.
    uv = torch.tensor([[2.0, 2.0], [14.0, 3.0], [4.0, 13.0]], dtype=torch.float64)
    vertices = torch.cat((uv * 7.0, torch.full((3, 1), 7.0, dtype=torch.float64)), 1)[None]
    faces = torch.tensor([[0, 1, 2], [0, 1, 2], [1, 2, 0]])
    reference, fast = _both(monkeypatch, vertices, faces, torch.eye(3, dtype=torch.float64), 16, 16)
    assert reference.mask.sum() > 40 and (reference.face_id[reference.mask] == 0).all()
    _assert_same(reference, fast)


@needs_kernel
@pytest.mark.parametrize("case", ["off-screen", "behind", "no-faces", "degenerate"])
def test_empty_images(monkeypatch, case):
    K = torch.tensor(cv.intrinsics(50.0, 32, 24))
    vertices = torch.tensor([[[-1.0, -1.0, 10.0], [1.0, -1.0, 10.0], [0.0, 1.0, 10.0]]]).expand(2, 3, 3).clone()
    faces = torch.tensor([[0, 2, 1]])
    if case == "off-screen":
        vertices[..., 0] += 100.0
    elif case == "behind":
        vertices[..., 2] = -10.0
    elif case == "no-faces":
        faces = faces[:0]
    else:
        vertices[:, 2] = vertices[:, 0]
    reference, fast = _both(monkeypatch, vertices, faces, K, 24, 32)
    assert not fast.mask.any() and fast.pix_index.numel() == 0 and fast.packed_bary.shape == (3, 0)
    assert (fast.face_id == -1).all()
    _assert_same(reference, fast)
    assert torch.equal(interpolate(fast, vertices), torch.zeros(2, 24, 32, 3))


@needs_kernel
def test_gradients_are_those_of_the_torch_passes(monkeypatch):
    # With gradients the barycentric pass stays in torch; visibility comes from the kernel.
    vertices, faces, K, height, width = _random_scene(3, 2, torch.float64, n_small=60, n_big=2)
    attributes = torch.rand(vertices.shape, dtype=torch.float64)
    grads = []
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV_VARIABLE, flag)
        v = vertices.clone().requires_grad_(True)
        fragments = rasterize(v, faces, K, height, width)
        (interpolate(fragments, attributes).square().sum() + fragments.depth.sum()).backward()
        grads.append(v.grad)
    assert grads[0].abs().sum() > 0
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("bad", [3, -1])
def test_out_of_range_faces_raise_as_without_the_kernel(monkeypatch, bad):
    vertices = torch.tensor([[[-1.0, -1.0, 10.0], [1.0, -1.0, 10.0], [0.0, 1.0, 10.0]]])
    faces = torch.tensor([[0, 2, 1], [0, 1, bad]])
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV_VARIABLE, flag)
        with pytest.raises(IndexError):
            rasterize(vertices, faces, cv.intrinsics(50.0, 32, 24), 24, 32)


def test_fallback_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native, "_state", {})
    assert native.kernel() is None
    assert "no-such-compiler" in native.unavailable_reason() or "Error" in native.unavailable_reason()
    vertices, faces, K, height, width = _random_scene(2, 1, torch.float32, n_small=50)
    assert rasterize(vertices, faces, K, height, width).mask.any()  # the torch passes run
    monkeypatch.setenv(native.ENV_VARIABLE, "0")
    assert native.unavailable_reason() == f"{native.ENV_VARIABLE}=0"
