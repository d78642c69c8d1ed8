"""Correctness of the pure-torch rasterizer: coverage rules, depth, barycentrics, occlusion,
culling, agreement with an independent ray caster, gradients, batching, CPU/CUDA agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facebench import conventions as cv
from facebench.render import interpolate, rasterize, render
from facebench.render.shading import ambient_sh

# K with f = 1 and c = 0: a camera-frame vertex (u, v, 1) projects exactly to pixel (u, v).
K_PIXEL = torch.eye(3, dtype=torch.float64)


def _pixel_mesh(points_uv, faces, z=1.0, dtype=torch.float64):
    """Camera-frame vertices ``(1, V, 3)`` at depth z whose pixels are ``points_uv`` (K_PIXEL)."""
    uv = torch.as_tensor(points_uv, dtype=dtype)
    vertices = torch.cat((uv * z, torch.full((len(uv), 1), z, dtype=dtype)), dim=1)
    return vertices[None], torch.as_tensor(faces)


def _covered(fragments, image=0):
    ys, xs = torch.nonzero(fragments.mask[image], as_tuple=True)
    return set(zip(xs.tolist(), ys.tolist()))


# ---------------------------------------------------------------------------- coverage rules
@pytest.mark.parametrize("faces", [[[0, 1, 2]], [[0, 2, 1]]])
def test_single_triangle_covers_hand_computed_pixels(faces):
    # Legs on x = 1 (left edge) and y = 1 (top edge), hypotenuse x + y = 8 (bottom-right edge).
    vertices, faces = _pixel_mesh([[1, 1], [7, 1], [1, 7]], faces)
    fragments = rasterize(vertices, faces, K_PIXEL, 10, 10)
    expected = {(x, y) for x in range(10) for y in range(10) if x >= 1 and y >= 1 and x + y < 8}
    assert len(expected) == 21
    assert _covered(fragments) == expected
    assert (fragments.face_id[fragments.mask] == 0).all()
    assert (fragments.face_id[~fragments.mask] == -1).all()


def _grid_mesh(n, cell, origin, jitter, seed):
    """An n×n grid of squares split with random diagonals; interior vertices jittered."""
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    points = np.stack((origin + jj * cell, origin + ii * cell), axis=-1).reshape(-1, 2).astype(float)
    interior = ((ii > 0) & (ii < n) & (jj > 0) & (jj < n)).reshape(-1)
    points[interior] += rng.uniform(-jitter, jitter, size=(interior.sum(), 2))
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j + 1, (i + 1) * (n + 1) + j
            if rng.random() < 0.5:
                faces += [[a, b, c], [a, c, d]]
            else:
                faces += [[a, b, d], [b, c, d]]
    return points, np.array(faces)


@pytest.mark.parametrize("jitter, seed", [(0.0, 1), (0.9, 1), (0.9, 2), (1.3, 3)])
def test_shared_edges_cover_each_pixel_exactly_once(jitter, seed):
    # Square [3, 19) x [3, 19) in pixel-centre units; edges pass through pixel centres
    # (jitter 0: every vertex on a pixel centre) or through arbitrary float points.
    points, faces = _grid_mesh(4, 4, 3, jitter, seed=seed)
    vertices, faces = _pixel_mesh(points, faces)
    count = torch.zeros(24, 24, dtype=torch.int64)
    for face in faces:
        count += rasterize(vertices, face[None], K_PIXEL, 24, 24).mask[0].long()
    expected = torch.zeros(24, 24, dtype=torch.int64)
    expected[3:19, 3:19] = 1  # top-left rule: left/top boundary in, right/bottom out
    assert torch.equal(count, expected)
    whole = rasterize(vertices, faces, K_PIXEL, 24, 24)
    assert torch.equal(whole.mask[0], expected.bool())


# ---------------------------------------------------------------------------- depth and barycentrics
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plane_depth_and_perspective_correct_barycentrics(dtype):
    # A tilted quad (two triangles) in the camera frame covering the whole 40×30 image.
    K = torch.tensor(cv.intrinsics(50.0, 40, 30), dtype=dtype)
    normal = torch.tensor([0.3, -0.2, -1.0], dtype=torch.float64)
    offset = -600.0  # plane n·x = offset, passes through (0, 0, 600)
    corners_uv = torch.tensor([[-30.0, -30.0], [70.0, -30.0], [70.0, 60.0], [-30.0, 60.0]], dtype=torch.float64)
    rays = torch.cat((corners_uv, torch.ones(4, 1, dtype=torch.float64)), 1) @ torch.linalg.inv(K.double()).T
    corners = rays * (offset / (rays @ normal))[:, None]
    vertices = corners.to(dtype)[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fragments = rasterize(vertices, faces, K, 30, 40)
    assert fragments.mask.all()
    ys, xs = torch.meshgrid(torch.arange(30.0), torch.arange(40.0), indexing="ij")
    pixel_rays = torch.stack((xs, ys, torch.ones_like(xs)), -1).double() @ torch.linalg.inv(K.double()).T
    z_true = offset / (pixel_rays @ normal) * pixel_rays[..., 2]
    points_true = pixel_rays * (offset / (pixel_rays @ normal))[..., None]
    torch.testing.assert_close(fragments.depth[0].double(), z_true, rtol=1e-5, atol=0)
    points = interpolate(fragments, vertices[0])[0].double()
    error = torch.linalg.vector_norm(points - points_true, dim=-1) / torch.linalg.vector_norm(points_true, dim=-1)
    assert error.max() < 1e-4
    bary = fragments.bary[0]
    torch.testing.assert_close(bary.sum(-1), torch.ones_like(bary[..., 0]))
    assert (bary >= -1e-6).all()


def test_occlusion_nearer_triangle_wins_regardless_of_order():
    near_tri = [[2.0, 2.0], [14.0, 2.0], [2.0, 14.0]]
    far_tri = [[4.0, 4.0], [15.0, 4.0], [4.0, 15.0]]
    for order in (0, 1):
        near_v, _ = _pixel_mesh(near_tri, [[0, 1, 2]], z=10.0)
        far_v, _ = _pixel_mesh(far_tri, [[0, 1, 2]], z=20.0)
        vertices = torch.cat((near_v, far_v) if order == 0 else (far_v, near_v), dim=1)
        faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
        K = torch.tensor([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 1]], dtype=torch.float64)
        vertices = vertices.clone()
        vertices[..., :2] /= 10.0  # K scales by 10: same pixels as above
        fragments = rasterize(vertices, faces, K, 16, 16)
        near_id = 0 if order == 0 else 1
        both = (5, 5)  # covered by both triangles
        assert fragments.face_id[0, both[1], both[0]] == near_id
        assert fragments.depth[0, both[1], both[0]] == pytest.approx(10.0)
        only_far = (12, 6)  # x + y = 18 > 16: outside the near triangle, inside the far one
        assert fragments.face_id[0, only_far[1], only_far[0]] == 1 - near_id
        assert fragments.depth[0, only_far[1], only_far[0]] == pytest.approx(20.0)
        assert fragments.face_id[0, 0, 0] == -1 and fragments.depth[0, 0, 0] == 0


# ---------------------------------------------------------------------------- culling and near plane
def test_backface_culling_uses_outward_ccw_winding():
    # A triangle in the head frame, counter-clockwise seen from +z (its outside faces the viewer).
    head = torch.tensor([[[-30.0, -30.0, 0.0], [30.0, -30.0, 0.0], [0.0, 30.0, 0.0]]], dtype=torch.float64)
    front, back = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    q = torch.tensor(cv.Q_FRONT)[None]
    t = torch.tensor([[0.0, 0.0, 500.0]], dtype=torch.float64)
    K = torch.tensor(cv.intrinsics(300.0, 64), dtype=torch.float64)
    cam = cv.transform(head, q, t)
    uv = cam[0, :, :2] / cam[0, :, 2:] * 300 + 31.5
    signed_area = (uv[1, 0] - uv[0, 0]) * (uv[2, 1] - uv[0, 1]) - (uv[1, 1] - uv[0, 1]) * (uv[2, 0] - uv[0, 0])
    assert signed_area < 0  # front-facing = counter-clockwise on the displayed image (v down)
    visible = rasterize(cam, front, K, 64, 64, cull_backfaces=True)
    culled = rasterize(cam, back, K, 64, 64, cull_backfaces=True)
    unculled = rasterize(cam, back, K, 64, 64, cull_backfaces=False)
    assert visible.mask.sum() > 500
    assert not culled.mask.any()
    assert torch.equal(unculled.mask, visible.mask)
    # Seen from behind (yaw 180°) the same front face is culled.
    q_back = torch.as_tensor(cv.pose_from_angles(180.0, 0.0, 0.0))[None]
    behind = rasterize(cv.transform(head, q_back, t), front, K, 64, 64, cull_backfaces=True)
    assert not behind.mask.any()


def _sphere(subdivisions=3, radius=80.0, bumps=0.0):
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh.create_icosahedron(1.0).subdivide_loop(subdivisions)
    v = np.asarray(mesh.vertices)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    r = radius * (1 + bumps * np.sin(3 * v[:, 0]) * np.sin(4 * v[:, 1] + 1) * np.cos(5 * v[:, 2]))
    return torch.tensor(v * r[:, None]), torch.tensor(np.asarray(mesh.triangles))


def test_culling_keeps_the_visible_surface_of_a_closed_convex_mesh():
    vertices, faces = _sphere(3)
    cam = cv.transform(vertices[None], torch.tensor(cv.Q_FRONT)[None], torch.tensor([[5.0, -3.0, 400.0]]))
    K = cv.intrinsics(150.0, 64)
    a = rasterize(cam, faces, K, 64, 64, cull_backfaces=False)
    b = rasterize(cam, faces, K, 64, 64, cull_backfaces=True)
    assert a.mask.sum() > 1000
    assert torch.equal(a.face_id, b.face_id)


def test_near_plane_discards_whole_triangles():
    vertices = torch.tensor([[[0.0, 0.0, 5.0], [4.0, 0.0, 5.0], [0.0, 4.0, 0.5]]], dtype=torch.float64)
    K = torch.tensor([[10.0, 0, 8], [0, 10.0, 8], [0, 0, 1]], dtype=torch.float64)
    assert not rasterize(vertices, torch.tensor([[0, 1, 2]]), K, 16, 16, near=1.0).mask.any()
    assert rasterize(vertices, torch.tensor([[0, 1, 2]]), K, 16, 16, near=0.4).mask.any()


# ---------------------------------------------------------------------------- independent ray caster
@pytest.mark.parametrize("yaw, pitch", [(0.0, 0.0), (35.0, -15.0), (-70.0, 25.0)])
def test_face_ids_agree_with_open3d_raycasting(yaw, pitch):
    o3d = pytest.importorskip("open3d")
    vertices, faces = _sphere(4, bumps=0.25)  # 5120 triangles with self-occlusion
    height, width = 96, 128
    K = cv.intrinsics(220.0, width, height)
    q = torch.as_tensor(cv.pose_from_angles(yaw, pitch, 0.0))[None]
    cam = cv.transform(vertices[None], q, torch.tensor([[10.0, -5.0, 330.0]], dtype=torch.float64))
    ours = rasterize(cam.float(), faces, K, height, width).face_id[0].numpy()

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(cam[0].numpy().astype(np.float32)),
        o3d.core.Tensor(faces.numpy().astype(np.uint32)),
    )
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack((xs, ys, np.ones_like(xs)), -1).reshape(-1, 3).astype(np.float64)
    directions = pixels @ np.linalg.inv(K).T
    rays = np.concatenate((np.zeros_like(directions), directions), 1).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))["primitive_ids"].numpy().astype(np.int64)
    theirs = np.where(hit == scene.INVALID_ID, -1, hit).reshape(height, width)

    union = (ours >= 0) | (theirs >= 0)
    assert union.sum() > 3000
    agreement = (ours == theirs)[union].mean()
    assert agreement >= 0.99, agreement


# ---------------------------------------------------------------------------- gradients
def _gradcheck_scene():
    # Two triangles in the camera frame (mm), generic positions: no pixel centre near an edge.
    vertices = torch.tensor(
        [[[-9.1, -7.3, 60.2], [8.7, -6.9, 63.1], [-1.2, 8.8, 58.7], [11.3, 7.9, 66.4]]],
        dtype=torch.float64,
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    K = torch.tensor(cv.intrinsics(30.0, 12), dtype=torch.float64)
    return vertices, faces, K


def test_gradcheck_interpolate_wrt_attributes():
    vertices, faces, K = _gradcheck_scene()
    fragments = rasterize(vertices, faces, K, 12, 12)
    assert fragments.mask.sum() > 20
    attributes = torch.rand(1, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(fragments, a), (attributes,))


def test_gradcheck_interpolate_and_depth_wrt_vertex_positions():
    vertices, faces, K = _gradcheck_scene()
    attributes = torch.rand(4, 3, dtype=torch.float64)
    reference = rasterize(vertices, faces, K, 12, 12)

    def function(v):
        fragments = rasterize(v, faces, K, 12, 12)
        assert torch.equal(fragments.face_id, reference.face_id)  # coverage unchanged
        return interpolate(fragments, attributes), fragments.depth, fragments.bary

    assert torch.autograd.gradcheck(function, (vertices.clone().requires_grad_(True),))


# ---------------------------------------------------------------------------- batching and devices
def test_batch_of_poses_equals_single_calls():
    vertices, faces = _sphere(3, bumps=0.2)
    yaws = torch.tensor([0.0, 30.0, -50.0, 80.0], dtype=torch.float64)
    q = torch.as_tensor(cv.pose_from_angles(yaws, torch.zeros(4), torch.zeros(4)))
    t = torch.tensor([[0.0, 0.0, 400.0], [5.0, 0.0, 420.0], [0.0, 8.0, 380.0], [-4.0, 2.0, 450.0]])
    cam = cv.transform(vertices[None].expand(4, -1, -1), q, t.double()).float()
    K = torch.tensor(np.stack([cv.intrinsics(f, 48, 40) for f in (100, 110, 120, 90)])).float()
    batched = rasterize(cam, faces, K, 40, 48)
    colors = interpolate(batched, cam)
    for b in range(4):
        single = rasterize(cam[b : b + 1], faces, K[b], 40, 48)
        assert torch.equal(batched.face_id[b], single.face_id[0])
        torch.testing.assert_close(batched.bary[b], single.bary[0])
        torch.testing.assert_close(batched.depth[b], single.depth[0])
        torch.testing.assert_close(colors[b], interpolate(single, cam[b])[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_matches_cpu():
    vertices, faces = _sphere(4, bumps=0.25)
    q = torch.as_tensor(cv.pose_from_angles(torch.tensor([0.0, 40.0]), torch.zeros(2), torch.zeros(2)))
    cam = cv.transform(vertices[None].expand(2, -1, -1), q, torch.tensor([[0.0, 0.0, 330.0]] * 2).double()).float()
    K = cv.intrinsics(220.0, 128, 96)
    cpu = rasterize(cam, faces, K, 96, 128)
    gpu = rasterize(cam.cuda(), faces.cuda(), K, 96, 128)
    assert gpu.face_id.is_cuda
    agreement = (cpu.face_id == gpu.face_id.cpu()).float().mean()
    assert agreement > 0.999  # float rounding may differ on a few edge pixels
    same = cpu.face_id == gpu.face_id.cpu()
    torch.testing.assert_close(gpu.bary.cpu()[same], cpu.bary[same], atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.depth.cpu()[same], cpu.depth[same], rtol=1e-5, atol=0)
    image = render(vertices[None].float().cuda(), faces.cuda(), q[:1].float().cuda(), torch.tensor([[0.0, 0, 330]]).cuda(), K, 96, 128).image
    assert image.is_cuda and image.shape == (1, 96, 128, 3)


# ---------------------------------------------------------------------------- render
def test_render_ambient_light_reproduces_reflectance():
    vertices, faces = _sphere(3)
    reflectance = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64).expand(vertices.shape[0], 3)
    out = render(
        vertices[None], faces, torch.tensor(cv.Q_FRONT)[None], torch.tensor([[0.0, 0.0, 400.0]]),
        cv.intrinsics(150.0, 48), 48, 48,
        reflectance=reflectance, sh=ambient_sh(1.0, dtype=torch.float64), background=(1.0, 0.0, 0.0),
    )
    assert out.mask.sum() > 500
    torch.testing.assert_close(out.image[out.mask], reflectance[:1].expand(int(out.mask.sum()), 3))
    torch.testing.assert_close(out.image[~out.mask], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(int((~out.mask).sum()), 3))
