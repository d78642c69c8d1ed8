"""The submission format: the files researchers hand in, and the constants that name them.

A submission holds, for the ids of one dataset, predicted meshes in the **head frame, mm**, and
optionally camera poses (q, t) mapping head → camera (``x_cam = R(q) x + t``, t in mm). Two
layouts (docs/file-formats.md), both versioned:

**HDF5** (``*.h5`` / ``*.hdf5``): root attrs ``format = "facebench-submission"``, ``version = 1``,
``method`` (a name), and the datasets

==============================  ===================================================================
``ids (N,)`` str                 sample ids of the dataset (any order; every dataset id once)
``vertices (N,V,3)`` float32     predicted shapes, head frame, mm (float64 accepted; float16 warned)
``faces (F,3)`` int              optional: the prediction's triangles; default the dataset's faces
                                 (required for scan datasets, whose scans share no topology)
``landmark_indices (L,)`` int    optional: the dataset's landmark set (iBUG-68 for synthetic files;
                                 ``micc4`` / ``facewarehouse6`` for MICC / FaceWarehouse files, see
                                 ``facebench.landmarks.SCAN_LANDMARK_SETS``; same order) as vertex
                                 indices of the predicted topology; −1 where undefined
``landmarks (N,L,3)`` float      optional: per-sample landmark coordinates, head frame, mm (NaN where
                                 undefined); used instead of ``landmark_indices`` when given, e.g.
                                 when each sample has its own topology
``q (N,4)`` float                optional: unit quaternions (w, x, y, z), head → camera
``t (N,3)`` float                optional: translations, mm (given together with ``q``)
==============================  ===================================================================

**Folder**: one mesh per id, ``<id>.obj`` or ``<id>.ply`` (read by :func:`facebench.meshio.read_mesh`;
meshes may have different topologies), and ``manifest.json``::

    {"format": "facebench-submission", "version": 1, "method": "my-method",
     "landmark_indices": [...],                 # optional, shared by every mesh
     "q": {"<id>": [w, x, y, z], ...},          # optional, per id
     "t": {"<id>": [x, y, z], ...},             # optional, per id (mm)
     "landmarks": {"<id>": [[x, y, z], ...]}}   # optional, per id (mm)

A **zip** of either layout (the ``.h5`` file, or the folder's files at the archive root or in one
top-level folder) is unpacked into a temporary folder only when every member stays inside the root
and the archive's size is bounded (:mod:`facebench.benchmark.submission_zip` lists the rules).

Nothing is ever unpickled: HDF5 is read with h5py, which never unpickles, and only numeric or
string datasets are read (object, variable-length non-string, opaque, compound and reference
dtypes are refused by validation, as are external/soft links and virtual or external storage,
which could make the reader open other files).

Landmarks of a sample, in order of precedence: the ``landmarks`` coordinates; the
``landmark_indices`` applied to the sample's vertices; the dataset's ``landmark_indices`` when the
prediction has the dataset's topology (no ``faces``, or the dataset's, and its vertex count).

The layouts are opened by :mod:`facebench.benchmark.submission_source`, written by
:mod:`facebench.benchmark.submission_writer`, checked by :mod:`facebench.benchmark.validation` and
read by :mod:`facebench.benchmark.submission`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facebench.datasets.dataset_file import FaceDataset

__all__ = ["FORMAT", "VERSION", "MANIFEST_NAME", "H5_SUFFIXES", "FIELDS", "dataset_vertex_count"]

FORMAT = "facebench-submission"
VERSION = 1
MANIFEST_NAME = "manifest.json"
H5_SUFFIXES = (".h5", ".hdf5")
#: The HDF5 datasets a submission may hold (anything else is ignored with a warning).
FIELDS = ("ids", "vertices", "faces", "landmark_indices", "landmarks", "q", "t")


def dataset_vertex_count(dataset: FaceDataset) -> int:
    """Vertices per sample ``V`` of a dataset's ground truth (from the ``vertices`` shape)."""
    return dataset.n_vertices
