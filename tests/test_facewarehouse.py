"""Tests of ``prepare facewarehouse`` on small trees in FaceWarehouse's real layout.

The "template" is the real ICT-FaceKit neutral face (../shared/data/ict-facekit), in its own
units (cm: not mm, like FaceWarehouse), written as quads, with its vertices re-ordered so that
Ramon et al.'s real 6 template ids (../shared/data/hyperparams-free) are the named features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from facebench.commands.datasets import datasets
from facebench.datasets.annotations import load_facewarehouse_annotations
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.facewarehouse import (
    TRAGION_WIDTH_MM,
    land_to_pixels,
    prepare_facewarehouse,
    read_land,
)
from facebench.errors import FacebenchError, InputFileError
from facebench.geometry import vertex_normals
from facebench.meshio import read_obj

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FACEX = SHARED / "ict-facekit" / "FaceXModel"
ANNOTATIONS = SHARED / "hyperparams-free"
FACE_VERTICES = 11248

pytestmark = pytest.mark.skipif(
    not (FACEX / "generic_neutral_mesh.obj").is_file() or not (ANNOTATIONS / "data" / "facewarehouse").is_dir(),
    reason=f"shared ICT-FaceKit mesh or Ramon et al.'s annotations not found under {SHARED}",
)

#: Photo size (width, height) and the 2D landmarks of the test photos (pixels).
PHOTO = (64, 48)
LAND_PX = np.array([[20.0, 10.0], [44.0, 12.0], [31.0, 22.0], [24.0, 33.0], [40.0, 33.0]])


class Template:
    """ICT's face region in cm, re-ordered so the 6 FW template ids hold the named features."""

    def __init__(self):
        mesh = read_obj(FACEX / "generic_neutral_mesh.obj", texcoords=False)
        cm = mesh.vertices[:FACE_VERTICES]
        landmarks = np.array(json.loads((FACEX / "vertex_indices.json").read_text())["idx_to_landmark_verts"])
        lips = int(np.argmin(np.linalg.norm(cm - (cm[landmarks[62]] + cm[landmarks[66]]) / 2, axis=1)))
        right_ear = int(np.argmin(np.linalg.norm(cm - (cm[landmarks[0]] + [0, 0, -1.0]), axis=1)))
        left_ear = int(np.argmin(np.linalg.norm(cm - cm[right_ear] * [-1, 1, 1], axis=1)))
        features = np.array([landmarks[39], landmarks[42], landmarks[33], lips, right_ear, left_ear])
        ids = np.array(load_facewarehouse_annotations(ANNOTATIONS).indices)
        rng = np.random.default_rng(5)
        order = np.full(FACE_VERTICES, -1)
        order[ids] = features
        others = np.setdiff1d(np.arange(FACE_VERTICES), features)
        free = np.setdiff1d(np.arange(FACE_VERTICES), ids)
        order[rng.permutation(free)] = others
        inverse = np.argsort(order)
        self.cm = cm[order]
        self.ids = ids
        self.polygons = []
        start = 0
        for size in mesh.polygon_sizes:
            tris = mesh.faces[start:start + size - 2]
            start += size - 2
            corners = [int(tris[0][0]), int(tris[0][1]), *(int(t[2]) for t in tris)]
            if max(corners) < FACE_VERTICES:
                self.polygons.append([int(inverse[c]) for c in corners])
        self.fanned = np.array([(p[0], p[i], p[i + 1]) for p in self.polygons for i in range(1, len(p) - 1)])
        self.nose_tip = int(inverse[landmarks[30]])


@pytest.fixture(scope="module")
def template() -> Template:
    return Template()


def write_tester(root: Path, k: int, template: Template, scale: float = 1.0, *, land=True, photo=True,
                 n_vertices=None) -> Path:
    pose = root / f"Tester_{k}" / "TrainingPose"
    pose.mkdir(parents=True)
    vertices = template.cm[:n_vertices] * scale
    polygons = [p for p in template.polygons if n_vertices is None or max(p) < n_vertices]
    lines = ["# FaceWarehouse-like template", *(f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices),
             "vt 0.5 0.5", *("f " + " ".join(f"{c + 1}/1" for c in p) for p in polygons)]
    (pose / "pose_0.obj").write_text("\n".join(lines) + "\n")
    if photo:
        image = np.full((PHOTO[1], PHOTO[0], 3), 60, np.uint8)
        u, v = LAND_PX[0].astype(int)
        image[v, u] = 255  # a bright dot under landmark 0
        Image.fromarray(image).save(pose / "pose_0.png")
    if land:
        x = (LAND_PX[:, 0] + 0.5) / PHOTO[0]
        y = 1.0 - (LAND_PX[:, 1] + 0.5) / PHOTO[1]  # normalised, origin bottom-left
        (pose / "pose_0.land").write_text(f"{len(x)}\n" + "".join(f"{a:.6f} {b:.6f}\n" for a, b in zip(x, y)))
    return pose


def test_land_y_flip_to_pixels(tmp_path):
    path = tmp_path / "a.land"
    path.write_text("2\n0.0546875 0.8854166667\n1 0\n")  # pixel (3, 5) of a 64x48 photo; the bottom-right corner
    xy = read_land(path)
    np.testing.assert_allclose(land_to_pixels(xy, 48, 64), [[3.0, 5.0], [63.5, 47.5]])


@pytest.mark.parametrize("text, message", [
    ("3\n0.1 0.2\n0.3 0.4\n", "count line says 3 landmarks, the file has 2"),
    ("x\n0.1 0.2\n", "first line must be the landmark count"),
    ("1\n0.1 y\n", "non-numeric"),
    ("1\n0.1 0.2 0.3\n", "'x y'"),
    ("1\nnan 0.2\n", "finite"),
])
def test_bad_land_files(tmp_path, text, message):
    path = tmp_path / "b.land"
    path.write_text(text)
    with pytest.raises(InputFileError, match=message):
        read_land(path)


def test_prepare_units_landmarks_quads_and_crop(tmp_path, template):
    root = tmp_path / "fw"
    write_tester(root, 1, template)
    write_tester(root, 2, template, scale=1.1)
    report = prepare_facewarehouse(root, tmp_path / "fw.h5", annotations=ANNOTATIONS, image_size=24)
    assert report.written and report.prepared == ["Tester_1", "Tester_2"] and not report.skipped
    width_cm = np.linalg.norm(template.cm[template.ids[5]] - template.cm[template.ids[4]])
    expected_factor = TRAGION_WIDTH_MM / (width_cm * 1.05)  # mean over the two testers
    assert report.mm_per_unit == pytest.approx(expected_factor, rel=1e-9)
    assert report.index_base["geometry_passes"] == {"0": 2, "1": 0}

    ds = FaceDataset(tmp_path / "fw.h5")
    assert ds.kind == "facewarehouse" and float(ds.attrs["mm_per_unit"]) == pytest.approx(expected_factor)
    np.testing.assert_array_equal(ds.landmark_indices, template.ids)
    widths = [np.linalg.norm(ds.scan_landmarks(i)[5] - ds.scan_landmarks(i)[4]) for i in range(2)]
    assert np.mean(widths) == pytest.approx(TRAGION_WIDTH_MM, rel=1e-5)
    vertices, faces = ds.scan(0)
    np.testing.assert_array_equal(faces, template.fanned)  # quads -> (a,b,c), (a,c,d), file order
    assert vertex_normals(vertices, faces)[template.nose_tip][2] > 0.9  # outward: the winding is kept
    np.testing.assert_allclose(ds.scan_landmarks(0), template.cm[template.ids] * expected_factor, rtol=1e-5)

    import h5py

    with h5py.File(tmp_path / "fw.h5", "r") as f:
        lm = f["landmarks_2d"][0]
        image = f["images"][0].astype(float).sum(axis=2)
        box = f["face_boxes"][0]
        assert f["frame_indices"][0] == -1 and tuple(f["frame_sizes"][0]) == (PHOTO[1], PHOTO[0])
    # box: landmark bbox (20..44 x 10..33) centred, side 1.4 x 24
    np.testing.assert_allclose(box, [32 - 16.8, 21.5 - 16.8, 32 + 16.8, 21.5 + 16.8], atol=1e-4)
    peak = np.unravel_index(np.argmax(image), image.shape)  # (row, col) of the bright dot in the crop
    assert abs(peak[1] - lm[0][0]) <= 1.0 and abs(peak[0] - lm[0][1]) <= 1.0
    np.testing.assert_allclose(lm[0], (LAND_PX[0] - box[:2]) * 24 / 33.6 - 0.5, atol=1e-4)


def test_given_mm_per_unit_and_bad_testers(tmp_path, template):
    root = tmp_path / "fw"
    write_tester(root, 1, template)
    write_tester(root, 3, template, land=False)
    write_tester(root, 4, template, n_vertices=9000)
    pose = write_tester(root, 5, template)
    (pose / "pose_0.png").write_bytes(b"not a png")
    (root / "Tester_6").mkdir()
    (root / "Tester_7" / "TrainingPose").mkdir(parents=True)
    (root / "Tester_7" / "TrainingPose" / "pose_0.obj").write_text("v 0 0 0\nf 1 2 3\n")
    pose = write_tester(root, 9, template)
    text = (pose / "pose_0.obj").read_text()
    first = text.index("\nv ") + 1
    (pose / "pose_0.obj").write_text(text[:first] + "v nan 0 0\n" + text[text.index("\n", first) + 1:])
    report = prepare_facewarehouse(root, tmp_path / "fw.h5", annotations=ANNOTATIONS / "data", image_size=8,
                                   mm_per_unit=10, testers=[1, 3, 4, 5, 6, 7, 8, 9])
    assert report.prepared == ["Tester_1"] and report.mm_per_unit == 10.0
    reasons = report.skipped
    assert "pose_0.land: no such landmark file" in reasons["Tester_3"]
    assert "annotation vertex id 10821 is outside the mesh (9000 vertices)" in reasons["Tester_4"]
    assert "cannot decode image" in reasons["Tester_5"]
    assert "no TrainingPose folder" in reasons["Tester_6"]
    assert "pose_0.obj" in reasons["Tester_7"] and "out of range" in reasons["Tester_7"]
    assert "missing tester folder" in reasons["Tester_8"]
    assert "line 2: non-finite vertex value" in reasons["Tester_9"]
    assert len(report.problems) == 7
    ds = FaceDataset(tmp_path / "fw.h5")
    np.testing.assert_allclose(ds.scan_landmarks(0), template.cm[template.ids] * 10, rtol=1e-6)


def test_nothing_usable_and_bad_factor(tmp_path, template):
    root = tmp_path / "fw"
    write_tester(root, 1, template, land=False)
    out = tmp_path / "out" / "fw.h5"
    report = prepare_facewarehouse(root, out, annotations=ANNOTATIONS)
    assert not report.written and list(report.skipped) == ["Tester_1"]
    assert not out.exists() and (not out.parent.exists() or not list(out.parent.iterdir()))
    write_tester(root, 2, template)
    with pytest.raises(FacebenchError, match="mm_per_unit"):
        prepare_facewarehouse(root, out, annotations=ANNOTATIONS, mm_per_unit="abc")
    with pytest.raises(FacebenchError, match="positive"):
        prepare_facewarehouse(root, out, annotations=ANNOTATIONS, mm_per_unit=-1)


def test_cli(tmp_path, template):
    root = tmp_path / "fw"
    write_tester(root, 1, template)
    write_tester(root, 2, template, land=False)
    out = tmp_path / "fw.h5"
    runner = CliRunner()
    result = runner.invoke(datasets, ["prepare", "facewarehouse", "--root", str(root), "--out", str(out),
                                      "--annotations", str(ANNOTATIONS), "--image-size", "8"])
    assert result.exit_code == 0, result.output
    assert "problem: Tester_2:" in result.output and "mm per unit:" in result.output
    assert "prepared 1, skipped 1" in result.output
    info = runner.invoke(datasets, ["info", str(out)])
    assert info.exit_code == 0 and "kind: facewarehouse" in info.output and "mm_per_unit" in info.output
    strict = runner.invoke(datasets, ["prepare", "facewarehouse", "--root", str(root), "--out", str(out),
                                      "--annotations", str(ANNOTATIONS), "--overwrite", "--strict",
                                      "--mm-per-unit", "10"])
    assert strict.exit_code == 2 and "--strict" in strict.output


def test_prepared_facewarehouse_scores_its_own_scans_as_zero(tmp_path, template):
    """prepare -> template (each scan under a random similarity) -> score under
    facewarehouse-ramon2019: ≈ 0 mm, and the summary records the mm factor."""
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score
    from facebench.benchmark.templates import write_template

    root = tmp_path / "fw"
    for k, scale in ((1, 0.01), (2, 0.011)):
        write_tester(root, k, template, scale)
    report = prepare_facewarehouse(root, tmp_path / "fw.h5", annotations=ANNOTATIONS, image_size=16)
    assert report.written
    write_template(tmp_path / "fw.h5", "gt", tmp_path / "gt")
    result = score(tmp_path / "fw.h5", tmp_path / "gt", get_protocol("facewarehouse-ramon2019"))
    assert result.summary["n_scored"] == 2, result.per_sample["error"].tolist()
    assert result.per_sample["shape_mm"].max() < 0.05
    assert result.summary["dataset"]["mm_per_unit"] == pytest.approx(report.mm_per_unit)
