"""Join the shard files of one ``facebench synth generate --shard K/N`` run into one dataset file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from facebench.datasets.dataset_file import DatasetWriter, FaceDataset
from facebench.errors import FacebenchError, InputFileError
from facebench.safe_hdf5 import open_hdf5

__all__ = ["merge_shards"]

#: Attributes in which the shards of one run differ.
_SHARD_ATTRS = ("rows", "shard")


def merge_shards(paths: list[str | Path], out: str | Path, *, overwrite: bool = False,
                 progress: Callable[[int], None] | None = None) -> Path:
    """Join shard files into one dataset file by copying (not a virtual dataset).

    The shards must come from one run: same model digest, seed, settings and split (every
    attribute but ``rows``/``shard`` equal), and their row ranges must tile the split's rows
    ``split_rows`` exactly (disjoint, no gap). Order of ``paths`` does not matter.
    """
    if not paths:
        raise FacebenchError("merge needs at least one shard")
    readers = [FaceDataset(p) for p in paths]
    for reader in readers:
        if reader.attrs.get("generator") != "facebench.datasets.synthetic" or "rows" not in reader.attrs:
            raise InputFileError(reader.path, "not a shard written by 'facebench synth generate'")
    first = readers[0]
    common = {k: v for k, v in first.attrs.items() if k not in _SHARD_ATTRS}
    for reader in readers[1:]:
        other = {k: v for k, v in reader.attrs.items() if k not in _SHARD_ATTRS}
        differing = sorted(k for k in set(common) | set(other) if common.get(k) != other.get(k))
        if differing:
            raise InputFileError(reader.path, f"incompatible with {first.path}: attributes differ: "
                                              f"{', '.join(differing)}")
    readers.sort(key=lambda d: d.attrs["rows"][0])
    lo, hi = first.attrs["split_rows"]
    cursor = lo
    for reader in readers:
        a, b = reader.attrs["rows"]
        if b - a != len(reader):
            raise InputFileError(reader.path, f"holds {len(reader)} rows, its attributes say {b - a}")
        if a != cursor:
            kind = "overlaps the previous shard" if a < cursor else f"leaves rows [{cursor}, {a}) missing"
            raise InputFileError(reader.path, f"rows [{a}, {b}) {kind}")
        cursor = b
    if cursor != hi:
        raise FacebenchError(f"the shards cover rows [{lo}, {cursor}) of [{lo}, {hi}): rows [{cursor}, {hi}) missing")
    attrs = {k: v for k, v in common.items() if k not in ("format", "version", "facebench_version", "image_size")}
    attrs.update(rows=[lo, hi], shard="")
    H, W = first.attrs["image_size"]
    with open_hdf5(first.path) as f:
        n_coefficients = {k: f["coefficients"][k].shape[1] for k in first.coefficient_fields}
        n_vertices = f["vertices"].shape[1]
        extra = {k: (f[k].shape[1:], f[k].dtype) for k in first.extra_fields}
    with DatasetWriter(out, n=hi - lo, height=H, width=W, faces=first.faces,
                       landmark_indices=first.landmark_indices, n_vertices=n_vertices,
                       n_coefficients=n_coefficients, K=first.shared_K, attrs=attrs,
                       overwrite=overwrite, extra_fields=extra) as writer:
        for reader in readers:
            offset = reader.attrs["rows"][0] - lo
            for a in range(0, len(reader), 64):
                batch = reader.rows(a, min(len(reader), a + 64))
                writer.write(offset + a, batch)
                if progress is not None:
                    progress(len(batch["ids"]))
    for reader in readers:
        reader.close()
    return Path(out)

