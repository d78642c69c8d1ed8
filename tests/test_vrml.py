"""Tests of the VRML 2.0 IndexedFaceSet reader on hand-written files with known content."""

from __future__ import annotations

import numpy as np
import pytest

from facebench.errors import InputFileError
from facebench.meshio import read_mesh
from facebench.meshio_vrml import parse_vrml, read_vrml

TWO_SHAPES = """#VRML V2.0 utf8
# a scan exported by some scanner; braces in comments { [ are ignored
Group { children [
  DEF FACE Shape {
    appearance Appearance { texture ImageTexture { url "skin#1{[.png" } }
    geometry IndexedFaceSet {
      solid FALSE
      coord DEF C Coordinate { point [ 0 0 0, 1 0 0, 1 1 0, 0 1 0,   # 0..3: a unit square
                                       2 0 0, 2 1 0.5 ] }            # 4, 5
      texCoord TextureCoordinate { point [ 0 0, 1 0, 1 1, 0 1, 1 0, 1 1 ] }
      coordIndex [ 0, 1, 2, 3, -1,   # quad
                   1, 4, 2, -1 ]     # triangle
      texCoordIndex [ 0 1 2 3 -1 1 4 2 -1 ]
    }
  }
  Shape { geometry IndexedFaceSet { coord USE C
      coordIndex [ 0 1 4 5 2 ] } }   # a pentagon without the final -1
] }
"""


def test_two_shapes_polygons_comments_def_use():
    mesh = parse_vrml(TWO_SHAPES)
    square = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0.5]]
    np.testing.assert_array_equal(mesh.vertices, np.array(square + square, float))
    # quad fanned (0,1,2),(0,2,3); triangle; pentagon of the 2nd shape offset by 6, fanned from 6
    expected = [[0, 1, 2], [0, 2, 3], [1, 4, 2], [6, 7, 10], [6, 10, 11], [6, 11, 8]]
    np.testing.assert_array_equal(mesh.faces, expected)
    np.testing.assert_array_equal(mesh.polygon_sizes, [4, 3, 5])
    np.testing.assert_array_equal(mesh.face_polygon, [0, 0, 1, 2, 2, 2])
    assert mesh.texcoords.shape == (6, 2)


def test_winding_kept_normals_point_up():
    mesh = parse_vrml(TWO_SHAPES)
    v, f = mesh.vertices, mesh.faces[:3]
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (normals[:, 2] > 0).all()  # counter-clockwise seen from +z, as written


def test_file_crlf_header_and_read_mesh(tmp_path):
    path = tmp_path / "scan.wrl"
    path.write_bytes(TWO_SHAPES.replace("\n", "\r\n").encode())
    mesh = read_vrml(path)
    assert mesh.n_vertices == 12 and mesh.n_faces == 6
    again = read_mesh(path)  # registered in facebench.meshio
    np.testing.assert_array_equal(again.faces, mesh.faces)


def test_single_shape_without_group_or_header():
    text = "Shape { geometry IndexedFaceSet { coord Coordinate { point [1 2 3 4 5 6 7 8 9] } coordIndex [2 1 0 -1] } }"
    mesh = parse_vrml(text)
    np.testing.assert_array_equal(mesh.vertices, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(mesh.faces, [[2, 1, 0]])


def _base(point="0 0 0 1 0 0 0 1 0 1 1 0", index="0 1 2 -1 1 3 2 -1", extra=""):
    return (f"#VRML V2.0 utf8\nShape {{ geometry IndexedFaceSet {{ coord Coordinate {{ point [{point}] }}\n"
            f"coordIndex [{index}] {extra} }} }}\n")


@pytest.mark.parametrize("text, message", [
    (_base(point="0 0 0 1 0 x 0 1 0"), "'x' is not a number"),
    (_base(point="0 0 0 1 0 0 0 1"), "not a multiple of 3"),
    (_base(index="0 1 3 -1 0 1 4 -1"), "index 4 outside 0..3"),
    (_base(index="0 1 2.5 -1"), "'2.5' is not a number"),
    (_base(index="0 1 -1 1 2 3"), "polygon 0 has 2 corners"),
    (_base(index="0 1 2 -2"), "index -2 outside"),
    (_base().replace("coordIndex", "coordIndx"), "without coordIndex"),
    (_base().replace("coord Coordinate", "coord USE NOPE nothing"), "USE NOPE of an undefined name"),
    (_base().rstrip()[:-1], "never closed"),
    (_base(extra="}"), "unbalanced"),
    (_base().replace("point [0", "point 0"), "not a multiple of 3"),
    (_base().replace("]", "", 1), "never closed"),
    ("#VRML V2.0 utf8\nShape { geometry Box { size 1 1 1 } }\n", "no IndexedFaceSet"),
    ("#VRML V1.0 ascii\nSeparator { }\n", "VRML 1.0 is not supported"),
    (_base(index=""), "no polygons"),
    (_base(point="0 0 0 1 0 0 0 1 0 nan 1 0"), "non-finite"),
])
def test_malformed_files_raise_one_line(tmp_path, text, message):
    path = tmp_path / "bad.wrl"
    path.write_text(text)
    with pytest.raises(InputFileError) as info:
        read_vrml(path)
    assert message in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_error_names_the_line(tmp_path):
    path = tmp_path / "bad.wrl"
    path.write_text(_base(index="0 1\n 2 -1 0 1 9 -1"))
    with pytest.raises(InputFileError, match="line 3: coordIndex: index 9"):
        read_vrml(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        read_vrml(tmp_path / "none.wrl")


def test_large_file_is_parsed_vectorised(tmp_path):
    rng = np.random.default_rng(0)
    v = np.round(rng.normal(size=(3000, 3)) * 50, 4)
    f = rng.integers(0, 3000, (6000, 3))
    points = ",\n".join(f"{a} {b} {c}" for a, b, c in v)
    index = "\n".join(f"{a}, {b}, {c}, -1," for a, b, c in f)
    path = tmp_path / "big.wrl"
    path.write_text(_base(point=points, index=index))
    mesh = read_vrml(path)
    np.testing.assert_allclose(mesh.vertices, v)
    np.testing.assert_array_equal(mesh.faces, f)
