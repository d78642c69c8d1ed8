"""Reproduce Ramon et al. 2019, Table 3: shape error on MICC Florence and FaceWarehouse per loss.

:func:`reproduce_table3` takes prepared scan datasets (``facebench datasets prepare micc`` /
``facewarehouse``; either may be omitted) and a list of entries (:func:`find_entries`): run
folders written by ``facebench train regressor|multilevel`` (``config.json`` and ``model.pt`` /
``best.pt``), checkpoint files, or ready submissions (HDF5, folder with ``manifest.json``, zip). In
``out``:

1. ``submissions/NAME_DATASET.h5``: each run's predictions on the dataset's images
   (:func:`facebench.baselines.ramon2019.predict.predict`: the sRGB crops are decoded to linear RGB and
   resized to the regressor's input size, the faces and the protocol's landmark vertices come from
   the run's face model via :mod:`facebench.benchmark.landmark_sets`); a given submission is used
   as is, on the datasets whose ids it holds;
2. ``results/NAME/PROTOCOL/``: ``summary.json``, ``per_sample.csv``, ``per_vertex.npz`` under
   ``micc-ramon2019`` and ``facewarehouse-ramon2019`` (Table 3; their current version, 1.3: the
   face region, scan vertices within 95 mm of the scan's nose tip; ``protocol_version="1.1"``
   scores the whole scan as before, see :func:`table3_protocols`) and, unless ``extra=False``,
   ``micc-95mm`` (the common variant, an extra column: it costs one more alignment per scan);
3. the reference row ``mean-shape`` (kind ``reference``): the face model's mean for every scan
   (:func:`facebench.benchmark.templates.write_template` with ``model``; the model of the first
   regressor run, else the procedural model), scored like the entries. There is no
   projection-oracle row: the oracle fits the ground truth in a model's span, and a scan's vertices
   are not in any model's topology (the oracle of a scan would need a registration, which is itself
   a method to evaluate);
4. ``table3.csv`` (:func:`table3_columns`): one row per entry (method, loss, source), then the
   reference row, and per
   protocol the headline error in mm (mean over samples of the per-sample mean distance; RMSE for
   ``micc-95mm``), its bootstrap 95 % CI, the std, samples scored, completion and the protocol's
   ``name@version``; a cell whose scoring failed is empty and ``error`` says why;
5. ``table3.png``: bars per entry and protocol with the 95 % CIs; ``summary.json``: settings,
   datasets (sha256, ``mm_per_unit``), entries, errors, wall time.

:func:`reproduce_table3_seeds` runs the table once per seed, on the runs of ``RUNS/seed<S>/`` (what
``facebench reproduce table2 --seeds N`` writes under ``OUT/seed<S>/runs``), in ``out/seed<S>/``,
and writes ``table3.csv`` with the mean and sd across seeds of each protocol's headline,
``verdicts.csv`` and a ``verdict`` column (:mod:`facebench.leaderboard.seeds`).

A failing entry (unreadable checkpoint, invalid submission) is recorded and the others go on;
:class:`~facebench.errors.FacebenchError` only when nothing at all could be scored. Progress goes
to ``progress(message)``. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facebench import __version__
from facebench.atomic import atomic_path
from facebench.errors import FacebenchError, InputFileError

__all__ = ["TABLE3_PROTOCOLS", "Entry", "Table3Result", "find_entries", "parse_run_option", "table3_columns",
           "table3_protocols", "protocol_note", "reproduce_table3", "reproduce_table3_seeds", "plot_table3",
           "MEAN_SHAPE"]

#: The name of the reference row.
MEAN_SHAPE = "mean-shape"

#: (column key, dataset role, protocol) in table order; ``micc95`` is the extra column.
TABLE3_PROTOCOLS: tuple[tuple[str, str, str], ...] = (
    ("micc", "micc", "micc-ramon2019"),
    ("facewarehouse", "facewarehouse", "facewarehouse-ramon2019"),
    ("micc95", "micc", "micc-95mm"),
)
#: Per-protocol columns of ``table3.csv`` (prefixed by the key and ``_``); ``protocol`` is the
#: ``name@version`` the cell was scored under.
CELL_COLUMNS = ("mm", "ci_low_mm", "ci_high_mm", "std_mm", "n_scored", "n_expected", "completion", "protocol")
#: The presets of Table 3 proper (``protocol_version`` applies to these, not to ``micc-95mm``).
RAMON_PRESETS = ("micc-ramon2019", "facewarehouse-ramon2019")
_LOSS_ORDER = ("coarse", "xqt", "gal", "srl", "mrl")

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of Table 3: ``kind`` is ``"run"`` (a training run folder or checkpoint file:
    ``path`` is the checkpoint) or ``"submission"`` (a file/folder scored as is)."""

    name: str
    kind: str
    path: Path
    loss: str = ""


def table3_protocols(protocol_version: str | None = None) -> dict[str, str]:
    """``{column key: protocol id}`` (``name@version``) of the table: the current version of every
    preset (``micc-ramon2019`` and ``facewarehouse-ramon2019`` at 1.3, the face region), or with
    ``protocol_version`` (e.g. ``"1.1"``, the whole scan) that version of the two Table 3 presets;
    ``micc-95mm`` stays at its current version. FacebenchError for a version that does not exist."""
    from facebench.benchmark.protocols import get_protocol

    ids = {}
    for key, _, name in TABLE3_PROTOCOLS:
        wanted = f"{name}@{protocol_version}" if protocol_version and name in RAMON_PRESETS else name
        ids[key] = get_protocol(wanted).id
    return ids


def protocol_note(protocol_id: str) -> str:
    """One line for people: ``name@version`` and the scan region it scores."""
    from facebench.benchmark.protocols import get_protocol

    protocol = get_protocol(protocol_id)
    if protocol.crop_radius_mm is None and protocol.crop_rule is None:
        region = "whole scan, no crop"
    elif protocol.crop_center == "scan_nose_tip":
        region = f"face region: scan vertices within {protocol.crop_radius_mm:g} mm of the scan's nose tip"
    else:
        region = "cropped scan"
    return f"{protocol.id} ({region})"


def table3_columns(extra: bool = True) -> list[str]:
    """Columns of ``table3.csv``: ``method, loss, kind, source``, then
    ``<key>_<cell>`` for each protocol key (``micc``, ``facewarehouse``, ``micc95`` when ``extra``)
    and :data:`CELL_COLUMNS`, then ``error``."""
    keys = [key for key, _, _ in TABLE3_PROTOCOLS if extra or key != "micc95"]
    return ["method", "loss", "kind", "source", *(f"{k}_{c}" for k in keys for c in CELL_COLUMNS), "error"]


# ---------------------------------------------------------------------------- entries
def _is_submission(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in (".h5", ".hdf5", ".zip")) or (
        path.is_dir() and (path / "manifest.json").is_file())


def _run_checkpoint(folder: Path, checkpoint: str) -> Path | None:
    order = ("model.pt", "best.pt") if checkpoint == "last" else ("best.pt", "model.pt")
    return next((folder / name for name in order if (folder / name).is_file()), None)


#: The ``loss`` of a Tewari et al. multi-level run (its checkpoint is predicted by ``predict_multilevel``).
MULTILEVEL = "multilevel"


def _run_loss(checkpoint: Path) -> str:
    """The run's loss (``config.json``), or :data:`MULTILEVEL` for a multi-level checkpoint."""
    from facebench.baselines.tewari2018.predict import is_multilevel_checkpoint

    if is_multilevel_checkpoint(checkpoint):
        return MULTILEVEL
    config = checkpoint.parent / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        return str((data.get("train") or {}).get("loss", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _entry(name: str, path: Path, checkpoint: str) -> Entry:
    path = Path(path)
    if path.is_dir() and not _is_submission(path):
        found = _run_checkpoint(path, checkpoint)
        if found is None:
            raise InputFileError(path, "neither a run folder (model.pt / best.pt) nor a submission (manifest.json)")
        return Entry(name, "run", found, _run_loss(found))
    if path.is_file() and path.suffix == ".pt":
        return Entry(name, "run", path, _run_loss(path))
    if _is_submission(path):
        return Entry(name, "submission", path)
    raise InputFileError(path, "not found, or not a run folder, checkpoint (.pt) or submission (.h5, .zip, folder)")


def parse_run_option(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` of ``--run`` → ``(NAME, PATH)``; FacebenchError on another form."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise FacebenchError(f"--run expects NAME=PATH, got {text!r}")
    return name.strip(), Path(path.strip())


def find_entries(runs: Path | None = None, named: Sequence[tuple[str, Path]] = (), *,
                 checkpoint: str = "last") -> list[Entry]:
    """The rows of Table 3: every child of ``runs`` that is a run folder (``model.pt`` with
    ``checkpoint="last"``, ``best.pt`` with ``"best"``, the other one otherwise) or a submission
    (other children are ignored), then each ``(NAME, PATH)`` of ``named``. Runs are ordered by loss
    (Coarse, XQT, GAL, SRL, MRL, then others by name). Raises InputFileError for a ``named`` path
    or a ``runs`` folder that is unusable, FacebenchError for duplicate names or no entry."""
    if checkpoint not in ("last", "best"):
        raise FacebenchError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    entries: list[Entry] = []
    if runs is not None:
        runs = Path(runs)
        if not runs.is_dir():
            raise InputFileError(runs, "runs folder not found")
        for child in sorted(runs.iterdir()):
            if child.name.startswith("."):
                continue
            try:
                entries.append(_entry(child.stem if child.is_file() else child.name, child, checkpoint))
            except InputFileError:
                continue  # logs, notes, anything else in the folder
        entries.sort(key=lambda e: (_LOSS_ORDER.index(e.loss) if e.loss in _LOSS_ORDER else len(_LOSS_ORDER), e.name))
    entries += [_entry(name, Path(path), checkpoint) for name, path in named]
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FacebenchError(f"entries named more than once: {', '.join(duplicates)} (use --run NAME=PATH)")
    if not entries:
        raise FacebenchError("nothing to score: give --runs with run folders or submissions, or --run NAME=PATH")
    return entries


# ---------------------------------------------------------------------------- main
@dataclasses.dataclass
class Table3Result:
    """What :func:`reproduce_table3` wrote: the table, the output folder, paths, errors per
    ``(entry, protocol)`` and the wall time."""

    table: pd.DataFrame
    out: Path
    files: dict[str, Path]
    errors: dict[str, str]
    seconds: float
    protocols: dict[str, str] = dataclasses.field(default_factory=dict)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "entry"


def reproduce_table3(out: str | Path, entries: Sequence[Entry], *, micc: str | Path | None = None,
                     facewarehouse: str | Path | None = None, extra: bool = True, device: str = "cpu",
                     batch_size: int = 16, model_path: str | Path | None = None,
                     progress: Progress | None = None, protocol_version: str | None = None) -> Table3Result:
    """Predict, score and tabulate (module docstring).

    Args:
        out: output folder (created).
        entries: from :func:`find_entries`.
        micc, facewarehouse: prepared scan datasets (at least one).
        extra: also score ``micc-95mm``.
        protocol_version: version of ``micc-ramon2019`` / ``facewarehouse-ramon2019``
            (:func:`table3_protocols`); None: the current one (1.3, the face region).
        device, batch_size: prediction settings. model_path: the runs' face model file, for
            models read from a file (the procedural model needs none).
        progress: ``progress(message)`` before each step.

    Raises:
        FacebenchError / InputFileError (one line): no dataset, a dataset of the wrong kind, or
        nothing scored at all.
    """
    from facebench.datasets.dataset_file import FaceDataset

    started = time.perf_counter()
    say = progress or (lambda message: None)
    out = Path(out)
    datasets: dict[str, Any] = {}
    for role, path in (("micc", micc), ("facewarehouse", facewarehouse)):
        if path is None:
            continue
        dataset = FaceDataset(path)
        if dataset.kind != role:
            raise InputFileError(Path(path), f"is a {dataset.kind!r} dataset, not {role!r}")
        datasets[role] = dataset
    if not datasets:
        raise FacebenchError("give --micc and/or --facewarehouse (prepared scan datasets)")
    if not entries:
        raise FacebenchError("nothing to score: no run or submission given")
    ids = table3_protocols(protocol_version)
    protocols = [(key, role, ids[key]) for key, role, _ in TABLE3_PROTOCOLS
                 if role in datasets and (extra or key != "micc95")]
    for key, _, protocol_id in protocols:
        say(f"protocol {key}: {protocol_note(protocol_id)}")
    out.mkdir(parents=True, exist_ok=True)
    rows, errors = [], {}
    for number, entry in enumerate(entries, 1):
        say(f"[{number}/{len(entries)}] {entry.name} ({entry.kind}: {entry.path})")
        row: dict[str, Any] = {"method": entry.name, "loss": entry.loss, "kind": entry.kind, "source": str(entry.path)}
        notes = []
        submissions = _submissions_for(entry, datasets, out, device, batch_size, model_path, say, notes)
        for key, role, protocol_name in protocols:
            sub = submissions.get(role)
            if sub is None:
                continue
            say(f"  score {protocol_name}")
            try:
                cell = _score_cell(datasets[role], sub, protocol_name,
                                   out / "results" / _safe(entry.name) / _folder(protocol_name), entry.name)
            except FacebenchError as error:
                notes.append(f"{protocol_name}: {error}")
                continue
            row.update({f"{key}_{c}": v for c, v in cell.items()})
        if notes:
            errors[entry.name] = "; ".join(notes)
        row["error"] = "; ".join(notes)
        rows.append(row)
    rows.append(_mean_shape_row(entries, datasets, protocols, out, model_path, say, errors))
    table = pd.DataFrame(rows).reindex(columns=table3_columns(extra))
    scored = [c for c in table.columns if c.endswith("_mm") and not c.endswith(("ci_low_mm", "ci_high_mm", "std_mm"))]
    if table.loc[table["kind"] != "reference", scored].isna().all().all():  # the entries: the reference is no result
        raise FacebenchError("nothing was scored: " + "; ".join(f"{k}: {v}" for k, v in errors.items())[:600])
    files = {"table3": out / "table3.csv", "plot": out / "table3.png", "summary": out / "summary.json"}
    with atomic_path(files["table3"]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    plot_table3(table, files["plot"], keys=[key for key, _, _ in protocols],
                protocols={key: protocol_id for key, _, protocol_id in protocols})
    seconds = time.perf_counter() - started
    summary = {
        "format": "facebench-table3", "version": 1, "facebench_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "datasets": {role: _dataset_info(ds) for role, ds in datasets.items()},
        "protocols": {key: protocol_id for key, _, protocol_id in protocols},
        "protocol_notes": {key: protocol_note(protocol_id) for key, _, protocol_id in protocols},
        "entries": [dict(dataclasses.asdict(e), path=str(e.path)) for e in entries],
        "settings": {"extra": extra, "device": str(device), "batch_size": batch_size,
                     "protocol_version": protocol_version,
                     "model_path": None if model_path is None else str(model_path)},
        "errors": errors, "seconds": seconds,
    }
    with atomic_path(files["summary"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return Table3Result(table=table, out=out, files=files, errors=errors, seconds=seconds,
                        protocols={key: protocol_id for key, _, protocol_id in protocols})


def _folder(protocol_id: str) -> str:
    """The results folder of a protocol: its name (one version per table)."""
    return protocol_id.split("@")[0]


def _reference_model(entries: Sequence[Entry], model_path):
    """The face model of the first regressor run among ``entries``, else the procedural model."""
    from facebench.baselines.ramon2019.predict import load_checkpoint, model_for_checkpoint
    from facebench.models import load

    for entry in entries:
        if entry.kind == "run" and entry.loss != MULTILEVEL:
            try:
                return model_for_checkpoint(load_checkpoint(entry.path), model_path, path=entry.path)
            except FacebenchError:
                continue
    return load("synthetic")


def _mean_shape_row(entries, datasets: dict, protocols, out: Path, model_path, say, errors: dict) -> dict[str, Any]:
    """The ``mean-shape`` reference row (module docstring), scored on every protocol."""
    from facebench.benchmark.templates import write_template

    model = _reference_model(entries, model_path)
    say(f"[reference] {MEAN_SHAPE}: the mean of model {model.name!r}")
    row: dict[str, Any] = {"method": MEAN_SHAPE, "loss": "", "kind": "reference", "source": f"model:{model.name}"}
    notes = []
    for key, role, protocol_name in protocols:
        submission = out / "submissions" / f"{MEAN_SHAPE}_{role}.h5"
        try:
            if not submission.is_file():
                submission.parent.mkdir(parents=True, exist_ok=True)
                write_template(datasets[role], "mean", submission, model=model)
            cell = _score_cell(datasets[role], submission, protocol_name,
                               out / "results" / MEAN_SHAPE / _folder(protocol_name), MEAN_SHAPE)
        except FacebenchError as error:
            notes.append(f"{protocol_name}: {error}")
            continue
        row.update({f"{key}_{c}": v for c, v in cell.items()})
    if notes:
        errors[MEAN_SHAPE] = "; ".join(notes)
    row["error"] = "; ".join(notes)
    return row


def reproduce_table3_seeds(out: str | Path, runs: str | Path, seeds: Sequence[int], *, checkpoint: str = "last",
                           progress: Progress | None = None, **options) -> Table3Result:
    """:func:`reproduce_table3` once per seed on the entries of ``runs/seed<S>/`` in
    ``out/seed<S>/``, then the table across seeds (module docstring); ``options`` as
    :func:`reproduce_table3` takes them."""
    from facebench.leaderboard.seeds import pairwise_verdicts, seed_folder, summarize_seeds, verdict_column

    started = time.perf_counter()
    say = progress or (lambda message: None)
    out = Path(out)
    results = []
    for seed in seeds:
        folder = seed_folder(runs, seed)
        if not folder.is_dir():
            raise InputFileError(folder, "not found: with --seeds, --runs holds one runs folder per seed (seed<S>/)")
        say(f"seed {seed}: runs of {folder}")
        results.append(reproduce_table3(seed_folder(out, seed), find_entries(folder, checkpoint=checkpoint),
                                        progress=say, **options))
    ids = table3_protocols(options.get("protocol_version"))
    protocols = [(key, ids[key]) for key, _, _ in TABLE3_PROTOCOLS
                 if any(f"{key}_mm" in r.table.columns and r.table[f"{key}_mm"].notna().any() for r in results)]
    metrics = [f"{key}_{c}" for key, _ in protocols for c in ("mm", "n_scored")]
    names = [str(v) for v in results[0].table["method"]]
    frames_by_key = {}
    for key, protocol_name in protocols:
        frames = []
        for r in results:
            seed_frames = {}
            for name in names:
                folder = r.out / "results" / _safe(name) / _folder(protocol_name)
                if (folder / "per_sample.csv").is_file():
                    frame = pd.read_csv(folder / "per_sample.csv", dtype={"id": str})
                    headline = "rmse_mm" if _folder(protocol_name) == "micc-95mm" else "shape_mm"
                    seed_frames[name] = frame.rename(columns={headline: f"{key}_mm"})
            frames.append(seed_frames)
        frames_by_key[key] = frames
    first = protocols[0][0] if protocols else "micc"
    table, verdicts, files = summarize_seeds(out, "table3", [r.table for r in results], "method", metrics,
                                             frames_by_key.get(first, [{} for _ in results]), [f"{first}_mm"],
                                             f"{first}_mm")
    extra = [pairwise_verdicts(frames_by_key[key], names, [f"{key}_mm"]) for key, _ in protocols[1:]]
    verdicts = pd.concat([verdicts, *extra], ignore_index=True)
    table["verdict"] = verdict_column(table, "method", f"{first}_mm", verdicts)
    from facebench.atomic import write_csv

    files["table3"], files["verdicts"] = write_csv(table, out / "table3.csv"), write_csv(verdicts, out / "verdicts.csv")
    seconds = time.perf_counter() - started
    summary = {"format": "facebench-table3-seeds", "version": 1, "seeds": list(seeds), "seconds": seconds,
               "protocols": dict(protocols), "protocol_notes": {k: protocol_note(v) for k, v in protocols},
               "table": table.to_dict(orient="records"), "verdicts": verdicts.to_dict(orient="records"),
               "per_seed": {str(seed): str(r.out) for r, seed in zip(results, seeds)}}
    files["summary"] = out / "summary.json"
    with atomic_path(files["summary"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    errors = {f"seed{seed} {k}": v for r, seed in zip(results, seeds) for k, v in r.errors.items()}
    return Table3Result(table=table, out=out, files=files, errors=errors, seconds=seconds, protocols=dict(protocols))


def _dataset_info(dataset) -> dict[str, Any]:
    from facebench.hashing import file_sha256

    return {"path": str(dataset.path), "sha256": file_sha256(dataset.path), "n": len(dataset),
            "kind": dataset.kind, "mm_per_unit": float(dataset.attrs.get("mm_per_unit", 1.0)),
            "landmark_set": dataset.attrs.get("landmark_set")}


def _submissions_for(entry: Entry, datasets: dict, out: Path, device, batch_size: int, model_path, say,
                     notes: list[str]) -> dict[str, Path]:
    """The submission of ``entry`` for each dataset role (predicted for runs; for a given
    submission, the datasets whose ids it holds)."""
    from facebench.baselines.ramon2019.predict import predict
    from facebench.baselines.tewari2018.predict import predict_multilevel
    from facebench.benchmark.validation import validate_submission

    found: dict[str, Path] = {}
    for role, dataset in datasets.items():
        if entry.kind == "submission":
            report = validate_submission(entry.path, dataset, topology="any")
            if report.n_scored == 0 and "unknown-ids" in report.codes:
                continue  # a submission for the other dataset
            found[role] = entry.path
            continue
        target = out / "submissions" / f"{_safe(entry.name)}_{role}.h5"
        say(f"  predict on {role} ({len(dataset)} images)")
        try:
            if entry.loss == MULTILEVEL:
                predict_multilevel(entry.path, dataset.path, target, device=device, batch_size=batch_size,
                                   method=entry.name, model_path=model_path, overwrite=True)
            else:
                predict(entry.path, dataset.path, target, device=device, batch_size=batch_size, method=entry.name,
                        model_path=model_path, overwrite=True)
        except FacebenchError as error:
            notes.append(f"predict on {role}: {error}")
            continue
        found[role] = target
    if entry.kind == "submission" and not found:
        notes.append("the submission's ids match no given dataset")
    return found


def _score_cell(dataset, submission: Path, protocol_name: str, results_dir: Path, method: str) -> dict[str, Any]:
    from facebench.benchmark.protocols import get_protocol
    from facebench.benchmark.scoring import score, write_results

    result = score(dataset.path, submission, get_protocol(protocol_name), method=method)
    write_results(result, results_dir)
    summary = result.summary
    metric = summary["headline"]["metric"]
    described = summary["metrics"][metric]
    return {"mm": described["mean"], "ci_low_mm": described.get("ci95_low"), "ci_high_mm": described.get("ci95_high"),
            "std_mm": described.get("std"), "n_scored": summary["n_scored"], "n_expected": summary["n_expected"],
            "completion": summary["completion"], "protocol": summary["protocol_id"]}


# ---------------------------------------------------------------------------- plot
_LABELS = {"micc": "MICC mean", "facewarehouse": "FaceWarehouse mean", "micc95": "MICC RMSE"}


def plot_table3(table: pd.DataFrame, out_path: str | Path, *, keys: Sequence[str],
                protocols: dict[str, str] | None = None) -> Path:
    """Grouped bars: one group per row (method), one bar per protocol key (labelled with the
    protocol's ``name@version`` from ``protocols``, default the current ones), 95 % CI error bars;
    PNG, written atomically. Method names are shortened and ``$`` escaped (untrusted text)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from facebench.benchmark.protocols import get_protocol
    from facebench.leaderboard.plots import plot_label

    protocols = {**table3_protocols(), **(protocols or {})}
    n = max(len(table), 1)
    fig = Figure(figsize=(max(4.5, 1.1 * n * max(len(keys), 1) + 1.5), 3.6), dpi=110, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(keys), 1)
    x = np.arange(len(table))
    for k, key in enumerate(keys):
        mean = pd.to_numeric(table.get(f"{key}_mm"), errors="coerce").to_numpy(dtype=float)
        low = pd.to_numeric(table.get(f"{key}_ci_low_mm"), errors="coerce").to_numpy(dtype=float)
        high = pd.to_numeric(table.get(f"{key}_ci_high_mm"), errors="coerce").to_numpy(dtype=float)
        err = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
        ax.bar(x + (k - (len(keys) - 1) / 2) * width, np.nan_to_num(mean), width, yerr=np.maximum(err, 0),
               capsize=3, label=f"{_LABELS.get(key, key)} ({protocols.get(key, key)})")
    ax.set_xticks(x)
    ax.set_xticklabels([plot_label(m, 24) for m in table["method"]], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("shape 3D error (mm), 95% CI")
    cropped = any(get_protocol(protocols[k]).crop_radius_mm is not None for k in keys if k != "micc95")
    region = "face region, 95 mm around the scan's nose tip" if cropped else "whole scans"
    ax.set_title(f"Ramon et al. 2019, Table 3 (re-implemented protocols; {region})", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, facecolor="white", bbox_inches="tight")
    return out_path
