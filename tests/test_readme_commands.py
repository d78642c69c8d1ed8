"""Every command line of the README's ```bash blocks runs, as written and in order, in one fresh
folder (a README command that fails fails this test).

Sizes are shrunk where the README's are large (:data:`SHRINK`: sample counts, identities, epochs,
trials, multi-level iterations); everything else on the line is run verbatim. A plain ``facebench
...`` line runs in this process through click's runner (shell globs expanded; one process start
costs ~5 s of CPU, most of the budget otherwise), any line with shell syntax (``&&``, ``;``, pipes,
``$``) or another program runs in ``bash -e``. Skipped lines (:data:`SKIP`), each for a reason:

- ``bash scripts/setup.sh && ...``: installs system packages and runs the demo or the whole suite
  (the two commands; CI runs the second one itself);
- ``models info sfm --path sfm_shape_3448.bin``, ``models build --meshes registered/``: files the user
  obtains (licensed SFM model, registered meshes); ``models fetch ict``: network;
- ``facebench serve``: a long-running server (docs/serve.md; tests/test_serve.py);
- every line of the MICC/FaceWarehouse block and ``reproduce table3``: licensed datasets under
  ``/data`` (tests/test_micc.py, test_facewarehouse.py, test_table3.py use fixtures);
- ``torchrun``: two DDP processes (tests/test_training.py runs DDP with 2 CPU processes);
- ``reproduce table2`` and ``reproduce correctives``: 12 minutes and more on 2 cores
  (tests/test_table2.py and test_multilevel_eval.py run them at test sizes).

The test also fails when a skip or shrink rule no longer matches any README line (a stale rule).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: (pattern, reason): lines matching ``pattern`` are not run.
SKIP = [
    (r"^bash scripts/setup\.sh", "installs packages; the demo and the whole suite"),
    (r"models info sfm --path", "licensed SFM model file"),
    (r"models fetch ict", "network"),
    (r"models build --meshes registered/", "the user's registered meshes"),
    (r"^facebench serve ", "long-running server"),
    (r"/data/MICC|/data/FaceWarehouse|micc\.h5|fw\.h5", "licensed MICC / FaceWarehouse data"),
    (r"^torchrun ", "two DDP processes"),
    (r"reproduce table2", "12+ minutes on 2 cores"),
    (r"reproduce correctives", "tens of minutes on 2 cores"),
]


def _shrink_n(match: re.Match, line: str) -> str:
    n = int(match.group(1))
    small = 8 if "--shard" in line else 20 if "--split" in line else 6
    return f"--n {min(n, small)}"


#: (pattern, replacement) applied to every line that runs; a callable gets (match, line).
SHRINK = [
    (r"--n (\d+)", _shrink_n),
    (r"--identities (\d+)", lambda m, line: f"--identities {min(int(m.group(1)), 10)}"),
    (r"--epochs (\d+)", lambda m, line: "--epochs 1"),
    (r"--trials (\d+)", lambda m, line: "--trials 2"),
    (r"^(facebench train multilevel .*?--out \S+)", lambda m, line: m.group(1) + " --pretrain-iters 1 --finetune-iters 1"),
]


def readme_command_lines(text: str) -> list[str]:
    """The command lines of every ```bash block, backslash continuations joined."""
    lines, inside, pending = [], False, ""
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            inside = raw.strip() == "```bash"
            continue
        if not inside or not raw.strip() or raw.strip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1].strip() + " "
            continue
        lines.append((pending + raw.strip()).strip())
        pending = ""
    return lines


def plan(lines: list[str]) -> tuple[list[str], list[tuple[str, str]], set[int], set[int]]:
    run, skipped, skip_used, shrink_used = [], [], set(), set()
    for line in lines:
        reason = next(((i, r) for i, (p, r) in enumerate(SKIP) if re.search(p, line)), None)
        if reason is not None:
            skip_used.add(reason[0])
            skipped.append((line, reason[1]))
            continue
        for i, (pattern, replace) in enumerate(SHRINK):
            new = re.sub(pattern, lambda m, line=line, replace=replace: replace(m, line), line)
            if new != line:
                shrink_used.add(i)
            line = new
        run.append(line)
    return run, skipped, skip_used, shrink_used


def test_readme_parser_joins_continuations():
    text = "x\n```bash\na \\\n    b  # c\n\nd\n```\n```python\ne\n```\n"
    assert readme_command_lines(text) == ["a b  # c", "d"]


def test_every_readme_command_runs_in_order_in_one_fresh_folder(tmp_path, monkeypatch):
    if shutil.which("facebench") is None:
        pytest.skip("the facebench command is not installed (pip install -e .)")
    lines = readme_command_lines(README.read_text(encoding="utf-8"))
    run, skipped, skip_used, shrink_used = plan(lines)
    assert set(range(len(SKIP))) == skip_used, [SKIP[i] for i in set(range(len(SKIP))) - skip_used]
    assert set(range(len(SHRINK))) == shrink_used, [SHRINK[i][0] for i in set(range(len(SHRINK))) - shrink_used]
    assert len(run) >= 20, run
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    monkeypatch.chdir(tmp_path)
    try:
        for line in run:
            started = time.perf_counter()
            code, output = _run_line(line, tmp_path)
            print(f"{time.perf_counter() - started:6.1f} s  {line}")
            assert code == 0, f"README command failed (exit {code}): {line}\n{output[-4000:]}"
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _run_line(line: str, folder: Path) -> tuple[int, str]:
    words = shlex.split(line, comments=True)
    if words and words[0] == "facebench" and not re.search(r"[;&|$<>`]", line.split("#")[0]):
        from click.testing import CliRunner

        from facebench.cli import main

        args = []
        for word in words[1:]:
            args += sorted(glob.glob(word)) or [word] if re.search(r"[*?[]", word) else [word]
        result = CliRunner().invoke(main, args)
        return result.exit_code, result.output + (repr(result.exception) if result.exit_code else "")
    result = subprocess.run(["bash", "-e", "-c", line], cwd=folder, capture_output=True, text=True, timeout=300,
                            env={**os.environ})
    return result.returncode, result.stdout + result.stderr
