"""The static ``index.html`` of a leaderboard: opens from disk, no server, no external resource.

One section per comparable group (protocol, version, dataset): the protocol's description and
parameters, a table sortable by clicking its headers (a few lines of inline vanilla JS) and the
group's plots (relative links). Every string taken from results (method names, protocol and dataset
names, descriptions) goes through :func:`html.escape`: method names come from strangers.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from facebench.atomic import atomic_path
from facebench.leaderboard.plots import Plot
from facebench.leaderboard.results import metric_label, ordered_metric_keys
from facebench.leaderboard.table import BOARD_CSV, MAIN_METRIC

__all__ = ["GroupSection", "render_index", "write_index"]


@dataclasses.dataclass(frozen=True)
class GroupSection:
    """What the page shows for one (protocol, version, dataset) group.

    Attributes:
        protocol, version, dataset: the group's identity.
        rows: the group's leaderboard rows (ranked).
        protocol_params: the protocol object of a summary.json of the group ({} when unknown).
        plots: the group's figures.
    """

    protocol: str
    version: str
    dataset: str
    rows: pd.DataFrame
    protocol_params: Mapping[str, Any]
    plots: Sequence[Plot]


_E = html.escape

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ccc}
table.board{border-collapse:collapse;font-size:.9em;margin:1em 0}
table.board th,table.board td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
table.board td.text,table.board th.text{text-align:left}
table.board th{background:#f0f0f0;cursor:pointer;user-select:none}
table.board th[aria-sort=ascending]::after{content:" \\25B2"} table.board th[aria-sort=descending]::after{content:" \\25BC"}
table.board tr:nth-child(even){background:#fafafa}
.ci{color:#666;font-size:.85em} .muted{color:#666;font-size:.9em}
table.params{font-size:.85em;border-collapse:collapse} table.params td{padding:.1em .8em;border-bottom:1px solid #eee}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:100%} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#444}
.scroll{overflow-x:auto;max-width:100%}
details.group>summary{font-size:1.3em;font-weight:600;cursor:pointer;margin-top:1.2em;border-bottom:1px solid #ccc}
details.plots>summary{cursor:pointer;margin:.4em 0}
"""

# Click a header: sort the rows of its table by that column (numbers numerically, via data-sort;
# empty cells last), clicking again reverses.
_JS = """
document.querySelectorAll("table.board").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) { var c = row.cells[column]; return c.hasAttribute("data-sort") ? c.getAttribute("data-sort") : c.textContent; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = Number(x), ny = Number(y), r;
        r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _number(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


#: Values smaller than this in magnitude are floating-point zeros (e.g. the rotation error of an exact
#: pose, 6.5e-16 degrees) and print as 0.
ZERO_BELOW = 1e-9


def _fmt(value: Any, digits: int = 4) -> str:
    value = _number(value)
    if math.isnan(value):
        return ""
    return "0" if abs(value) < ZERO_BELOW else f"{value:.{digits}g}"


def _cell(text: str, sort: Any = None, cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if sort is not None:
        number = _number(sort)
        attrs += f' data-sort="{"" if math.isnan(number) else repr(number)}"'
    return f"<td{attrs}>{text}</td>"


def _metric_cell(row: Mapping[str, Any], metric: str) -> str:
    mean = _number(row.get(f"{metric}_mean"))
    if math.isnan(mean):
        return _cell("—", sort=math.nan)
    low, high = _fmt(row.get(f"{metric}_ci95_low")), _fmt(row.get(f"{metric}_ci95_high"))
    ci = f' <span class="ci">[{_E(low)}, {_E(high)}]</span>' if low and high else ""
    return _cell(f"{_E(_fmt(mean))}{ci}", sort=mean)


def _group_metrics(rows: pd.DataFrame) -> list[str]:
    keys = [c[: -len("_mean")] for c in rows.columns if c.endswith("_mean")]
    present = [k for k in keys if pd.to_numeric(rows[f"{k}_mean"], errors="coerce").notna().any()]
    return ordered_metric_keys(present) or [MAIN_METRIC]


def _table(rows: pd.DataFrame) -> str:
    metrics = _group_metrics(rows)
    head = ['<th class="text" title="rank by mean shape error">#</th>', '<th class="text">method</th>',
            "<th>scored / expected</th>", "<th>completion</th>"]
    head += [f'<th title="mean, bootstrap 95% CI in brackets">{_E(metric_label(m))}</th>' for m in metrics]
    head += [f"<th>median {_E(metric_label(m))}</th>" for m in metrics[:1]]
    head += ['<th class="text">date</th>', '<th class="text">submission sha256</th>',
             '<th class="text">facebench</th>']
    body = []
    for rank, (_, row) in enumerate(rows.iterrows(), start=1):
        cells = [
            _cell(str(rank), sort=rank, cls="text"),
            _cell(_E(str(row["method"])), cls="text"),
            _cell(f"{int(row['n_scored'])} / {int(row['n_expected'])}", sort=row["n_scored"]),
            _cell(_E(f"{_number(row['completion']):.1%}") if not math.isnan(_number(row["completion"])) else "",
                  sort=row["completion"]),
        ]
        cells += [_metric_cell(row, m) for m in metrics]
        cells += [_cell(_E(_fmt(row.get(f"{m}_median"))), sort=row.get(f"{m}_median")) for m in metrics[:1]]
        cells += [_cell(_E(str(row["date"])[:10]), cls="text"), _cell(f"<code>{_E(str(row['submission_sha256']))}</code>", cls="text"),
                  _cell(_E(str(row["facebench_version"])), cls="text")]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table class="board"><thead><tr>' + "".join(head) + "</tr></thead><tbody>\n"
            + "\n".join(body) + "\n</tbody></table></div>")


def _params(params: Mapping[str, Any]) -> str:
    skip = {"name", "version", "description", "reimplements"}
    items = "".join(f"<tr><td><code>{_E(str(k))}</code></td><td>{_E(str(v))}</td></tr>"
                    for k, v in params.items() if k not in skip)
    return f"<details><summary>protocol parameters</summary><table class=\"params\">{items}</table></details>" if items else ""


def _href(path: Path, base: Path) -> str:
    relative = Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
    return _E(urllib.parse.quote(relative))


def _figure(plot: Plot, base: Path) -> str:
    return (f'<figure><a href="{_href(plot.path, base)}"><img src="{_href(plot.path, base)}" '
            f'alt="{_E(plot.caption)}" loading="lazy"></a><figcaption>{_E(plot.caption)}</figcaption></figure>')


def _plots_by_metric(plots: Sequence[Plot], base: Path) -> list[str]:
    """One collapsed block per metric (its per-bin and cumulative plots), then the heat maps."""
    metrics = ordered_metric_keys({p.metric for p in plots if p.kind != "heatmap" and p.metric})
    blocks = []
    for metric in metrics:
        figures = "".join(_figure(p, base) for p in plots if p.kind != "heatmap" and p.metric == metric)
        blocks.append(f'<details class="plots"><summary>plots: {_E(metric_label(metric))} (per |yaw| bin, '
                      f"cumulative)</summary>{figures}</details>")
    heatmaps = [p for p in plots if p.kind == "heatmap"]
    if heatmaps:
        blocks.append('<details class="plots"><summary>plots: per-vertex mean shape error on the mean face</summary>'
                      + "".join(_figure(p, base) for p in heatmaps) + "</details>")
    return blocks


def _section(group: GroupSection, base: Path, *, open_: bool = False) -> str:
    title = f"{group.protocol} {group.version} — dataset {group.dataset}"
    parts = [f'<section><details class="group"{" open" if open_ else ""}><summary>{_E(title)}</summary>']
    params = group.protocol_params
    if params.get("description"):
        parts.append(f"<p>{_E(str(params['description']))}</p>")
    if params.get("reimplements"):
        parts.append(f'<p class="muted">Re-implements: {_E(str(params["reimplements"]))}</p>')
    parts.append(_params(params))
    parts.append(_table(group.rows))
    parts += _plots_by_metric(group.plots, base)
    parts.append("</details></section>")
    return "\n".join(parts)


def render_index(groups: Sequence[GroupSection], base: str | Path, *, title: str = "facebench leaderboard",
                 generated: str | None = None) -> str:
    """The page as a string; links are relative to ``base`` (the folder of index.html)."""
    base = Path(base)
    # the newest result's date, not the build time: rebuilding from the same results gives the same page
    dates = [str(d) for g in groups if "date" in g.rows for d in g.rows["date"] if isinstance(d, str) and d]
    generated = generated or (max(dates) if dates else datetime.now(timezone.utc).isoformat(timespec="seconds"))
    body = "\n".join(_section(g, base, open_=(i == 0)) for i, g in enumerate(groups)) or "<p>No results yet.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_E(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{_E(title)}</h1>
<p class="muted">Lower is better for every error. Means over scored samples with bootstrap 95% confidence
intervals; missing samples are never scored as 0 (see completion). Click a column header to sort.
Data: <a href="{_E(BOARD_CSV)}">{_E(BOARD_CSV)}</a>. Results as of {_E(generated)}. Click a section to open it.</p>
{body}
<script>{_JS}</script>
</body></html>
"""


def write_index(groups: Sequence[GroupSection], out_path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`render_index` atomically to ``out_path``; return it."""
    out_path = Path(out_path)
    text = render_index(groups, out_path.parent, **kwargs)
    with atomic_path(out_path, suffix=".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out_path
