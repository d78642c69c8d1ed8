"""Tests of facebench.meshio: OBJ parsing (all statement forms), PLY/OBJ round trips, errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from facebench.errors import InputFileError
from facebench.meshio import fan_triangulate, read_mesh, read_obj, read_ply, write_mesh

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ICT_NEUTRAL = SHARED / "ict-facekit" / "FaceXModel" / "generic_neutral_mesh.obj"


def _write(tmp_path: Path, text: str, name: str = "m.obj", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def test_obj_all_statement_forms(tmp_path):
    text = """# a comment
mtllib x.mtl

v 0 0 0
v 1 0 0 1.0
v 1 1 0
v 0 1 0
vt 0.5 0.5
vn 0 0 1
g group
usemtl skin
f 1/1/1 2/1/1 3/1/1 4/1/1
f 1//1 3//1 4//1   # trailing comment
v 2 0 0
f -1 -4 -3
f 1 2 3 4 5
"""
    mesh = read_obj(_write(tmp_path, text))
    np.testing.assert_array_equal(mesh.vertices[1], [1, 0, 0])
    assert mesh.vertices.dtype == np.float64 and mesh.vertices.shape == (5, 3)
    # quad (0,1,2,3) -> (0,1,2),(0,2,3); triangle; relative (-1,-4,-3) at 5 vertices -> (4,1,2);
    # pentagon -> 3 triangles fanned from 0
    expected = [[0, 1, 2], [0, 2, 3], [0, 2, 3], [4, 1, 2], [0, 1, 2], [0, 2, 3], [0, 3, 4]]
    np.testing.assert_array_equal(mesh.faces, expected)
    np.testing.assert_array_equal(mesh.polygon_sizes, [4, 3, 3, 5])
    np.testing.assert_array_equal(mesh.face_polygon, [0, 0, 1, 2, 3, 3, 3])
    assert mesh.n_split == 2
    assert mesh.faces.dtype == np.int64
    np.testing.assert_allclose(mesh.texcoords, [[0.5, 0.5]])


def test_obj_crlf_and_colors(tmp_path):
    text = "v 0 0 0 1 0 0\nv 1 0 0 0 1 0\nv 0 1 0 0 0 0.5\nf 1 2 3\n"
    mesh = read_obj(_write(tmp_path, text, newline="\r\n"))
    np.testing.assert_allclose(mesh.colors, [[1, 0, 0], [0, 1, 0], [0, 0, 0.5]])
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2]])


def test_fan_triangulation_keeps_winding():
    # a convex hexagon counter-clockwise in the xy plane: every triangle's normal must be +z
    angles = np.linspace(0, 2 * np.pi, 7)[:-1]
    points = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1)
    faces, _ = fan_triangulate(np.arange(6), np.array([6]))
    normals = np.cross(points[faces[:, 1]] - points[faces[:, 0]], points[faces[:, 2]] - points[faces[:, 0]])
    assert faces.shape == (4, 3) and np.all(normals[:, 2] > 0)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("# nothing\n", "no vertices"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "line 4: face index 4 out of range"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "line 4: face index 0"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n", "line 4"),
        ("v 0 0 0\nv 1 zero 0\nv 0 1 0\nf 1 2 3\n", "line 2: non-numeric"),
        ("v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n", "line 2: a vertex needs"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "line 4: a face needs at least 3"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", "line 4: face index 'x'"),
    ],
)
def test_obj_errors_name_file_and_line(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(InputFileError) as info:
        read_obj(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        read_obj(tmp_path / "absent.obj")
    with pytest.raises(InputFileError, match="unsupported mesh format"):
        read_mesh(_write(tmp_path, "x", name="m.stl"))


def _random_mesh(seed: int = 0):
    rng = np.random.default_rng(seed)
    vertices = rng.normal(scale=50.0, size=(40, 3))
    faces = rng.integers(0, 40, size=(70, 3))
    colors = rng.uniform(size=(40, 3))
    return vertices, faces, colors


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_round_trip_exact_to_float32(tmp_path, suffix):
    vertices, faces, colors = _random_mesh()
    path = write_mesh(tmp_path / f"mesh{suffix}", vertices, faces, colors)
    mesh = read_mesh(path)
    if suffix == ".ply":  # stored as float32: exactly the float32 values come back
        np.testing.assert_array_equal(mesh.vertices, vertices.astype(np.float32).astype(np.float64))
    else:
        np.testing.assert_allclose(mesh.vertices, vertices, rtol=1e-8)
    np.testing.assert_array_equal(mesh.faces, faces)
    tolerance = 0.5 / 255 + 1e-9 if suffix == ".ply" else 1e-8
    np.testing.assert_allclose(mesh.colors, colors, atol=tolerance)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_ply_without_colors_and_open3d_agrees(tmp_path):
    vertices, faces, _ = _random_mesh(1)
    path = write_mesh(tmp_path / "m.ply", vertices, faces)
    mesh = read_ply(path)
    assert mesh.colors is None
    o3d = pytest.importorskip("open3d")
    other = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_array_equal(np.asarray(other.vertices), mesh.vertices)
    np.testing.assert_array_equal(np.asarray(other.triangles), mesh.faces)


def test_ascii_ply_with_quad(tmp_path):
    text = """ply
format ascii 1.0
element vertex 4
property float x
property float y
property float z
element face 1
property list uchar int vertex_indices
end_header
0 0 0
1 0 0
1 1 0
0 1 0
4 0 1 2 3
"""
    mesh = read_ply(_write(tmp_path, text, name="q.ply"))
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(mesh.vertices[2], [1, 1, 0])


def test_truncated_ply_is_an_input_error(tmp_path):
    vertices, faces, _ = _random_mesh(2)
    path = write_mesh(tmp_path / "m.ply", vertices, faces)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputFileError, match="truncated"):
        read_ply(path)


def test_write_rejects_bad_indices(tmp_path):
    with pytest.raises(ValueError):
        write_mesh(tmp_path / "m.obj", np.zeros((3, 3)), [[0, 1, 3]])
    assert not list(tmp_path.iterdir())


def test_ict_neutral_obj_is_read_fast_and_right():
    if not ICT_NEUTRAL.is_file():
        pytest.skip(f"shared ICT-FaceKit data not found at {ICT_NEUTRAL}")
    start = time.perf_counter()
    mesh = read_obj(ICT_NEUTRAL)
    elapsed = time.perf_counter() - start
    assert mesh.vertices.shape == (26719, 3)
    assert len(mesh.polygon_sizes) == 26384
    assert mesh.n_faces == int(np.sum(mesh.polygon_sizes - 2))
    # first face line of the file: "f 874/1 12/2 871/3 873/4" -> two triangles
    np.testing.assert_array_equal(mesh.faces[:2], [[873, 11, 870], [873, 870, 872]])
    assert elapsed < 1.0, f"read_obj took {elapsed:.2f} s"


def test_mesh_files_over_the_size_limit_are_refused_before_reading(tmp_path, monkeypatch):
    import facebench.mesh as mesh_module
    from facebench.meshio import read_mesh

    path = tmp_path / "big.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    monkeypatch.setattr(mesh_module, "MAX_MESH_BYTES", 10)
    for suffix in (".obj", ".ply", ".wrl"):
        target = path.with_suffix(suffix)
        target.write_bytes(path.read_bytes())
        with pytest.raises(InputFileError, match="more than the 10 a mesh may take"):
            read_mesh(target)


def test_ply_declaring_more_rows_than_bytes_is_refused(tmp_path):
    from facebench.meshio import read_ply

    path = tmp_path / "huge.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n" + b"\0" * 12)
    with pytest.raises(InputFileError, match="declares 1000000000 rows"):
        read_ply(path)
