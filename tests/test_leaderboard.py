"""Leaderboard: results folders in, CSV rows / plots / HTML / paired comparisons out.

The results folders are written here in the format of ``facebench score`` (summary.json,
per_sample.csv, per_vertex.npz) from known per-sample numbers, so expectations are exact.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from facebench.commands.leaderboard import leaderboard
from facebench.errors import FacebenchError, InputFileError
from facebench.leaderboard import build_leaderboard, find_results_dirs, read_board, read_results, upsert_rows
from facebench.leaderboard.compare import compare_results, paired_statistics
from facebench.leaderboard.html import render_index
from facebench.leaderboard.plots import error_colors, render_heatmap_panels
from facebench.leaderboard.results import PerVertex
from facebench.leaderboard.table import KEY_COLUMNS, board_columns, summary_row

EDGES = [0, 15, 30, 45, 60, 90]
BIN_LABELS = ["[0,15)", "[15,30)", "[30,45)", "[45,60)", "[60,90]"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _describe(values) -> dict:
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None,
                "ci95_low": None, "ci95_high": None}
    return {"n": len(x), "mean": float(x.mean()), "median": float(np.median(x)),
            "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "min": float(x.min()), "max": float(x.max()),
            "ci95_low": float(x.mean() - 0.1), "ci95_high": float(x.mean() + 0.1)}


def grid_mesh(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A gently curved ``n x n`` grid facing +z: vertices (n*n,3) mm, faces CCW seen from +z."""
    xs, ys = np.meshgrid(np.linspace(-50, 50, n), np.linspace(-60, 60, n))
    z = 20 - (xs**2 + ys**2) / 400
    vertices = np.stack([xs, ys, z], -1).reshape(-1, 3)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [[a, b, d], [a, d, c]]
    return vertices, np.array(faces, np.int32)


def write_results(folder, method, values: dict, *, yaw=None, protocol="synthetic", version="1.0",
                  dataset="synth-test", dataset_sha="d" * 64, scored=None, per_vertex=None,
                  created="2026-11-21T12:00:00+00:00", submission_sha="ab" * 32) -> Path:
    """A results folder in the format of ``facebench score`` built from per-sample ``values``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(values.values())))
    yaw = np.linspace(-89, 89, n) if yaw is None else np.asarray(yaw, float)
    scored = np.ones(n, bool) if scored is None else np.asarray(scored, bool)
    index = np.minimum(np.searchsorted(EDGES, np.abs(yaw), side="right") - 1, len(BIN_LABELS) - 1)
    bins = [BIN_LABELS[i] for i in index]
    frame = pd.DataFrame({"id": [f"s{i:04d}" for i in range(n)], "scored": scored, "yaw": yaw, "pitch": 0.0,
                          "roll": 0.0, "yaw_bin": bins})
    metrics, per_bin = {}, {}
    for key, v in values.items():
        v = np.where(scored, np.asarray(v, float), np.nan)
        frame[key] = v
        metrics[key] = _describe(v)
        per_bin[key] = {label: _describe(v[np.array(bins) == label]) for label in BIN_LABELS}
    summary = {
        "format": "facebench-results", "version": 1, "method": method,
        "protocol": {"name": protocol, "version": version, "description": f"The {protocol} protocol.",
                     "yaw_bins": EDGES},
        "protocol_id": f"{protocol}@{version}",
        "dataset": {"path": "x.h5", "name": dataset, "sha256": dataset_sha, "n": n, "model": "synthetic"},
        "submission": {"path": "s.h5", "sha256": submission_sha, "format": "hdf5"},
        "facebench_version": "0.1.0", "created": created,
        "n_expected": n, "n_scored": int(scored.sum()), "completion": float(scored.mean()),
        "metrics": metrics, "bins": per_bin, "bin_edges_yaw_deg": EDGES,
        "timings_s": {"validate": 0.1, "score": 0.2, "total": 0.3},
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    frame.to_csv(folder / "per_sample.csv", index=False)
    if per_vertex is not None:
        vertices, faces, error = per_vertex
        np.savez(folder / "per_vertex.npz", mean_per_vertex=np.asarray(error, np.float32),
                 count=np.full(len(error), n, np.int64), faces=np.asarray(faces, np.int32),
                 mean_vertices=np.asarray(vertices, np.float32))
    return folder


# ------------------------------------------------------------------------------------ rows


def test_known_numbers_give_known_row(tmp_path):
    folder = write_results(tmp_path / "results" / "a", "mean-shape",
                           {"shape_mm": [1.0, 2.0, 3.0, 6.0], "rotation_deg": [5.0, 5.0, 5.0, 5.0]},
                           scored=[True, True, True, False])
    results = read_results(folder)
    assert results.protocol_id == "synthetic@1.0" and results.n_scored == 3 and results.completion == 0.75
    assert results.metrics["shape_mm"].mean == pytest.approx(2.0)
    assert results.metric_keys == ["shape_mm", "rotation_deg"]
    row = summary_row(results, tmp_path / "board")
    assert row["method"] == "mean-shape" and row["protocol"] == "synthetic" and row["protocol_version"] == "1.0"
    assert (row["n_expected"], row["n_scored"], row["completion"]) == (4, 3, 0.75)
    assert row["shape_mm_mean"] == pytest.approx(2.0) and row["shape_mm_median"] == pytest.approx(2.0)
    assert row["shape_mm_std"] == pytest.approx(1.0) and row["shape_mm_ci95_low"] == pytest.approx(1.9)
    assert row["rotation_deg_mean"] == pytest.approx(5.0)
    assert row["submission_sha256"] == "abababababab"
    assert row["results"] == "../results/a"
    # through the CSV and back: same numbers, NaN for metrics not computed
    board = upsert_rows(tmp_path / "board", [results])
    again = read_board(tmp_path / "board" / "leaderboard.csv")
    assert list(again.columns) == board_columns()
    assert again.loc[0, "shape_mm_mean"] == pytest.approx(2.0)
    assert np.isnan(again.loc[0, "translation_cm_mean"])
    assert again.loc[0, "date"] == "2026-11-21T12:00:00+00:00"
    pd.testing.assert_frame_equal(board, again)


def _row(method, protocol, shape_mean, dataset="synth-test"):
    return {"method": method, "protocol": protocol, "protocol_version": "1.0", "dataset": dataset,
            "n_expected": 10, "n_scored": 10, "completion": 1.0, "shape_mm_mean": shape_mean}


def test_rows_sorted_by_protocol_then_main_metric(tmp_path):
    rows = [_row("c", "synthetic", 3.0), _row("x", "synthetic-scan", 0.5), _row("a", "synthetic", 1.0),
            _row("none", "synthetic", float("nan")), _row("b", "synthetic", 2.0), _row("y", "synthetic-scan", 0.2)]
    board = upsert_rows(tmp_path, rows)
    assert list(zip(board["protocol"], board["method"])) == [
        ("synthetic", "a"), ("synthetic", "b"), ("synthetic", "c"), ("synthetic", "none"),
        ("synthetic-scan", "y"), ("synthetic-scan", "x")]


def test_reupsert_replaces_the_row(tmp_path):
    upsert_rows(tmp_path, [_row("a", "synthetic", 3.0), _row("b", "synthetic", 2.0)])
    board = upsert_rows(tmp_path, [_row("a", "synthetic", 1.0)])
    assert len(board) == 2 and list(board["method"]) == ["a", "b"]
    assert board.loc[0, "shape_mm_mean"] == 1.0
    # the same method on another dataset is another row
    board = upsert_rows(tmp_path, [_row("a", "synthetic", 9.0, dataset="other")])
    assert len(board) == 3
    assert len(read_board(tmp_path / "leaderboard.csv")) == 3


def _upsert_worker(board_dir: str, worker: int, count: int) -> None:
    rng = np.random.default_rng(worker)
    for i in range(count):
        upsert_rows(board_dir, [_row(f"w{worker}-r{i}", "synthetic", float(rng.uniform(1, 9)))])


def test_concurrent_upserts_lose_no_row(tmp_path):
    workers, per_worker = 6, 5
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_upsert_worker, args=(str(tmp_path), w, per_worker)) for w in range(workers)]
    for p in processes:
        p.start()
    seen = 0
    while any(p.is_alive() for p in processes):  # readers never see a torn or shrinking CSV
        if (tmp_path / "leaderboard.csv").exists():
            n = len(read_board(tmp_path / "leaderboard.csv"))
            assert n >= seen
            seen = n
        time.sleep(0.005)
    for p in processes:
        p.join()
        assert p.exitcode == 0
    board = read_board(tmp_path / "leaderboard.csv")
    assert sorted(board["method"]) == sorted(f"w{w}-r{i}" for w in range(workers) for i in range(per_worker))
    assert not board.duplicated(list(KEY_COLUMNS)).any()
    assert not list(tmp_path.glob(".leaderboard.csv.*"))  # no temporary file left behind


# ------------------------------------------------------------------------------ build, plots


def _three_methods(root: Path, per_vertex: bool = True) -> list[Path]:
    vertices, faces = grid_mesh()
    rng = np.random.default_rng(0)
    n = 20
    folders = []
    for name, scale in (("mean-shape", 3.0), ("oracle", 1.0), ("<script>alert(1)</script>", 2.0)):
        values = {"shape_mm": scale + rng.random(n), "rotation_deg": scale * rng.random(n)}
        pv = (vertices, faces, scale * (1 + vertices[:, 0] / 50)) if per_vertex else None
        folders.append(write_results(root / f"m{scale:g}", name, values, per_vertex=pv))
    folders.append(write_results(root / "scan", "oracle", {"shape_mm": rng.random(n), "rmse_mm": rng.random(n)},
                                 protocol="synthetic-scan"))
    return folders


def test_build_writes_csv_plots_and_html(tmp_path):
    _three_methods(tmp_path / "results")
    board = build_leaderboard([tmp_path / "results"], tmp_path / "board")
    assert len(board.frame) == 4 and board.warnings == []
    assert list(board.frame["method"][:3]) == ["oracle", "<script>alert(1)</script>", "mean-shape"]
    kinds = sorted((p.kind, p.metric) for p in board.plots)
    assert ("heatmap", "shape_mm") in kinds and ("bins", "rotation_deg") in kinds
    assert ("cumulative", "rmse_mm") in kinds and ("bins", "shape_mm") in kinds
    for plot in board.plots:
        data = plot.path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, plot.path
    page = board.html.read_text()
    for plot in board.plots:
        assert f'src="plots/{plot.path.name}"' in page
    assert "The synthetic-scan protocol." in page and "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only our own sorting script
    # the CSV keeps the name verbatim
    assert "<script>alert(1)</script>" in set(read_board(board.csv)["method"])


def test_build_without_per_vertex_and_keeps_other_rows(tmp_path):
    write_results(tmp_path / "r1", "first", {"shape_mm": [1.0, 2.0, 3.0]})
    write_results(tmp_path / "r2", "second", {"shape_mm": [2.0, 2.0, 3.0]})
    build_leaderboard([tmp_path / "r1"], tmp_path / "board")
    board = build_leaderboard([tmp_path / "r2"], tmp_path / "board")
    assert list(board.frame["method"]) == ["first", "second"]
    assert {p.kind for p in board.plots} == {"bins", "cumulative"}  # no per_vertex.npz: no heat map
    assert len(board.results) == 2  # the first row's folder was found again from its relative path
    board = build_leaderboard([tmp_path / "r2"], tmp_path / "board", fresh=True)
    assert list(board.frame["method"]) == ["second"]


def test_heatmap_is_red_where_errors_are_high(tmp_path):
    vertices, faces = grid_mesh(20)
    error = np.where(vertices[:, 0] > 0, 10.0, 0.0)  # high on the subject's left = the image right
    path = render_heatmap_panels([PerVertex(error, None, faces, vertices)], ["m"], tmp_path / "p.png", vmax=10.0,
                                 views=("front",), panel_px=120)
    from matplotlib.image import imread

    image = imread(path)[..., :3]
    painted = (np.abs(image - 1.0).sum(-1) > 0.1)  # not the white background
    rows, cols = np.nonzero(painted)
    middle = (cols.min() + cols.max()) / 2
    left = image[painted & (np.arange(image.shape[1])[None, :] < middle - 10)]
    right = image[painted & (np.arange(image.shape[1])[None, :] > middle + 10)]
    assert len(left) > 100 and len(right) > 100
    assert right[:, 0].mean() > left[:, 0].mean() + 0.2  # red end of the colormap on the right
    assert left[:, 2].mean() > right[:, 2].mean() + 0.2  # blue end on the left
    colors = error_colors(np.array([0.0, 10.0, np.nan]), vmax=10.0)
    assert colors[1, 0] > colors[0, 0] and colors[0, 2] > colors[1, 2] and np.allclose(colors[2], colors[2, 0])


def test_render_index_escapes_everything_from_results():
    from facebench.leaderboard.html import GroupSection

    evil = '"><img src=x onerror=alert(1)>'
    rows = pd.DataFrame([_row("<script>alert(1)</script>", evil, 1.0)]).reindex(columns=board_columns())
    rows = rows.astype({"date": object, "facebench_version": object, "submission_sha256": object, "results": object})
    rows.loc[0, ["date", "facebench_version", "submission_sha256", "results"]] = ["", evil, "", ""]
    page = render_index([GroupSection(evil, "1.0", evil, rows, {"description": evil}, [])], ".")
    assert "<script>alert(1)</script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


# ---------------------------------------------------------------------------------- compare


def _pair(tmp_path, a_values, b_values, **b_kwargs):
    a = write_results(tmp_path / "a", "A-method", {"shape_mm": a_values})
    b = write_results(tmp_path / "b", "B-method", {"shape_mm": b_values}, **b_kwargs)
    return a, b


def test_compare_clear_winner(tmp_path):
    rng = np.random.default_rng(1)
    a_values = rng.uniform(1, 3, 40)
    a, b = _pair(tmp_path, a_values, a_values + 0.5 + 0.05 * rng.standard_normal(40))
    result = compare_results(a, b, resamples=2000)
    assert result.n_pairs == 40 and result.mean_difference == pytest.approx(-0.5, abs=0.03)
    assert result.ci95_low < -0.45 and result.ci95_high < 0
    assert result.wilcoxon_p < 1e-6 and result.ttest_p < 1e-6
    assert result.better == "A" and result.better_method == "A-method"


def test_compare_exact_shift_and_identical(tmp_path):
    values = np.arange(1.0, 11.0)
    a, b = _pair(tmp_path, values, values - 0.25)
    result = compare_results(a, b, resamples=500)
    assert result.mean_difference == pytest.approx(0.25)
    assert result.ci95_low == pytest.approx(0.25) and result.ci95_high == pytest.approx(0.25)
    assert result.better == "B"
    same = compare_results(a, a, resamples=500)
    assert same.mean_difference == 0 and same.wilcoxon_p == 1.0 and same.ttest_p == 1.0 and same.better is None


def test_compare_noise_only_is_not_significant():
    rng = np.random.default_rng(3)
    a = rng.uniform(1, 3, 60)
    mean, low, high, wilcoxon_p, ttest_p = paired_statistics(a, a + rng.normal(0, 0.1, 60), resamples=1000)
    assert low < 0 < high and wilcoxon_p > 0.2 and ttest_p > 0.2


def test_compare_pairs_only_common_ids(tmp_path):
    a_values = np.arange(1.0, 9.0)
    a, b = _pair(tmp_path, a_values, a_values + 1.0, scored=[True] * 6 + [False] * 2)
    result = compare_results(a, b, resamples=200)
    assert (result.n_pairs, result.n_only_a, result.n_only_b) == (6, 2, 0)
    assert result.mean_a == pytest.approx(3.5) and result.mean_difference == pytest.approx(-1.0)


def test_compare_refuses_different_protocol_or_dataset(tmp_path):
    a = write_results(tmp_path / "a", "A", {"shape_mm": [1.0, 2.0, 3.0]})
    b = write_results(tmp_path / "b", "B", {"shape_mm": [1.0, 2.0, 3.0]}, protocol="synthetic-scan")
    c = write_results(tmp_path / "c", "C", {"shape_mm": [1.0, 2.0, 3.0]}, dataset_sha="e" * 64)
    with pytest.raises(FacebenchError, match="different protocols"):
        compare_results(a, b)
    with pytest.raises(FacebenchError, match="different datasets"):
        compare_results(a, c)
    with pytest.raises(FacebenchError, match="rotation_deg"):
        compare_results(a, a, "rotation_deg")


# ------------------------------------------------------------------------------- bad input


def _break(folder: Path, how: str) -> str:
    """Damage a results folder; return the file name the error must name."""
    summary = json.loads((folder / "summary.json").read_text())
    if how == "no-summary":
        (folder / "summary.json").unlink()
        return "summary.json"
    if how == "bad-json":
        (folder / "summary.json").write_text("{not json")
        return "summary.json"
    if how in ("format", "version", "metrics", "counts"):
        if how == "format":
            summary["format"] = "something-else"
        elif how == "version":
            summary["version"] = 99
        elif how == "metrics":
            del summary["metrics"]
        else:
            summary["n_scored"] = summary["n_expected"] + 1
        (folder / "summary.json").write_text(json.dumps(summary))
        return "summary.json"
    if how == "no-per-sample":
        (folder / "per_sample.csv").unlink()
        return "per_sample.csv"
    if how == "per-sample-column":
        pd.read_csv(folder / "per_sample.csv").drop(columns="shape_mm").to_csv(folder / "per_sample.csv", index=False)
        return "per_sample.csv"
    if how == "per-sample-duplicate":
        frame = pd.read_csv(folder / "per_sample.csv")
        frame.loc[1, "id"] = frame.loc[0, "id"]
        frame.to_csv(folder / "per_sample.csv", index=False)
        return "per_sample.csv"
    if how == "per-vertex-faces":
        vertices, faces = grid_mesh(4)
        np.savez(folder / "per_vertex.npz", mean_per_vertex=np.ones(len(vertices)), faces=faces + 100,
                 mean_vertices=vertices)
        return "per_vertex.npz"
    if how == "per-vertex-pickle":
        np.save(folder / "per_vertex.npz", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        (folder / "per_vertex.npz.npy").rename(folder / "per_vertex.npz")
        return "per_vertex.npz"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["no-summary", "bad-json", "format", "version", "metrics", "counts",
                                 "no-per-sample", "per-sample-column", "per-sample-duplicate",
                                 "per-vertex-faces", "per-vertex-pickle"])
def test_malformed_results_give_a_clear_error(tmp_path, how):
    folder = write_results(tmp_path / "r", "m", {"shape_mm": [1.0, 2.0]})
    name = _break(folder, how)
    with pytest.raises(InputFileError) as caught:
        read_results(folder)
    assert name in str(caught.value)
    if how != "no-summary":  # the CLI: one error line naming the file, exit 2, no traceback
        result = CliRunner().invoke(leaderboard, ["build", str(folder), "--out", str(tmp_path / "board")])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and name in result.output
        assert "Traceback" not in result.output and result.output.count("\n") == 1
        assert not (tmp_path / "board" / "leaderboard.csv").exists()


def test_find_results_dirs(tmp_path):
    a = write_results(tmp_path / "x" / "a", "a", {"shape_mm": [1.0]})
    b = write_results(tmp_path / "x" / "deep" / "b", "b", {"shape_mm": [1.0]})
    assert find_results_dirs([tmp_path / "x", a]) == sorted([a.resolve(), b.resolve()])
    with pytest.raises(InputFileError, match="no such file"):
        find_results_dirs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no results folder"):
        find_results_dirs([tmp_path / "empty"])


def test_cli_build_and_compare(tmp_path):
    rng = np.random.default_rng(2)
    values = rng.uniform(1, 2, 12)
    a = write_results(tmp_path / "res" / "a", "good", {"shape_mm": values})
    write_results(tmp_path / "res" / "b", "bad", {"shape_mm": values + 1})
    runner = CliRunner()
    result = runner.invoke(leaderboard, ["build", str(tmp_path / "res"), "--out", str(tmp_path / "board"),
                                         "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "1. good" in result.output and "2. bad" in result.output
    assert (tmp_path / "board" / "index.html").exists()
    result = runner.invoke(leaderboard, ["compare", str(a), str(tmp_path / "res" / "b"), "--resamples", "500"])
    assert result.exit_code == 0, result.output
    assert "mean difference A - B: -1" in result.output and "verdict: A lower than B: good has the lower error" in result.output
    result = runner.invoke(leaderboard, ["compare", str(a), str(tmp_path / "res" / "b"), "--json",
                                         "--resamples", "500"])
    assert json.loads(result.output)["n_pairs"] == 12
    result = runner.invoke(leaderboard, ["compare", str(a), str(tmp_path / "nope")])
    assert result.exit_code == 2 and result.output.startswith("error: ")


_DOM_SHIM = """
function attrs(init) { var a = Object.assign({}, init); return {
  getAttribute: function (k) { return k in a ? a[k] : null; }, setAttribute: function (k, v) { a[k] = String(v); },
  removeAttribute: function (k) { delete a[k]; }, hasAttribute: function (k) { return k in a; } }; }
function cell(text, sort) { var c = attrs(sort === undefined ? {} : {"data-sort": sort}); c.textContent = text; return c; }
var data = DATA;
var ths = data.header.map(function (h) { var th = attrs({}); th.textContent = h;
  th.addEventListener = function (e, f) { th.click = f; }; return th; });
var body = {rows: data.rows.map(function (r) { return {cells: r.map(function (c) { return cell(c[0], c[1]); })}; })};
body.appendChild = function (row) { body.rows.splice(body.rows.indexOf(row), 1); body.rows.push(row); };
var table = {querySelectorAll: function () { return ths; }, tBodies: [body]};
var document = {querySelectorAll: function () { return [table]; }};
SCRIPT
var out = [];
data.clicks.forEach(function (i) { ths[i].click(); out.push(body.rows.map(function (r) { return r.cells[0].textContent; })); });
console.log(JSON.stringify(out));
"""


def test_sort_script_sorts_numbers_numerically(tmp_path):
    import shutil
    import subprocess

    from facebench.leaderboard.html import _JS

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's sorting script is not executed")
    data = {"header": ["method", "error"], "clicks": [1, 1, 0],
            "rows": [[["b"], ["10", "10.0"]], [["a"], ["9", "9.0"]], [["c"], ["-", ""]], [["d"], ["100", "100"]]]}
    script = _DOM_SHIM.replace("DATA", json.dumps(data)).replace("SCRIPT", _JS)
    (tmp_path / "sort.js").write_text(script)
    result = subprocess.run([node, str(tmp_path / "sort.js")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    ascending, descending, by_name = json.loads(result.stdout)
    assert ascending == ["a", "b", "d", "c"]  # 9 < 10 < 100 (not "10" < "100" < "9"), empty last
    assert descending == ["d", "b", "a", "c"]
    assert by_name == ["a", "b", "c", "d"]
