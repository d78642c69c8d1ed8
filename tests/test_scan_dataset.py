"""The scan-dataset file: writer round trip, checks, atomicity, and FaceDataset's scan accessors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from facebench.datasets.dataset_file import FaceDataset
from facebench.datasets.scan_dataset import ScanDatasetWriter, ScanSample
from facebench.errors import InputFileError

NAMES = ["right_eye_lacrimal", "left_eye_lacrimal", "nose_base", "lips_central"]


def _sample(rng, sample_id: str, n_vertices: int, indices=(0, 1, 2, 3)) -> ScanSample:
    vertices = rng.normal(size=(n_vertices, 3)) * 50
    faces = np.stack([np.arange(n_vertices - 2), np.arange(1, n_vertices - 1), np.arange(2, n_vertices)], axis=1)
    return ScanSample(id=sample_id, image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                      face_box=np.array([1.0, 2.0, 33.0, 34.0]), frame_size=(48, 64), vertices=vertices,
                      faces=faces, landmark_indices=np.array(indices), source=f"{sample_id}/scan.wrl",
                      frame_index=7)


def _write(path, samples, **kwargs):
    with ScanDatasetWriter(path, kind="micc", landmark_names=NAMES, image_size=16, landmark_set="micc4",
                           **kwargs) as writer:
        for sample in samples:
            writer.add(sample)
    return path


def test_round_trip_varying_topology(tmp_path):
    rng = np.random.default_rng(0)
    samples = [_sample(rng, "subject_1", 30, (5, 6, 7, -1)), _sample(rng, "subject_2", 41, (40, 0, 1, 2))]
    path = _write(tmp_path / "micc.h5", samples, attrs={"preparation": {"skipped": {"subject_30": "malformed"}}})
    ds = FaceDataset(path)
    assert ds.is_scan_dataset and ds.kind == "micc"
    assert len(ds) == 2 and ds.ids == ["subject_1", "subject_2"]
    assert ds.landmark_names == NAMES
    assert ds.attrs["preparation"] == {"skipped": {"subject_30": "malformed"}}
    assert ds.attrs["image_encoding"] == "srgb"
    for i, sample in enumerate(samples):
        vertices, faces = ds.scan(i)
        assert vertices.shape == sample.vertices.shape and faces.dtype == np.int64
        np.testing.assert_allclose(vertices, sample.vertices.astype(np.float32))
        np.testing.assert_array_equal(faces, sample.faces)
        landmarks = ds.scan_landmarks(i)
        for k, index in enumerate(sample.landmark_indices):
            if index < 0:
                assert np.isnan(landmarks[k]).all()
            else:
                np.testing.assert_allclose(landmarks[k], vertices[index])
        np.testing.assert_array_equal(ds.read("images", i, i + 1)[0], sample.image)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["frame_indices"][()], [7, 7])
        np.testing.assert_array_equal(f["landmark_indices"][()], [-1, -1, -1, -1])


def test_synthetic_files_answer_the_same_accessors(tmp_path):
    from facebench.datasets.generator import GeneratorSettings, generate

    path = tmp_path / "syn.h5"
    generate(GeneratorSettings(n=2, size=32, seed=3), path)
    ds = FaceDataset(path)
    assert not ds.is_scan_dataset and ds.kind == "synthetic"
    vertices, faces = ds.scan(1)
    np.testing.assert_array_equal(vertices, ds.read("vertices", 1, 2)[0].astype(np.float64))
    landmarks = ds.scan_landmarks(1)
    defined = ds.landmark_indices >= 0
    np.testing.assert_array_equal(landmarks[defined], vertices[ds.landmark_indices[defined]])


@pytest.mark.parametrize("change, message", [
    (dict(landmark_indices=np.array([0, 1, 2, 99])), "landmark indices"),
    (dict(faces=np.array([[0, 1, 50]])), "faces index"),
    (dict(image=np.zeros((8, 8, 3), np.uint8)), "image must be"),
])
def test_bad_samples_are_refused_and_nothing_is_left(tmp_path, change, message):
    rng = np.random.default_rng(1)
    sample = _sample(rng, "subject_1", 20)
    for key, value in change.items():
        setattr(sample, key, value)
    with pytest.raises(ValueError, match=message):
        _write(tmp_path / "bad.h5", [sample])
    assert list(tmp_path.iterdir()) == []


def test_nan_vertices_and_duplicate_ids_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    bad = _sample(rng, "a", 10)
    bad.vertices[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        _write(tmp_path / "nan.h5", [bad])
    with pytest.raises(ValueError, match="duplicate"):
        _write(tmp_path / "dup.h5", [_sample(rng, "a", 10), _sample(rng, "a", 12)])
    assert list(tmp_path.iterdir()) == []


def test_empty_dataset_is_an_error_not_a_file(tmp_path):
    with pytest.raises(InputFileError, match="no usable sample"):
        _write(tmp_path / "empty.h5", [])
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "keep.h5"
    path.write_bytes(b"precious")
    with pytest.raises(InputFileError, match="exists"):
        _write(path, [_sample(np.random.default_rng(3), "a", 10)])
    assert path.read_bytes() == b"precious"


def test_a_scan_file_missing_fields_is_refused(tmp_path):
    path = _write(tmp_path / "micc.h5", [_sample(np.random.default_rng(4), "a", 10)])
    with h5py.File(path, "a") as f:
        del f["scan_landmarks"]
    with pytest.raises(InputFileError, match="scan_landmarks"):
        FaceDataset(path)
