"""Spherical-harmonics shading: basis constants, ambient and directional lights, rotations,
vertex normals."""

from __future__ import annotations

import math

import numpy as np
import torch

from facebench import conventions as cv
from facebench.render.shading import (
    ambient_sh,
    default_sh,
    directional_sh,
    random_sh,
    rotate_sh,
    sh_basis,
    sh_irradiance,
    sh_orthonormal,
    shade_vertices,
    vertex_normals_torch,
)


def _unit(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _fibonacci(n):
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack((r * torch.cos(phi), r * torch.sin(phi), z), 1)


def test_orthonormal_basis_integrates_to_identity():
    dirs = _fibonacci(20000)
    Y = sh_orthonormal(dirs)
    gram = Y.T @ Y * (4 * math.pi / len(dirs))
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=2e-3, rtol=0)


def test_known_basis_values():
    # H_k(n) = Â_l Y_k(n): at n = +z, H_0 = π·0.282095, H_2 = (2π/3)·0.488603, H_6 = (π/4)·0.315392·2.
    h = sh_basis(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    expected = torch.zeros(9, dtype=torch.float64)
    expected[0] = math.pi * 0.2820948
    expected[2] = 2 * math.pi / 3 * 0.4886025
    expected[6] = math.pi / 4 * 0.3153916 * 2
    torch.testing.assert_close(h, expected, atol=1e-6, rtol=0)


def test_uniform_light_gives_constant_irradiance():
    normals = _unit(500)
    sh = ambient_sh([0.2, 0.7, 1.3], dtype=torch.float64)
    irradiance = sh_irradiance(normals, sh)
    torch.testing.assert_close(irradiance, torch.tensor([0.2, 0.7, 1.3], dtype=torch.float64).expand(500, 3))


def test_directional_light_matches_clamped_cosine_within_3band_error():
    light = torch.tensor([0.3, -0.5, -0.8], dtype=torch.float64)
    light = light / light.norm()
    normals = _unit(4000, seed=1)
    sh = directional_sh(light, [1.0, 0.5, 2.0], dtype=torch.float64)
    irradiance = sh_irradiance(normals, sh)
    cos = normals @ light
    truncated = 0.25 + cos / 2 + 5 / 32 * (3 * cos**2 - 1)  # Legendre series of max(0, t), l <= 2
    strength = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(irradiance, truncated[:, None] * strength, atol=1e-12, rtol=0)
    error = (irradiance - cos.clamp(min=0)[:, None] * strength).abs() / strength
    assert error.max() <= 3 / 32 + 1e-9  # the known maximum, reached at n·l = 0
    assert error.max() > 0.09
    assert error.mean() < 0.05


def test_rotating_normals_and_light_together_keeps_irradiance():
    normals = _unit(300, seed=2)
    q = cv.pose_from_angles(*torch.tensor([37.0, -21.0, 64.0], dtype=torch.float64))
    R = cv.quat_to_matrix(q).double()
    light = torch.tensor([0.1, -0.4, -0.9], dtype=torch.float64)
    a = sh_irradiance(normals, directional_sh(light, 0.8, dtype=torch.float64))
    b = sh_irradiance(normals @ R.T, directional_sh(light @ R.T, 0.8, dtype=torch.float64))
    torch.testing.assert_close(a, b)
    sh = torch.randn(9, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(sh_irradiance(normals @ R.T, rotate_sh(sh, R)), sh_irradiance(normals, sh))
    # Batched: (B, 9, 3) lights with (B, 3, 3) rotations.
    Rs = torch.stack((R, R.T, torch.eye(3, dtype=torch.float64)))
    shs = sh.expand(3, 9, 3)
    out = sh_irradiance(normals @ Rs.transpose(-1, -2), rotate_sh(shs, Rs))
    torch.testing.assert_close(out, sh_irradiance(normals, sh).expand(3, -1, -1))


def test_default_and_random_lights_are_frontal_and_deterministic():
    facing_camera = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    irradiance = sh_irradiance(facing_camera, default_sh())
    assert irradiance[0, 0] > irradiance[1, 0] > irradiance[2, 0] > 0
    a, b = random_sh(5, 7), random_sh(5, 7)
    assert a.shape == (5, 9, 3) and torch.equal(a, b)
    assert not torch.equal(a, random_sh(5, 8))
    lit = sh_irradiance(facing_camera[None, :1].expand(5, 1, 3), a)[:, 0]
    back = sh_irradiance(facing_camera[None, 2:].expand(5, 1, 3), a)[:, 0]
    assert (lit > back).all() and (back > 0).all()


def test_vertex_normals_of_a_sphere_point_outward_and_are_differentiable():
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh.create_icosahedron(1.0).subdivide_loop(2)
    v = torch.tensor(np.asarray(mesh.vertices)) * 50.0
    faces = torch.tensor(np.asarray(mesh.triangles))
    normals = vertex_normals_torch(v, faces)
    cosine = (normals * v / v.norm(dim=-1, keepdim=True)).sum(-1)
    assert cosine.min() > 0.99
    batched = vertex_normals_torch(torch.stack((v, -v[:, [1, 0, 2]] * 1.0)), faces)
    torch.testing.assert_close(batched[0], normals)
    small = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0.3, 0.2, 0.9]], dtype=torch.float64)
    tet = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert torch.autograd.gradcheck(lambda x: vertex_normals_torch(x, tet), (small.requires_grad_(True),))


def test_shade_vertices_multiplies_reflectance_by_irradiance():
    v = torch.tensor([[[0.0, 0, 500], [10, 0, 500], [0, 10, 500]]])  # normal (0, 0, 1) in camera
    faces = torch.tensor([[0, 1, 2]])
    reflectance = torch.tensor([[0.5, 0.25, 1.0]]).expand(3, 3)
    sh = ambient_sh(0.8) + directional_sh([0.0, 0.0, 1.0], 0.4)
    colors = shade_vertices(v, faces, reflectance, sh)
    expected = reflectance * (0.8 + 0.4 * (0.25 + 0.5 + 5 / 16))
    torch.testing.assert_close(colors[0], expected)
