"""The service's public page: the leaderboard of each test set and a form to submit.

The tables are rendered on the server (every string through :func:`html.escape`) and refreshed
by a few lines of inline JavaScript that only ever set ``textContent`` (method and team names
come from strangers). The form sends the chosen file as the body of ``POST /api/submissions``
with the token in the ``Authorization`` header, shows the validation report, then polls the
submission until it is scored and refreshes the table. No external script, font or style.
"""

from __future__ import annotations

import html

_E = html.escape

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f0f0f0} td.text,th.text{text-align:left}
.muted{color:#666;font-size:.9em} .ci{color:#666;font-size:.85em}
form{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.4em .8em;max-width:40em;align-items:center}
form input,form select{max-width:100%} pre{white-space:pre-wrap;background:#f7f7f7;padding:.6em;max-width:100%;overflow-x:auto}
"""

_JS = """
function fmt(x){return (x===null||x===undefined)?"":(Math.abs(x)<5e-7?"0":Number(x).toPrecision(4));}
function cell(row,text,cls){var td=document.createElement("td");td.textContent=text;if(cls){td.className=cls;}row.appendChild(td);}
function renderBoards(data){
  data.test_sets.forEach(function(ts){
    var body=document.getElementById("rows-"+ts.name); if(!body){return;}
    while(body.firstChild){body.removeChild(body.firstChild);}
    ts.rows.forEach(function(r){
      var tr=document.createElement("tr"), m=r.metrics.shape_mm||{};
      cell(tr,String(r.rank),"text");cell(tr,r.method,"text method");cell(tr,r.team,"text");
      cell(tr,fmt(m.mean)+" ["+fmt(m.ci95_low)+", "+fmt(m.ci95_high)+"]");
      cell(tr,r.n_scored+" / "+r.n_expected);cell(tr,(100*r.completion).toFixed(1)+"%");
      cell(tr,String(r.submission));cell(tr,(r.date||"").slice(0,10),"text");body.appendChild(tr);
    });
  });
}
function refresh(){return fetch("api/leaderboard").then(function(r){return r.json();}).then(renderBoards);}
function show(text){document.getElementById("status").textContent=text;}
function poll(id,token,left){
  fetch("api/submissions/"+id,{headers:{"Authorization":"Bearer "+token}}).then(function(r){return r.json();}).then(function(s){
    show("submission "+id+": "+s.status+(s.error?" ("+s.error+")":"")+(s.result?"\\n"+JSON.stringify(s.result.bins,null,1):""));
    if(s.status==="done"||s.status==="failed"){refresh();}
    else if(left>0){setTimeout(function(){poll(id,token,left-1);},1000);}
  });
}
document.getElementById("submit-form").addEventListener("submit",function(ev){
  ev.preventDefault();
  var token=document.getElementById("token").value.trim(), file=document.getElementById("file").files[0];
  if(!file){show("choose a submission file (.h5 or .zip)");return;}
  var q="?method="+encodeURIComponent(document.getElementById("method").value)+"&test_set="+encodeURIComponent(document.getElementById("test_set").value);
  show("uploading "+file.name+" ...");
  fetch("api/submissions"+q,{method:"POST",headers:{"Authorization":"Bearer "+token,"Content-Type":"application/octet-stream"},body:file})
    .then(function(r){return r.json().then(function(b){return [r.status,b];});})
    .then(function(x){var b=x[1];
      if(x[0]!==202){show("refused ("+x[0]+"): "+b.error+(b.report?"\\n"+JSON.stringify(b.report.problems,null,1):""));return;}
      show("accepted as submission "+b.id+", queued for scoring");poll(b.id,token,600);})
    .catch(function(e){show("upload failed: "+e);});
});
"""


def _fmt(value) -> str:
    if value is None:
        return ""
    return "0" if abs(value) < 5e-7 else f"{value:.4g}"


def _rows(board: dict) -> str:
    out = []
    for r in board["rows"]:
        m = r["metrics"].get("shape_mm", {})
        cells = [(str(r["rank"]), "text"), (r["method"], "text method"), (r["team"], "text"),
                 (f"{_fmt(m.get('mean'))} [{_fmt(m.get('ci95_low'))}, {_fmt(m.get('ci95_high'))}]", ""),
                 (f"{r['n_scored']} / {r['n_expected']}", ""), (f"{100 * r['completion']:.1f}%", ""),
                 (str(r["submission"]), ""), ((r["date"] or "")[:10], "text")]
        out.append("<tr>" + "".join(f'<td class="{c}">{_E(t)}</td>' if c else f"<td>{_E(t)}</td>" for t, c in cells)
                   + "</tr>")
    return "\n".join(out)


def render_page(title: str, boards: list[dict], limits) -> str:
    sections = []
    for board in boards:
        sections.append(
            f'<section><h2>{_E(board["name"])} <span class="muted">protocol {_E(board["protocol"])}</span></h2>'
            '<div class="scroll"><table><thead><tr><th class="text">#</th><th class="text">method</th>'
            '<th class="text">team</th><th>shape error, mm [95% CI]</th><th>scored</th><th>completion</th>'
            '<th>submission</th><th class="text">date</th></tr></thead>'
            f'<tbody id="rows-{_E(board["name"])}">{_rows(board)}</tbody></table></div></section>')
    options = "".join(f'<option value="{_E(b["name"])}">{_E(b["name"])}</option>' for b in boards)
    body = "\n".join(sections) or "<p>No test set yet.</p>"
    limits_text = (f"at most {limits.max_upload_bytes // 1024**2} MiB per upload, {limits.daily_limit} submissions "
                   "per team per UTC day (unless the admin set another)")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_E(title)}</title><style>{_CSS}</style></head><body>
<h1>{_E(title)}</h1>
<p class="muted">Ground truth stays on this server. Lower is better; means over scored samples with bootstrap 95%
confidence intervals; missing samples lower the completion and are never scored as 0. JSON:
<a href="api/leaderboard">api/leaderboard</a>.</p>
{body}
<h2>Submit</h2>
<p class="muted">A submission file as for <code>facebench submission validate</code> (.h5 or .zip), {_E(limits_text)}.
You see the validation report, then the aggregates of your submission per |yaw| bin.</p>
<form id="submit-form">
<label for="token">API token</label><input id="token" type="password" autocomplete="off" required>
<label for="test_set">test set</label><select id="test_set">{options}</select>
<label for="method">method name</label><input id="method" type="text" maxlength="100" required>
<label for="file">file</label><input id="file" type="file" accept=".h5,.hdf5,.zip">
<span></span><button id="submit" type="submit">Submit</button>
</form>
<pre id="status" aria-live="polite"></pre>
<script>{_JS}</script>
</body></html>
"""
