"""bench/faults.py: the case list, a few cheap cases through the real CLI, and how a case is judged."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "faults.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def faults():
    spec = importlib.util.spec_from_file_location("bench_faults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_list_names_every_case_once_with_its_tag():
    p = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    rows = [re.fullmatch(r"(\w+)/(\S.*?)  expect=(error|ok|either)  base=(\w+)(  skip: .*)?", ln) for ln in lines[:-1]]
    assert all(rows), [ln for ln, m in zip(lines, rows) if not m][:3]
    assert lines[-1] == f"{len(rows)} cases" and len(rows) >= 177  # at least the issue's 177
    assert {m[1] for m in rows} == {"csv", "config", "cli", "state", "disk", "partial", "security", "lock", "kill",
                                    "data"}
    assert len({(m[1], m[2]) for m in rows}) == len(rows)


def test_cheap_cases_run_through_the_cli_and_write_results(tmp_path):
    only = "^(csv/bom-train|cli/unknown-command|cli/train.sh-folds-backwards)$"
    results = tmp_path / "faults.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--only", only, "--jobs", "2", "--results", str(results),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=ENV, timeout=120)
    assert p.returncode in (0, 1), p.stderr
    lines = [ln for ln in p.stdout.splitlines() if re.match(r"(PASS|FAIL)  ", ln)]
    assert sorted(ln.split()[1] + "/" + ln.split()[2] for ln in lines) == [
        "cli/train.sh-folds-backwards", "cli/unknown-command", "csv/bom-train"]
    assert all(re.fullmatch(r"(PASS|FAIL)  \w+ +\S+ +\d+\.\ds(  .+)?", ln) for ln in lines)
    doc = json.loads(results.read_text())
    s = doc["summary"]
    assert re.search(rf"^3 cases, {s['passed']} passed, {s['failed']} failed$", p.stdout, re.M)
    assert s["cases"] == 3 and s["passed"] + s["failed"] == 3 and set(s["per_tag"]) == {"csv", "cli"}
    assert p.returncode == (1 if s["failed"] else 0)
    by_name = {c["name"]: c for c in doc["cases"]}
    assert by_name["bom-train"]["expect"] == "ok" and by_name["unknown-command"]["expect"] == "error"
    assert all(c["status"] in ("PASS", "FAIL") and c["seconds"] >= 0 for c in doc["cases"])
    assert all(bool(c["reason"]) == (c["status"] == "FAIL") for c in doc["cases"])


def test_a_case_fails_on_a_traceback_a_wrong_exit_a_vague_error_or_a_written_file(tmp_path):
    fz = faults()
    (tmp_path / "none").mkdir()
    fixtures = {"none": tmp_path / "none"}

    def judge(code: str, **kw) -> dict:
        case = fz.Case("cli", "probe", [sys.executable, "-c", code], base="none", **kw)
        return fz.run_case(case, 0, fixtures, tmp_path, tmp_path / "cases", keep=False)

    say = "import sys; print({!r}, file=sys.stderr); sys.exit({})"
    assert judge(say.format("error: bad key 'x'", 2), expect_in="'x'")["status"] == "PASS"
    assert judge(say.format("error: bad key 'x'", 2), expect_in="'y'")["reason"] == "the error does not mention \"'y'\""
    assert judge(say.format("error: bad", 1))["reason"] == "exit 1, expected 2 (a one-line error)"
    assert judge(say.format("bad", 2))["reason"] == "exit 2 without a last line 'error: ...'"
    assert judge("raise ValueError('x')")["reason"] == "traceback in stderr"
    wrote = judge("import sys; open('half.csv', 'w').write('x'); sys.exit('error: disk')".replace("'error: disk'",
                                                                                                "2"))
    assert wrote["reason"] == "exit 2 without a last line 'error: ...'"
    wrote = judge("import sys; open('half.csv', 'w').write('x'); print('error: disk', file=sys.stderr); sys.exit(2)")
    assert wrote["status"] == "FAIL" and wrote["reason"] == "error, but files changed: wrote half.csv"
    assert judge("print('fine')", expect="ok")["reason"] == "no submission tfidf.csv"
    assert judge("print('fine')", expect="ok", sub=None)["status"] == "PASS"
    skipped = judge("print('x')", skip="not here")
    assert skipped["status"] == "SKIP" and fz.line(skipped).endswith("(not here)")
    text, counts = fz.summary([skipped, judge("print('fine')", expect="ok", sub=None)])
    assert text.splitlines()[0] == "2 cases, 1 passed, 0 failed, 1 skipped" and counts["per_tag"]["cli"]["cases"] == 2


def test_the_cases_issue_29_found_all_pass_through_the_cli(tmp_path):
    """The reliability review's failures (code execution from a run folder, stale data, locks, one-line errors, ...),
    each run through the real CLI as the campaign runs it: none may fail."""
    results = tmp_path / "faults.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--issue", "29", "--jobs", "2", "--results", str(results)],
                       capture_output=True, text=True, env=ENV, timeout=900)
    doc = json.loads(results.read_text())
    failed = [f"{c['tag']}/{c['name']}: {c['reason']}" for c in doc["cases"] if c["status"] == "FAIL"]
    assert p.returncode == 0 and failed == [], failed
    assert doc["summary"]["cases"] >= 34
