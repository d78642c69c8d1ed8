"""Tests of ``prepare micc`` on small trees in MICC's real layout.

Scans are the real ICT-FaceKit neutral face (../shared/data/ict-facekit) with its vertices
re-ordered so that Ramon et al.'s real annotated indices (../shared/data/hyperparams-free) point at
the named features (iBUG 40, 43, 34 and the inner-lip midpoint); the vertex just beside each (the
index the other base would read) is made implausible, so the index-base decision is testable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facebench.commands.datasets import datasets
from facebench.datasets.annotations import (
    ANNOTATION_SHA256,
    fetch_annotations,
    load_micc_annotations,
)
from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.micc import decide_index_base, prepare_micc
from facebench.errors import FacebenchError, InputFileError
from facebench.meshio import read_obj

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FACEX = SHARED / "ict-facekit" / "FaceXModel"
ANNOTATIONS = SHARED / "hyperparams-free"
FACE_VERTICES = 11248  # ICT's face + head region

pytestmark = pytest.mark.skipif(
    not (FACEX / "generic_neutral_mesh.obj").is_file() or not (ANNOTATIONS / "data" / "micc").is_dir(),
    reason=f"shared ICT-FaceKit mesh or Ramon et al.'s annotations not found under {SHARED}",
)


def frame_colour(index: int) -> tuple[int, int, int]:
    return ((index * 53 + 20) % 256, (index * 101 + 90) % 256, (index * 29 + 160) % 256)


# ------------------------------------------------------------------------------ ICT "scans"
class IctFace:
    """The ICT neutral face region in mm, its polygons and the 4 MICC features."""

    def __init__(self):
        mesh = read_obj(FACEX / "generic_neutral_mesh.obj", texcoords=False)
        self.vertices = mesh.vertices[:FACE_VERTICES] * 10.0  # cm -> mm
        self.polygons = []
        start = 0
        for size in mesh.polygon_sizes:
            tris = mesh.faces[start:start + size - 2]
            start += size - 2
            corners = [int(tris[0][0]), int(tris[0][1]), *(int(t[2]) for t in tris)]
            if max(corners) < FACE_VERTICES:
                self.polygons.append(corners)
        self.fanned = np.array([(p[0], p[i], p[i + 1]) for p in self.polygons for i in range(1, len(p) - 1)])
        landmarks = np.array(json.loads((FACEX / "vertex_indices.json").read_text())["idx_to_landmark_verts"])
        lips = (self.vertices[landmarks[62]] + self.vertices[landmarks[66]]) / 2
        lips_vertex = int(np.argmin(np.linalg.norm(self.vertices - lips, axis=1)))
        # right eye inner corner (iBUG 40), left (43), subnasale (34), inner-lip midpoint
        self.features = np.array([landmarks[39], landmarks[42], landmarks[33], lips_vertex])


@pytest.fixture(scope="module")
def ict() -> IctFace:
    return IctFace()


def build_scan(ict: IctFace, raw, base: int, seed: int = 0):
    """A scan whose vertex ``raw - base`` is each feature; ``raw - (1 - base)`` is implausible."""
    rng = np.random.default_rng(seed)
    raw = np.asarray(raw)
    n = max(int(raw.max()) + 2, FACE_VERTICES + 16)
    order = np.full(n, -1)
    at_feature, wrong = raw - base, raw - (1 - base)
    order[at_feature] = ict.features
    others = np.setdiff1d(np.arange(FACE_VERTICES), ict.features)
    free = np.setdiff1d(np.arange(n), np.concatenate([at_feature, wrong]))
    placed = rng.choice(free, len(others), replace=False)
    order[placed] = others
    inverse = np.empty(FACE_VERTICES, np.int64)
    inverse[ict.features], inverse[others] = at_feature, placed
    fillers = order < 0
    order[fillers] = rng.integers(0, FACE_VERTICES, int(fillers.sum()))  # unreferenced copies
    order[wrong[:2]] = ict.features[0]  # the other base reads two coincident "lacrimal" points
    polygons = [[int(inverse[c]) for c in poly] for poly in ict.polygons]
    return ict.vertices[order], polygons


def write_wrl(path: Path, vertices, polygons) -> None:
    lines = ["#VRML V2.0 utf8", "# test scan: quads and triangles, -1 terminated", "Transform { children [",
             "Shape {", "  appearance Appearance { texture ImageTexture { url \"scan.bmp\" } }",
             "  geometry IndexedFaceSet {", "    creaseAngle 0.5", "    coord Coordinate { point ["]
    lines += [f"      {x:.5f} {y:.5f} {z:.5f}," for x, y, z in vertices]
    lines += ["    ] }", "    texCoord TextureCoordinate { point ["]
    lines += [f"      {u:.3f} {u:.3f}," for u in np.linspace(0, 1, len(vertices))]
    lines += ["    ] }", "    coordIndex ["]
    lines += ["      " + " ".join(map(str, poly)) + " -1," for poly in polygons]
    lines += ["    ]", "    texCoordIndex ["]
    lines += ["      " + " ".join(map(str, poly)) + " -1," for poly in polygons]
    lines += ["    ]", "  }", "}", "] }"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_obj(path: Path, vertices, polygons) -> None:
    lines = [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in vertices]
    lines += ["f " + " ".join(str(c + 1) for c in poly) for poly in polygons]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def jpeg(index: int, size=(40, 30)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, frame_colour(index)).save(out, "JPEG", quality=95)
    return out.getvalue()


def write_mjpeg(path: Path, n_frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(jpeg(i) for i in range(n_frames)))


def write_frames(folder: Path, indices) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in indices:
        (folder / f"frame{index + 1:04d}.jpg").write_bytes(jpeg(index))


#: The real annotations of the subjects used here (cases/subject_N/correspondences.txt), written out so
#: that the parser is tested too.
RAW = {1: (24302, 24086, 9561, 12514), 9: (39949, 40345, 9308, 40357), 13: (17665, 12906, 8303, 33231),
       31: (24005, 18861, 2400, 3170), 46: (29422, 26916, 21592, 10337)}
#: 0-based frame index of the authors' frameK.jpg (annotations.json): K - 1 (ffmpeg numbers from 1).
FRAME = {1: 889, 4: 447, 9: 140, 13: 0, 31: 369, 46: 327}


def test_annotations_parse_as_written():
    annotations = load_micc_annotations(ANNOTATIONS)
    assert len(annotations.cases) == 52 and set(annotations.skipped) == {30}
    for number, raw in RAW.items():
        assert annotations.cases[number].landmark_indices == raw
    for number, frame in FRAME.items():
        assert annotations.cases[number].frame_index == frame
    assert annotations.cases[1].frame_number == 890 and not annotations.warnings


def good_tree(root: Path, ict: IctFace, base: int, subjects=(1, 9, 13)) -> dict:
    """subject_01: .wrl in frontal1/ + frame folder; subject_09: obj/ + .mjpg; subject_13: vrml/ + .mjpeg."""
    scans = {}
    for number in subjects:
        vertices, polygons = build_scan(ict, RAW[number], base, seed=number)
        subject = root / f"subject_{number:02d}"
        frame = FRAME[number]
        if number == 9:
            write_obj(subject / "Model" / "frontal1" / "obj" / "110920150452.obj", vertices, polygons)
            write_mjpeg(subject / "Video" / "Indoor-Cooperative.mjpg", frame + 3)
        elif number == 13:
            write_wrl(subject / "Model" / "frontal1" / "vrml" / "scan.wrl", vertices, polygons)
            write_mjpeg(subject / "Video" / "Indoor-Cooperative.mjpeg", frame + 2)
        else:
            write_wrl(subject / "Model" / "frontal1" / "scan.wrl", vertices, polygons)
            write_frames(subject / "Video" / "Indoor-Cooperative", [frame - 1, frame, frame + 1])
        (subject / "Model" / "frontal2").mkdir(parents=True, exist_ok=True)
        scans[number] = (vertices, polygons)
    return scans


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("base", [0, 1])
def test_landmarks_land_on_named_features(tmp_path, ict, base):
    good_tree(tmp_path / "micc", ict, base)
    calls = []
    report = prepare_micc(tmp_path / "micc", tmp_path / "micc.h5", annotations=ANNOTATIONS, image_size=16,
                          subjects=[1, 9, 13, 30], progress=lambda *a: calls.append(a))
    assert report.written and report.prepared == ["subject_01", "subject_09", "subject_13"]
    assert list(report.skipped) == ["subject_30"]
    assert "malformed" in report.skipped["subject_30"] and "a number (950)" in report.skipped["subject_30"]
    assert report.index_base["base"] == base and report.index_base["rule"] == "geometry"
    assert report.index_base["geometry_passes"] == {str(base): 3, str(1 - base): 0}
    assert not [w for w in report.warnings if "index base" in w]
    assert calls[-1][:2] == (4, 4)

    expected = ict.vertices[ict.features]
    ds = FaceDataset(tmp_path / "micc.h5")
    assert ds.is_scan_dataset and ds.kind == "micc"
    assert list(ds.landmark_names) == ["right_eye_lacrimal", "left_eye_lacrimal", "nose_base", "lips_central"]
    for i, number in enumerate((1, 9, 13)):
        np.testing.assert_allclose(ds.scan_landmarks(i), expected, atol=1e-3)
        vertices, faces = ds.scan(i)
        assert len(vertices) == max(RAW[number]) + 2
        # the same triangles as ICT's polygons fanned (p0, pi, pi+1), same order and winding
        np.testing.assert_allclose(vertices[faces], ict.vertices[ict.fanned], atol=1e-3)
        image = ds.read("images", i, i + 1)[0]
        np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), frame_colour(FRAME[number]), atol=4)
    preparation = ds.attrs["preparation"]
    preparation = json.loads(preparation) if isinstance(preparation, str) else preparation
    assert preparation["report"]["index_base"]["base"] == base
    assert int(ds.attrs["index_base"]) == base


def test_file_fields_frames_boxes_and_sources(tmp_path, ict):
    import h5py

    good_tree(tmp_path / "micc", ict, 0, subjects=(9, 13))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"subject_09": [10.5, 5.5, 20.5, 15.5]}))
    prepare_micc(tmp_path / "micc", tmp_path / "out.h5", annotations=ANNOTATIONS / "data", image_size=8,
                 subjects=[9, 13], face_boxes=boxes)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["frame_indices"][()], [FRAME[9], FRAME[13]])  # frameK.jpg -> K - 1
        np.testing.assert_allclose(f["face_boxes"][()], [[10.5, 5.5, 20.5, 15.5], [4.5, -0.5, 34.5, 29.5]])
        np.testing.assert_array_equal(f["frame_sizes"][()], [[30, 40], [30, 40]])
        assert [s.decode() if isinstance(s, bytes) else s for s in f["sources"][()]] == [
            "subject_09/Model/frontal1/obj/110920150452.obj", "subject_13/Model/frontal1/vrml/scan.wrl"]
        assert f["scans/subject_13/faces"].shape[0] == sum(len(p) - 2 for p in ict.polygons)


def test_bad_inputs_are_reported_and_the_rest_prepared(tmp_path, ict):
    root = tmp_path / "micc"
    good_tree(root, ict, 0, subjects=(31,))
    # 1: a scan smaller than the annotated indices; 2: no folder; 4: no scan; 9: garbage video;
    # 13: malformed .wrl; 46: the annotated frame beyond the video; 30: malformed annotation
    write_wrl(root / "subject_01" / "Model" / "frontal1" / "s.wrl", ict.vertices, ict.polygons)
    write_frames(root / "subject_01" / "Video" / "Indoor-Cooperative", [FRAME[1]])
    (root / "subject_04" / "Model" / "frontal1").mkdir(parents=True)
    write_mjpeg(root / "subject_04" / "Video" / "Indoor-Cooperative.mjpg", 2)
    write_obj(root / "subject_09" / "Model" / "frontal1" / "obj" / "a.obj", *build_scan(ict, RAW[9], 0))
    (root / "subject_09" / "Video").mkdir(parents=True)
    (root / "subject_09" / "Video" / "Indoor-Cooperative.mjpg").write_bytes(b"\x00garbage" * 100)
    (root / "subject_13" / "Model" / "frontal1").mkdir(parents=True)
    (root / "subject_13" / "Model" / "frontal1" / "s.wrl").write_text(
        "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [0 0 0 1 0] } } }\n")
    write_mjpeg(root / "subject_13" / "Video" / "Indoor-Cooperative.mjpg", 2)
    write_obj(root / "subject_46" / "Model" / "frontal1" / "a.obj", *build_scan(ict, RAW[46], 0))
    write_mjpeg(root / "subject_46" / "Video" / "Indoor-Cooperative.mjpg", 5)

    report = prepare_micc(root, tmp_path / "out.h5", annotations=ANNOTATIONS, image_size=8,
                          subjects=[1, 2, 4, 9, 13, 30, 31, 46])
    assert report.written and report.prepared == ["subject_31"]
    reasons = report.skipped
    assert set(reasons) == {"subject_01", "subject_02", "subject_04", "subject_09", "subject_13", "subject_30",
                            "subject_46"}
    assert "annotation index 24302 is outside the scan" in reasons["subject_01"]
    assert "missing subject folder" in reasons["subject_02"]
    assert "no scan (.wrl or .obj) found" in reasons["subject_04"]
    assert "no JPEG image" in reasons["subject_09"] and "Indoor-Cooperative.mjpg" in reasons["subject_09"]
    assert "s.wrl: line 2:" in reasons["subject_13"] and "not a multiple of 3" in reasons["subject_13"]
    assert f"frame index {FRAME[46]} is beyond the video's 5 frames" in reasons["subject_46"]
    assert len(report.problems) == 7 and all("\n" not in line for line in report.problems)
    assert any("weak evidence" in w for w in report.warnings)  # one subject only: said loudly
    ds = FaceDataset(tmp_path / "out.h5")
    assert list(ds.ids) == ["subject_31"]
    np.testing.assert_allclose(ds.scan_landmarks(0), ict.vertices[ict.features], atol=1e-3)


def test_nothing_usable_leaves_nothing_behind(tmp_path):
    root = tmp_path / "micc"
    (root / "subject_05").mkdir(parents=True)
    out = tmp_path / "out" / "micc.h5"
    report = prepare_micc(root, out, annotations=ANNOTATIONS, subjects=[2, 5, 30])
    assert not report.written and report.prepared == []
    assert set(report.skipped) == {"subject_02", "subject_05", "subject_30"}
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_whole_run_errors(tmp_path):
    with pytest.raises(InputFileError, match="MICC root folder not found"):
        prepare_micc(tmp_path / "none", tmp_path / "o.h5", annotations=ANNOTATIONS)
    with pytest.raises(InputFileError, match="holds neither data/micc"):
        prepare_micc(tmp_path, tmp_path / "o.h5", annotations=tmp_path)
    with pytest.raises(FacebenchError, match="index_base"):
        prepare_micc(tmp_path, tmp_path / "o.h5", annotations=ANNOTATIONS, index_base=2)
    (tmp_path / "o.h5").write_bytes(b"")
    with pytest.raises(InputFileError, match="exists already"):
        prepare_micc(tmp_path, tmp_path / "o.h5", annotations=ANNOTATIONS)


def test_all_annotated_subjects_are_accounted_for(tmp_path):
    report = prepare_micc(tmp_path, tmp_path / "o.h5", annotations=ANNOTATIONS)
    assert len(report.skipped) == 53 and not report.written  # 52 cases without a folder + subject 30
    assert sum("missing subject folder" in r for r in report.skipped.values()) == 52


def test_decide_index_base_rules():
    def ev(range_=None, g0=True, g1=False):
        geometry = {"0": {"passes": g0}, "1": {"passes": g1}}
        return {"n_vertices": 10, "range": range_, "geometry": geometry}

    base, summary, warnings = decide_index_base({f"s{i}": ev() for i in range(5)})
    assert base == 0 and summary["rule"] == "geometry" and not warnings
    base, summary, warnings = decide_index_base({f"s{i}": ev(g0=False, g1=True) for i in range(5)})
    assert base == 1 and not warnings
    base, summary, warnings = decide_index_base({f"s{i}": ev(g0=True, g1=True) for i in range(5)})
    assert base == 0 and "tie" in summary["rule"] and "WEAK EVIDENCE" in warnings[0]
    base, summary, warnings = decide_index_base({"a": ev("1-based", g0=True, g1=False), "b": ev(g0=True)})
    assert base == 1 and summary["rule"] == "range proof" and "prefers 0-based" in warnings[0]
    base, summary, warnings = decide_index_base({"a": ev("1-based"), "b": ev("0-based"), "c": ev()})
    assert base == 0 and any("contradictory" in w for w in warnings)
    base, summary, warnings = decide_index_base({f"s{i}": ev(g0=i < 2, g1=False) for i in range(5)})
    assert base == 0 and any("only 2 of 5" in w for w in warnings)


def test_fetch_checks_pinned_hashes(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(ANNOTATIONS / "data", mirror / "data")
    folder = fetch_annotations(tmp_path / "cache", base_url=mirror.as_uri() + "/")
    assert (folder / "micc" / "annotations.json").is_file()
    assert len(load_micc_annotations(folder).cases) == 52
    assert len([p for p in (tmp_path / "cache").rglob("*") if p.is_file()]) == len(ANNOTATION_SHA256)
    # a tampered upstream file is refused and not kept
    bad = mirror / "data" / "micc" / "cases" / "subject_1" / "correspondences.txt"
    bad.write_text(bad.read_text().replace("24302", "24303"))
    with pytest.raises(InputFileError, match="does not match the pinned"):
        fetch_annotations(tmp_path / "cache2", base_url=mirror.as_uri() + "/")
    assert not (tmp_path / "cache2" / "data" / "micc" / "cases" / "subject_1" / "correspondences.txt").exists()
    # a local copy that differs is used, with a warning
    annotations = load_micc_annotations(mirror)
    assert annotations.cases[1].landmark_indices[0] == 24303
    assert any("differs from the pinned" in w for w in annotations.warnings)


def test_cli_prepare_info_strict_and_failures(tmp_path, ict):
    good_tree(tmp_path / "micc", ict, 0, subjects=(13,))
    out = tmp_path / "micc.h5"
    args = ["prepare", "micc", "--root", str(tmp_path / "micc"), "--out", str(out), "--annotations",
            str(ANNOTATIONS), "--image-size", "8", "--subjects", "13,30"]
    runner = CliRunner()
    result = runner.invoke(datasets, args)
    assert result.exit_code == 0, result.output
    assert "problem: subject_30: not listed in annotations.json" in result.output
    assert "prepared 1, skipped 1" in result.output and f"wrote {out}" in result.output
    again = runner.invoke(datasets, args)
    assert again.exit_code == 2 and "exists already" in again.output
    strict = runner.invoke(datasets, [*args, "--overwrite", "--strict", "--json", str(tmp_path / "r.json")])
    assert strict.exit_code == 2 and "--strict" in strict.output
    assert json.loads((tmp_path / "r.json").read_text())["index_base"]["base"] == 0
    info = runner.invoke(datasets, ["info", str(out)])
    assert info.exit_code == 0, info.output
    assert "kind: micc" in info.output and "samples: 1" in info.output and "skipped subject_30" in info.output
    none = runner.invoke(datasets, [*args[:-1], "30", "--out", str(tmp_path / "none.h5")])
    assert none.exit_code == 2 and "no usable subject" in none.output and not (tmp_path / "none.h5").exists()
    bad = runner.invoke(datasets, [*args[:-2], "--subjects", "x", "--overwrite"])
    assert bad.exit_code == 2 and bad.output.startswith("error:")


def test_prepared_micc_scores_its_own_scans_as_zero_under_both_presets(tmp_path, ict):
    """The whole path a researcher takes: prepare -> template (each scan under a random similarity)
    -> score, under micc-ramon2019 and micc-95mm: ≈ 0 mm; noise of 1 mm scores clearly more."""
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score
    from facebench.benchmark.templates import write_template

    good_tree(tmp_path / "micc", ict, 0)
    report = prepare_micc(tmp_path / "micc", tmp_path / "micc.h5", annotations=ANNOTATIONS, image_size=16,
                          subjects=[1, 9, 13])
    assert report.written
    write_template(tmp_path / "micc.h5", "gt", tmp_path / "gt")
    write_template(tmp_path / "micc.h5", "noisy", tmp_path / "noisy", noise_mm=1.0)
    for name in ("micc-ramon2019", "micc-95mm"):
        result = score(tmp_path / "micc.h5", tmp_path / "gt", get_protocol(name))
        assert result.summary["n_scored"] == 3, result.per_sample["error"].tolist()
        assert result.summary["protocol_id"] == get_protocol(name).id
        assert result.per_sample["shape_mm"].max() < 0.05
        noisy = score(tmp_path / "micc.h5", tmp_path / "noisy", get_protocol(name))
        assert noisy.per_sample["shape_mm"].min() > 0.3
    with pytest.raises(FacebenchError, match="shared topology"):
        write_template(tmp_path / "micc.h5", "mean", tmp_path / "mean")
