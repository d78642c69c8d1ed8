"""Ramon et al.'s evaluation annotations for MICC Florence and FaceWarehouse, and the report of
``facebench datasets prepare``.

Upstream: the repository ``eduardramon/hyperparams-free-3D-losses`` (Apache-2.0) at the pinned
commit :data:`ANNOTATIONS_COMMIT` (Ramon et al.'s code and data).
Files used, each pinned by its sha256 in :data:`ANNOTATION_SHA256`:

- ``data/micc/annotations.json``: ``{"cases": [{"correspondences": "./cases/subject_N/correspondences.txt",
  "frame": "./cases/subject_N/frameK.jpg"}, ...]}``: 52 subjects (1..53 without 30). ``frameK.jpg`` is
  the authors' most frontal frame of the Indoor-Cooperative video, named by
  ``ffmpeg -i video frame%04d.jpg`` whose numbering starts at 1: its **0-based frame index is K - 1**
  (see :mod:`facebench.datasets.video`).
- ``data/micc/cases/subject_N/correspondences.txt``: 4 lines ``<name> <vertex index>`` with names
  ``right_eye_lacrimal``, ``left_eye_lacrimal``, ``nose_base``, ``lips_central`` (indices into the
  subject's frontal scan; whether 0- or 1-based is decided by ``prepare micc``, see
  :mod:`facebench.datasets.micc`). **subject_30's file is malformed** upstream: its first column
  holds numbers (``950``, ``4507``, ``16``, ``53``) where the names should be (its second column
  repeats subject 1's indices), and annotations.json does not list subject 30: it is reported and
  skipped, as the authors did.
- ``data/facewarehouse/vertex_identifiers.txt``: 6 lines ``<name> <vertex id>`` on the shared
  FaceWarehouse template (the 4 MICC names plus ``right_ear_tragus``, ``left_ear_tragus``).

:func:`annotations_folder` finds the ``data/`` folder: a local copy (``--annotations PATH``: the
``data/`` folder itself or a repository root holding it) or the copy fetched into
``cache_dir("annotations", ANNOTATIONS_COMMIT)`` by :func:`fetch_annotations` (downloads checked
against the pinned hashes; a local copy whose hash differs is used but reported).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facebench.cache import cache_dir
from facebench.download import download
from facebench.errors import FacebenchError, InputFileError
from facebench.hashing import file_sha256
from facebench.landmarks import SCAN_LANDMARK_SETS

__all__ = [
    "ANNOTATIONS_REPOSITORY",
    "ANNOTATIONS_COMMIT",
    "ANNOTATIONS_BASE_URL",
    "ANNOTATION_SHA256",
    "MiccCase",
    "MiccAnnotations",
    "FacewarehouseAnnotations",
    "PrepareReport",
    "annotations_folder",
    "fetch_annotations",
    "parse_name_index_file",
    "load_micc_annotations",
    "load_facewarehouse_annotations",
]

ANNOTATIONS_REPOSITORY = "eduardramon/hyperparams-free-3D-losses"
ANNOTATIONS_COMMIT = "228f2a42220362ebc14d7176383872197b410a18"
#: ``<base><path>`` is downloaded for each pinned path (``file://`` mirrors work too).
ANNOTATIONS_BASE_URL = f"https://raw.githubusercontent.com/{ANNOTATIONS_REPOSITORY}/{ANNOTATIONS_COMMIT}/"
MICC_JSON = "data/micc/annotations.json"
FACEWAREHOUSE_IDS = "data/facewarehouse/vertex_identifiers.txt"

#: sha256 of the upstream files at :data:`ANNOTATIONS_COMMIT` (paths relative to the repository root).
ANNOTATION_SHA256: dict[str, str] = {
    "data/micc/annotations.json": "71b83415c7a67a0882637666222dd04d81d37cdbba3c733ef3d6c73b2528af13",
    "data/facewarehouse/vertex_identifiers.txt": "16cc30e66415faeb09cda7418eb823654059951100329c403a66b4fdcf4c3448",
    "data/micc/cases/subject_1/correspondences.txt": "f846e98a7edd0dc92c4743b1810d97301bd79631ec9514114f0bdd8d248e9668",
    "data/micc/cases/subject_2/correspondences.txt": "be384013d236d9a65130a4e50362d9d2a6470a11b257904feb095edd6f624481",
    "data/micc/cases/subject_3/correspondences.txt": "665cca199b470b052369d9aae03eb64d0e4e1de41790c1fa53fd090bb6d99a9b",
    "data/micc/cases/subject_4/correspondences.txt": "4cdc145586ffd5b3f9317e55eacc019f61de415de82a872e6a5f354bb96a65fd",
    "data/micc/cases/subject_5/correspondences.txt": "7844e701578d83e93669d8a31936441ebdd3191309a69c02630bb598952ff1f3",
    "data/micc/cases/subject_6/correspondences.txt": "2bc7731686e1c7f37ee065732ee5ae007ce4a28a90d04b69767e86e45796ecec",
    "data/micc/cases/subject_7/correspondences.txt": "69ba7b732fe881137783053376fd178c8715bcdee55fb4435535539bd0497a81",
    "data/micc/cases/subject_8/correspondences.txt": "0b25ab53f7aaaf41d240c6743511a5b7cd6c269407e1cf69d360d5ac9237c3fa",
    "data/micc/cases/subject_9/correspondences.txt": "a9e44afb91494969e64a348676e156882cddcf966bec3f3d4e29bc41c56a2f9a",
    "data/micc/cases/subject_10/correspondences.txt": "b513453648ba0869dfc8f4927c35e2697fee6fac026c2fb30c57a38dc1793861",
    "data/micc/cases/subject_11/correspondences.txt": "26b388d0f78cd15e7b1599ba64b3e99bb97752764f2c4aec5478efdd0e54ac90",
    "data/micc/cases/subject_12/correspondences.txt": "ddb1b0629ce6b00fb888de94b7dae6fda1002288f559c0dae599426c10ff3f9b",
    "data/micc/cases/subject_13/correspondences.txt": "d7adbde6e09367ecd15ef55e6528aa06deb646ecbb7a41606cdd08278bdcea31",
    "data/micc/cases/subject_14/correspondences.txt": "7642e7215d01d483aae46504d018cf8d670fadf04546a1b11502ed0f94e43684",
    "data/micc/cases/subject_15/correspondences.txt": "dbf053d1765312941dc10120e2a2a0f822766b358a9cfe37a23b80e594121c48",
    "data/micc/cases/subject_16/correspondences.txt": "7511140b8f8ce80fca8e3103e750b81323bcf63b2e3e7744ec9239329a021e97",
    "data/micc/cases/subject_17/correspondences.txt": "eae7abe418c6fd265b955a117ece29d3169c3004e6ff195dc8cedd0daa867f5a",
    "data/micc/cases/subject_18/correspondences.txt": "a60cee648dd87faa0790363d85d3d467a041ebc83357f1d4363050a3e634884c",
    "data/micc/cases/subject_19/correspondences.txt": "a91aaddfa0c9cf90209fd5f5bd408e85d548ccbc4f68e85ae0fe6ad4b0941861",
    "data/micc/cases/subject_20/correspondences.txt": "b6630d2c00cf6e6348d591e6d38487cf8dee236879ece3a031729ee09de33f8c",
    "data/micc/cases/subject_21/correspondences.txt": "1475b5ca3691001398ab427dc25a9b5d8249da528a2dce15973183d127d2b6fc",
    "data/micc/cases/subject_22/correspondences.txt": "0aaa4b0a72729b6afbc6df5688ce092504ea21ddeb105b9b17e54ceec09448da",
    "data/micc/cases/subject_23/correspondences.txt": "6bd46cdc7d0b57f825e04e52dae20294e3fe2ff40f5ed8f2bb344e287e6527dd",
    "data/micc/cases/subject_24/correspondences.txt": "553b3af072b6bf0ff61d4f60dee52db732219c20a5ae211c632c568fc6d3b84e",
    "data/micc/cases/subject_25/correspondences.txt": "aedab58fefb4ec17f2cc882d5290cbf99cba242af14114782f541f948fc3f397",
    "data/micc/cases/subject_26/correspondences.txt": "6d236d7ac6cc810f9824bed38527ef0f9c7e43810691aeccec232311ed6a9106",
    "data/micc/cases/subject_27/correspondences.txt": "5d85299fb2d3cb0db78e9c680dbcebc1ed95384de9a3203ba13035af00233d20",
    "data/micc/cases/subject_28/correspondences.txt": "c20145e575c856c478d6a2845e8ad488ea8150e737f9ff5bfe33617ebf58104d",
    "data/micc/cases/subject_29/correspondences.txt": "61d498c5ea151ae1f79179ae2d33670dac1fc4a4d43a7169e43720209d55e29d",
    "data/micc/cases/subject_30/correspondences.txt": "d34ddfb6dada6d8e01b7fef5044afd90fc3b507e5865d2806037e0b484b63dcb",
    "data/micc/cases/subject_31/correspondences.txt": "af471a4ab9f713b0757a571a870cb1a34dbc24058a2544c002ed142b85dcf146",
    "data/micc/cases/subject_32/correspondences.txt": "3e58fba0b638e6ba812408479586e0ba545864c6c387dc948880d1381d15d364",
    "data/micc/cases/subject_33/correspondences.txt": "ae484e01297df9888181e10aa1d94ef959d5aa49cc85e038ce84c41014d5141d",
    "data/micc/cases/subject_34/correspondences.txt": "27fab5ad7986157cb71781ea20b02e5077c240713ab05199456d385bb582eee4",
    "data/micc/cases/subject_35/correspondences.txt": "fcd11a7007aa3432f97f61184b24476553ba6e7ff96f9678dc495fa115feaedd",
    "data/micc/cases/subject_36/correspondences.txt": "87c76f5b6575b3a5f940956f6c1ccb6c34580b5daf2077907fcb100c67d76a58",
    "data/micc/cases/subject_37/correspondences.txt": "b7d6836fdb55361862366c0a66985107fb96b2071315d629251b0e71d50d66fc",
    "data/micc/cases/subject_38/correspondences.txt": "301ccbfc6c9a41d2e8316a7389949b637d170e67bc09122aa03a71fe4892576c",
    "data/micc/cases/subject_39/correspondences.txt": "5e91bafbc785b040c762a643c9d8491747309643a386869a2bc366b43b69e4d9",
    "data/micc/cases/subject_40/correspondences.txt": "35dbd2b41ec7dd093b9cd716f63e251c004481d8f7a9fe55929ae6fa697df320",
    "data/micc/cases/subject_41/correspondences.txt": "13eeb2d66c7a3e882291470bb8f079b72abc23f26701e1be907b60f70ae45b9b",
    "data/micc/cases/subject_42/correspondences.txt": "383b88706ed6e088050f2a70513aa82d6e8e7c87d1f74c26162af72b216a6686",
    "data/micc/cases/subject_43/correspondences.txt": "a89e6c9bce8a343eda7c97af60e635321188b363e2a79fef47b9bc6e55488721",
    "data/micc/cases/subject_44/correspondences.txt": "aeed47afa22381a4b393ee804a586acd57b071f60cac402ff067290f47019a7b",
    "data/micc/cases/subject_45/correspondences.txt": "33790331eee3fa1133bae593431c750c9f906438f992396411140c04f8fa3231",
    "data/micc/cases/subject_46/correspondences.txt": "48c7c444852c3e9a1ddf684629942b00f06968e057de35b815bd875e797cd043",
    "data/micc/cases/subject_47/correspondences.txt": "2dd05136de617ce7996045c7c25c9d22787e4a96b3d9ac3f2d90d51393df1522",
    "data/micc/cases/subject_48/correspondences.txt": "46a0dabff827a1e91493b21a7df45ef28582e50c3489bd67e0070f4d46691b01",
    "data/micc/cases/subject_49/correspondences.txt": "f533ebbe9fff14167814639496c2013b08e373678157bb152b662e80cc4c1d95",
    "data/micc/cases/subject_50/correspondences.txt": "119ecba3407bfc2ba940be2ea66d5be915ff0b831645aca1c381bc66945821a9",
    "data/micc/cases/subject_51/correspondences.txt": "ab02b6fb7a8844490e6158321381ee070a6e2c81427dd2c2d0c3a11e0af85919",
    "data/micc/cases/subject_52/correspondences.txt": "610c051b09ca11cd7a2dd04bdaa0bd9e672a5f22b1040dcab45fcfdbe3871588",
    "data/micc/cases/subject_53/correspondences.txt": "bdaed7e98e8d240e2947df6dd21e32c97d734f3b670613421bbcd2efa580922b",
}

_FRAME_NAME = re.compile(r"frame0*(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
_SUBJECT_DIR = re.compile(r"subject_0*(\d+)$")


# ------------------------------------------------------------------------------ records
@dataclasses.dataclass(frozen=True)
class MiccCase:
    """One annotated MICC subject.

    Attributes:
        subject: subject number (``subject_N`` upstream, ``subject_NN`` in the MICC folders).
        frame_number: ``K`` of the authors' ``frameK.jpg`` (ffmpeg's 1-based numbering).
        frame_index: 0-based frame index in the video, ``K - 1``.
        landmark_indices: the 4 raw scan vertex indices in ``micc4`` order, as written in the file
            (their base, 0 or 1, is decided by ``prepare micc``).
        source: the correspondences file, relative to the annotation repository root.
    """

    subject: int
    frame_number: int
    frame_index: int
    landmark_indices: tuple[int, ...]
    source: str


@dataclasses.dataclass
class MiccAnnotations:
    """Parsed MICC annotations: usable cases, subjects skipped with a reason, provenance."""

    cases: dict[int, MiccCase]
    skipped: dict[int, str]
    folder: Path
    files: dict[str, str]  # path relative to the repository root -> sha256 of the copy read
    warnings: list[str]


@dataclasses.dataclass(frozen=True)
class FacewarehouseAnnotations:
    """The 6 FaceWarehouse template vertex ids (``facewarehouse6`` order), 0-based, and provenance."""

    names: tuple[str, ...]
    indices: tuple[int, ...]
    folder: Path
    files: dict[str, str]
    warnings: tuple[str, ...]


@dataclasses.dataclass
class PrepareReport:
    """What ``prepare micc`` / ``prepare facewarehouse`` did.

    Attributes:
        dataset: "micc" or "facewarehouse".
        out: the output file.
        written: whether the file was written (False when no subject was usable: no file at all).
        prepared: ids of the prepared samples, in file order.
        skipped: ``{id: reason}`` of the subjects that were not prepared.
        problems: one line per problem (every skip, and non-fatal problems), ``"<id>: <what>"``.
        warnings: things to double-check that did not skip anything (weak index-base evidence,
            annotation copies that differ from the pinned upstream files, ...).
        index_base: MICC: the decision (``{"base", "mode", "evidence": {...}, "votes": ...}``).
        mm_per_unit: the factor applied to the source coordinates (FaceWarehouse: the units decision).
        annotations: the annotation source (folder or URL, commit, sha256 of each file read).
        timings: seconds: ``total``, ``per_subject`` (mean over the subjects read).
    """

    dataset: str
    out: str
    written: bool = False
    prepared: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    index_base: dict[str, Any] | None = None
    mm_per_unit: float | None = None
    annotations: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    _read_seconds: list[float] = dataclasses.field(default_factory=list, repr=False)

    def skip(self, sample_id: str, reason: str) -> None:
        """Record a skipped subject (and its problem line)."""
        self.skipped[sample_id] = reason
        self.problems.append(f"{sample_id}: {reason}")

    def load(self, sample_id: str, read: Callable[..., Any], *args) -> Any | None:
        """``read(*args)`` one subject: its result, or None after recording why it was skipped. Any
        failure skips that subject only (never lose the others to one odd file); the read time is
        kept for :meth:`finish`."""
        start = time.perf_counter()
        try:
            result = read(*args)
        except (InputFileError, ValueError) as error:
            self.skip(sample_id, str(error))
            return None
        except Exception as error:  # noqa: BLE001 - one odd file must not stop the preparation
            self.skip(sample_id, f"unexpected {type(error).__name__} while reading: {error}")
            return None
        self._read_seconds.append(time.perf_counter() - start)
        return result

    def finish(self, started: float) -> PrepareReport:
        """Record the timings (total since ``started``, mean read time per subject); return self."""
        per_subject = sum(self._read_seconds) / len(self._read_seconds) if self._read_seconds else 0.0
        self.timings = {"total": round(time.perf_counter() - started, 3), "per_subject": round(per_subject, 3)}
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (stored in the file's ``preparation`` attribute)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}


# ------------------------------------------------------------------------------ locating / fetching
def annotations_folder(path: str | Path | None = None, *, base_url: str = ANNOTATIONS_BASE_URL) -> Path:
    """The annotation ``data/`` folder: ``path`` (the ``data/`` folder or a repository root holding
    it) or, with no path, the pinned copy in the cache (fetched on first use)."""
    if path is None:
        return fetch_annotations(base_url=base_url)
    path = Path(path)
    if not path.is_dir():
        raise InputFileError(path, "annotation folder not found (give the data/ folder of "
                                   f"{ANNOTATIONS_REPOSITORY} or its repository root)")
    for candidate in (path / "data", path):
        if (candidate / "micc").is_dir() or (candidate / "facewarehouse").is_dir():
            return candidate
    raise InputFileError(path, "holds neither data/micc nor data/facewarehouse (expected the data/ folder of "
                               f"{ANNOTATIONS_REPOSITORY} or its repository root)")


def fetch_annotations(dest: str | Path | None = None, *, base_url: str = ANNOTATIONS_BASE_URL,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Download every pinned annotation file (those already there with the right hash are kept).

    Files go to ``dest`` (default ``cache_dir("annotations", ANNOTATIONS_COMMIT)``) under their
    repository paths, each checked against :data:`ANNOTATION_SHA256` (a mismatch deletes it and
    raises). Returns the ``data/`` folder.

    Raises:
        FacebenchError: no network / download failed (give ``--annotations PATH`` instead).
        InputFileError: a downloaded file whose sha256 is not the pinned one.
    """

    root = Path(dest) if dest is not None else cache_dir("annotations", ANNOTATIONS_COMMIT)
    items = sorted(ANNOTATION_SHA256.items())
    for done, (relative, expected) in enumerate(items):
        target = root / relative
        if not (target.is_file() and file_sha256(target) == expected):
            try:
                download(base_url + relative, target, expected)
            except InputFileError:  # a hash mismatch: the file is not the pinned one
                raise
            except FacebenchError as error:
                raise FacebenchError(f"{error} (or give --annotations PATH: a local copy of the "
                                     f"data/ folder of {ANNOTATIONS_REPOSITORY})") from None
        if progress is not None:
            progress(done + 1, len(items))
    return root / "data"


def _provenance(folder: Path, relative: str, files: dict[str, str], warnings: list[str]) -> None:
    """Record the sha256 of ``folder.parent/relative`` and warn when it is not the pinned file."""
    digest = file_sha256(folder.parent / relative)
    files[relative] = digest
    expected = ANNOTATION_SHA256.get(relative)
    if expected is None:
        warnings.append(f"{relative}: not an upstream file at {ANNOTATIONS_COMMIT[:12]} (no pinned sha256)")
    elif digest != expected:
        warnings.append(f"{relative}: differs from the pinned upstream file (sha256 {digest[:12]}..., "
                        f"expected {expected[:12]}...)")


# ------------------------------------------------------------------------------ parsing
def parse_name_index_file(path: str | Path, names: tuple[str, ...]) -> dict[str, int]:
    """Read ``<name> <index>`` lines; every name of ``names`` exactly once, nothing else.

    Raises:
        InputFileError: unreadable file, a line that is not ``name integer``, a name that is a
            number or unknown, a duplicate or missing name, a negative index.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InputFileError(path, f"cannot read ({error.strerror or error})") from None
    found: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise InputFileError(path, f"line {number}: expected '<name> <vertex index>', got {line.strip()!r}")
        name, value = parts
        if re.fullmatch(r"[-+]?\d+(\.\d*)?", name):
            raise InputFileError(path, f"line {number}: malformed: a number ({name}) where a landmark name "
                                       f"({', '.join(names)}) should be")
        if name not in names:
            raise InputFileError(path, f"line {number}: unknown landmark name {name!r}")
        if name in found:
            raise InputFileError(path, f"line {number}: {name} given twice")
        if not re.fullmatch(r"\d+", value):
            raise InputFileError(path, f"line {number}: {value!r} is not a non-negative vertex index")
        found[name] = int(value)
    missing = [n for n in names if n not in found]
    if missing:
        raise InputFileError(path, f"missing landmark(s) {', '.join(missing)}")
    return found


def _case_subject(entry: Any) -> int | None:
    if isinstance(entry, dict) and isinstance(entry.get("correspondences"), str):
        m = re.search(r"subject_0*(\d+)", entry["correspondences"])
        if m:
            return int(m.group(1))
    return None


def load_micc_annotations(path: str | Path | None = None, *, base_url: str = ANNOTATIONS_BASE_URL) -> MiccAnnotations:
    """Parse the MICC annotations (``path``: local copy, see :func:`annotations_folder`).

    A subject whose entry or correspondences file is malformed, or whose correspondences have no
    frame in annotations.json (subject 30 upstream), is put in ``skipped`` with the reason; only a
    missing or unparsable ``annotations.json`` raises.
    """
    folder = annotations_folder(path, base_url=base_url)
    json_path = folder.parent / MICC_JSON
    if not json_path.is_file():
        raise InputFileError(json_path, "MICC annotations.json not found")
    try:
        table = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(json_path, f"not valid JSON ({error})") from None
    if not isinstance(table, dict) or not isinstance(table.get("cases"), list):
        raise InputFileError(json_path, "expected an object with a 'cases' list")
    files: dict[str, str] = {}
    warnings: list[str] = []
    _provenance(folder, MICC_JSON, files, warnings)
    names = SCAN_LANDMARK_SETS["micc4"]
    cases: dict[int, MiccCase] = {}
    skipped: dict[int, str] = {}
    for k, entry in enumerate(table["cases"]):
        subject = _case_subject(entry)
        if subject is None:
            warnings.append(f"{MICC_JSON}: case {k} has no 'correspondences' path naming a subject; ignored")
            continue
        frame = entry.get("frame") if isinstance(entry, dict) else None
        m = _FRAME_NAME.search(frame) if isinstance(frame, str) else None
        if m is None or int(m.group(1)) < 1:
            skipped[subject] = f"annotations.json: case {k} has no valid 'frame' (frameK.jpg, K >= 1): {frame!r}"
            continue
        relative = "data/micc/" + entry["correspondences"].removeprefix("./")
        try:
            found = parse_name_index_file(folder.parent / relative, names)
        except InputFileError as error:
            skipped[subject] = f"malformed annotation: {relative}: {error.message}"
            continue
        _provenance(folder, relative, files, warnings)
        number = int(m.group(1))
        cases[subject] = MiccCase(subject, number, number - 1, tuple(found[n] for n in names), relative)
    _unlisted_cases(folder, cases, skipped, names)
    return MiccAnnotations(cases, skipped, folder, files, warnings)


def _unlisted_cases(folder: Path, cases: dict, skipped: dict, names: tuple[str, ...]) -> None:
    """Subjects with a ``cases/subject_N`` folder but no annotations.json entry: skipped, with why."""
    case_root = folder / "micc" / "cases"
    if not case_root.is_dir():
        return
    for sub in sorted(case_root.iterdir()):
        m = _SUBJECT_DIR.match(sub.name)
        if not m or int(m.group(1)) in cases or int(m.group(1)) in skipped:
            continue
        subject = int(m.group(1))
        try:
            parse_name_index_file(sub / "correspondences.txt", names)
            why = "correspondences.txt is well formed"
        except InputFileError as error:
            why = f"malformed annotation: data/micc/cases/{sub.name}/correspondences.txt: {error.message}"
        skipped[subject] = f"not listed in annotations.json (no frame; the authors skip it); {why}"


def load_facewarehouse_annotations(path: str | Path | None = None, *,
                                   base_url: str = ANNOTATIONS_BASE_URL) -> FacewarehouseAnnotations:
    """Parse ``vertex_identifiers.txt`` (the 6 template vertex ids, 0-based; see the FW card)."""
    folder = annotations_folder(path, base_url=base_url)
    names = SCAN_LANDMARK_SETS["facewarehouse6"]
    found = parse_name_index_file(folder.parent / FACEWAREHOUSE_IDS, names)
    files: dict[str, str] = {}
    warnings: list[str] = []
    _provenance(folder, FACEWAREHOUSE_IDS, files, warnings)
    return FacewarehouseAnnotations(names, tuple(found[n] for n in names), folder, files, tuple(warnings))
