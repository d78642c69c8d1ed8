"""The dataset HDF5 format: atomic writer, lazy reader, torch Dataset with DataLoader workers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from facebench.datasets.dataset_file import (
    FORMAT,
    OPTIONAL_FIELDS,
    DatasetWriter,
    FaceDataset,
    TorchFaceDataset,
    dataset_summary,
    histogram,
)
from facebench.errors import InputFileError

N, H, W, V, L = 5, 6, 7, 4, 3


def _batch(start: int, stop: int) -> dict:
    rng = np.random.default_rng(start)
    b = stop - start
    return {
        "ids": [f"s{i}" for i in range(start, stop)],
        "images": rng.integers(0, 256, (b, H, W, 3), dtype=np.uint8),
        "masks": rng.random((b, H, W)) > 0.5,
        "reflectance_images": rng.integers(0, 256, (b, H, W, 3), dtype=np.uint8),
        "vertices": rng.normal(size=(b, V, 3)).astype(np.float32),
        "landmarks_2d": rng.normal(size=(b, L, 2)).astype(np.float32),
        "q": np.tile([1.0, 0, 0, 0], (b, 1)),
        "t": rng.normal(size=(b, 3)),
        "sh": rng.normal(size=(b, 9, 3)).astype(np.float32),
        "yaw": np.linspace(-80, 80, b) if b > 1 else np.zeros(1),
        "pitch": np.zeros(b),
        "roll": np.zeros(b),
        "subject": np.arange(start, stop),
        "mirror_of": np.full(b, -1),
        "coefficients": {"identity": rng.normal(size=(b, 2)).astype(np.float32)},
    }


def _write(path, **kwargs):
    K = np.array([[10.0, 0, 3], [0, 10, 2.5], [0, 0, 1]])
    with DatasetWriter(path, n=N, height=H, width=W, faces=np.array([[0, 1, 2], [0, 2, 3]]),
                       landmark_indices=np.array([0, 1, -1]), n_vertices=V, n_coefficients={"identity": 2},
                       K=K, attrs={"seed": 3, "settings": {"a": [1, 2]}}, extra_fields=OPTIONAL_FIELDS,
                       **kwargs) as writer:
        writer.write(0, _batch(0, 2))
        writer.write(2, _batch(2, 5))
    return K


def test_round_trip_and_lazy_rows(tmp_path):
    path = tmp_path / "d.h5"
    K = _write(path)
    ds = FaceDataset(path)
    assert len(ds) == N and ds.attrs["format"] == FORMAT
    assert ds.attrs["settings"] == {"a": [1, 2]} and ds.attrs["seed"] == 3 and ds.attrs["image_size"] == [H, W]
    expected = _batch(2, 5)
    sample = ds[3]
    assert sample["id"] == "s3"
    np.testing.assert_array_equal(sample["images"], expected["images"][1])
    np.testing.assert_array_equal(sample["masks"], expected["masks"][1])
    np.testing.assert_array_equal(sample["vertices"], expected["vertices"][1])
    np.testing.assert_array_equal(sample["K"], K)
    assert sample["subject"] == 3 and sample["mirror_of"] == -1
    np.testing.assert_array_equal(sample["coefficients"]["identity"], expected["coefficients"]["identity"][1])
    rows = ds.rows(1, 4)
    assert rows["ids"] == ["s1", "s2", "s3"]
    np.testing.assert_array_equal(rows["t"][1:], expected["t"][:2])
    assert ds[-1]["id"] == "s4"
    with pytest.raises(IndexError):
        ds[N]
    assert ds.ids == [f"s{i}" for i in range(N)]


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "d.h5"
    with pytest.raises(ZeroDivisionError):
        with DatasetWriter(path, n=2, height=H, width=W, faces=np.zeros((1, 3)), landmark_indices=np.zeros(L),
                           n_vertices=V, n_coefficients={}) as writer:
            writer.write(0, {"ids": ["a"], "yaw": np.zeros(1)})
            raise ZeroDivisionError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="never written"):
        with DatasetWriter(path, n=2, height=H, width=W, faces=np.zeros((1, 3)), landmark_indices=np.zeros(L),
                           n_vertices=V, n_coefficients={}) as writer:
            writer.write(0, {"ids": ["a"], "yaw": np.zeros(1)})
    assert list(tmp_path.iterdir()) == []
    _write(path)
    with pytest.raises(InputFileError, match="exists already"):
        _write(path)
    _write(path, overwrite=True)


def test_reader_rejects_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        FaceDataset(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(InputFileError, match="not a facebench dataset"):
        FaceDataset(other)
    good = tmp_path / "d.h5"
    _write(good)
    truncated = tmp_path / "t.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(InputFileError, match=str(truncated)):
        FaceDataset(truncated)
    with h5py.File(good, "a") as f:
        del f["landmarks_2d"]
    with pytest.raises(InputFileError, match="lacks landmarks_2d"):
        FaceDataset(good)


def test_torch_dataset_with_two_dataloader_workers(tmp_path):
    path = tmp_path / "d.h5"
    _write(path)
    dataset = TorchFaceDataset(path, with_reflectance_image=True)
    direct = [dataset[i] for i in range(N)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (N, 3, H, W) and images.dtype == torch.float32
    torch.testing.assert_close(images, torch.stack([d["image"] for d in direct]), rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([b["subject"] for b in batches]), torch.arange(N))
    assert float(images.max()) <= 1.0
    expected = torch.from_numpy(_batch(0, 2)["images"][1]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(direct[1]["image"], expected, rtol=0, atol=0)


def test_summary_histograms(tmp_path):
    path = tmp_path / "d.h5"
    _write(path)
    summary = dataset_summary(path)
    assert summary["samples"] == N and summary["mirrors"] == 0 and summary["subjects"] == N
    # yaw of rows: [-80, 80] (rows 0-1) and [-80, 0, 80] (rows 2-4) -> |yaw| 80 x4, 0 x1
    counts = {row["low"]: row["count"] for row in summary["histograms"]["|yaw|"]}
    assert counts == {0.0: 1, 15.0: 0, 30.0: 0, 45.0: 0, 60.0: 4}
    assert histogram([0, 15, 89.9, 90], [0, 15, 90]) == [
        {"low": 0.0, "high": 15.0, "count": 1}, {"low": 15.0, "high": 90.0, "count": 3}]
