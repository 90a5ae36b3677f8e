"""The fault campaign of issue 13: malformed files, config and CLI mistakes, damaged or locked run folders,
unwritable outputs and partial runs, each run through the real CLI on a small synthetic competition.

    .venv/bin/python bench/faults.py [--only REGEX] [--issue N] [--list] [--jobs N] [--out DIR] [--results FILE]

Each case runs in a fresh copy of a fixture folder (its working directory: data/ with 60 train / 20 test rows, and
for some cases a finished TF-IDF run, a finished or a killed tiny-transformer run). A case expecting an error
passes when the command exits 2, its last stderr line is `error: ...` (holding the case's `expect_in`), no
traceback was printed and no file of the folder was added, changed or removed; a case expecting success passes when
it exits 0 and leaves a submission with sample_submission.csv's header and ids and 0/1 values. `either` cases
accept both; every case may add its own check. `--only` matches `tag/name`; `--out` keeps every folder there.
Results go to bench/results/faults.json (with --only or --issue N: a temp file); the exit code is 1 if any case
failed. `--issue N` runs the cases the review of issue N added (29: 34 cases).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
N_TRAIN, N_TEST = 60, 20
TR, TE, SS = "data/train.csv", "data/test.csv", "data/sample_submission.csv"
OUTS = ["folds.dir=folds", "folds.n_folds=3", "output.checkpoints_dir=checkpoints",
        "output.submissions_dir=submissions", "output.plots=false"]
TFIDF = ["--config", str(ROOT / "configs/tfidf.yaml"), "data.data_dir=data", *OUTS, "tfidf.n_jobs=1"]
TSH = ["data.data_dir={dir}/data", "folds.dir={dir}/folds", "folds.n_folds=3",
       "output.checkpoints_dir={dir}/checkpoints", "output.submissions_dir={dir}/submissions", "output.plots=false",
       "tfidf.n_jobs=1"]
NOBODY = 65534  # read-only cases run as this uid when the campaign runs as root (chmod does not stop root)


@dataclass
class Case:
    tag: str
    name: str
    cmd: list[str]  # {dir}: the case folder, {fixture}: the fixtures folder (tiny.yaml, cut.yaml, model/)
    expect: str = "error"  # error | ok | either
    expect_in: str = ""  # a substring the error line must hold
    base: str = "tfidf"  # fixture copied as the case folder: none | data | tfidf | tr | cut
    setup: tuple[Callable, ...] = ()  # steps (Run) -> None before the command
    check: Callable | None = None  # (Run) -> "" or why the case failed, after the generic checks
    sub: str | None = "submissions/tfidf.csv"  # the submission a success must leave (None: none checked)
    data: str = "data"  # the folder whose sample_submission.csv the submission must match
    env: dict = field(default_factory=dict)
    merged: bool = False  # train.sh: stderr goes to stdout (and its log) once its log starts
    unprivileged: bool = False  # run as an ordinary user (uid NOBODY under root, via setpriv): permissions bite
    skip: str = ""
    timeout: int = 240
    issue: int = 0  # the issue whose review found it (--issue N runs those)


@dataclass
class Run:
    case: Case
    dir: Path
    fixture: Path
    rc: int | None = None
    out: str = ""
    err: str = ""
    before: dict = field(default_factory=dict)
    cleanup: list = field(default_factory=list)


# ---- setup steps -----------------------------------------------------------------------------------------------

def edit(rel: str, fn: Callable[[str], str]) -> Callable:
    """data file `rel` (relative to the case folder) rewritten as fn(text), no newline translation."""
    def step(r: Run):
        p = r.dir / rel
        p.write_bytes(fn(p.read_bytes().decode("utf-8")).encode("utf-8"))
    return step


def raw(rel: str, fn: Callable[[bytes], bytes]) -> Callable:
    def step(r: Run):
        p = r.dir / rel
        p.write_bytes(fn(p.read_bytes()))
    return step


def pre(cmd: list[str]) -> Callable:
    """Run a command in the case folder before the case's own (e.g. a partial run before finalize)."""
    def step(r: Run):
        rc, out, err = execute([fill(a, r.dir, r.fixture) for a in cmd], r.dir, env_for(r.dir), 300)
        if rc != 0:
            raise RuntimeError(f"setup command failed (exit {rc}): {last_line(err)}")
    return step


def put(rel: str, content: str | bytes) -> Callable:
    def step(r: Run):
        p = r.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return step


def rows(rel: str, fn: Callable[[list[list[str]]], list[list[str]]]) -> Callable:
    """A comma-split (no quoting: the synthetic files have no commas) edit of every line, header first."""
    return edit(rel, lambda t: "".join(",".join(f) + "\n" for f in fn([ln.split(",") for ln in t.splitlines()])))


def cell(rel: str, row: int, col: str, value: str) -> Callable:
    def fn(rs):
        rs[row + 1][rs[0].index(col)] = value
        return rs
    return rows(rel, fn)


def column(rel: str, col: str, fn: Callable[[int, str], str]) -> Callable:
    def go(rs):
        j = rs[0].index(col)
        for i, r in enumerate(rs[1:]):
            r[j] = fn(i, r[j])
        return rs
    return rows(rel, go)


def rename(col: str, new: str, *rels: str) -> tuple[Callable, ...]:
    return tuple(rows(rel, lambda rs: [[new if c == col else c for c in rs[0]], *rs[1:]]) for rel in rels)


def drop_header(rel: str) -> Callable:
    return edit(rel, lambda t: t.split("\n", 1)[1])


def truncate(rel: str, keep: float = 0.5) -> Callable:
    def step(r: Run):
        p = r.dir / rel
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])
    return step


def npy_value(rel: str, value: float) -> Callable:
    def step(r: Run):
        import numpy as np

        p = r.dir / rel
        a = np.load(p)
        a[0, 0] = value
        np.save(p, a)
    return step


def remove(*rels: str) -> Callable:
    def step(r: Run):
        for rel in rels:
            p = r.dir / rel
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return step


def selected(r: Run, exp: str, fold: int) -> str:
    """`checkpoints/<exp>/fold<k>/step<N>` of the fold's selected checkpoint."""
    import yaml

    doc = yaml.safe_load((r.dir / f"checkpoints/{exp}/selection.yaml").read_text())
    return f"checkpoints/{exp}/fold{fold}/step{doc['folds'][fold]['step']}"


def at_selected(exp: str, fold: int, make: Callable[[str], Callable]) -> Callable:
    """A step applied to a file of the fold's selected checkpoint: make(folder) -> step."""
    return lambda r: make(selected(r, exp, fold))(r)


def lock(rel: str, pid: Callable[[], int] | None, host: str | None = None, age_s: float = 0,
         text: str | None = None) -> Callable:
    """A `.lock` file naming `pid` on `host` (default: this machine), `age_s` seconds old."""
    def step(r: Run):
        p = r.dir / rel
        if text is None:
            doc = {"pid": pid(), "host": host or socket.gethostname(), "started": "2020-01-01 00:00:00",
                   "command": "python -m src run (fault campaign)"}
        p.write_text(json.dumps(doc) + "\n" if text is None else text)
        if age_s:
            t = time.time() - age_s
            os.utime(p, (t, t))
    return step


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def chmod(rel: str, mode: int = 0o555) -> Callable:
    def step(r: Run):
        p = r.dir / rel
        p.mkdir(parents=True, exist_ok=True)
        p.chmod(mode)
        r.cleanup.append(lambda: p.chmod(0o755))
    return step


def chmod_file(rel: str, mode: int = 0o000) -> Callable:
    def step(r: Run):
        p = r.dir / rel
        before = p.stat().st_mode
        p.chmod(mode)
        r.cleanup.append(lambda: p.chmod(before))
    return step


def old(rel: str, age_s: float = 3600) -> Callable:
    def step(r: Run):
        t = time.time() - age_s
        os.utime(r.dir / rel, (t, t))
    return step


def move_data(to: str, decoy: str | None = None) -> Callable:
    """data/ moved to `to`; `decoy`: a valid competition with other test ids (what a misread path would find)."""
    def step(r: Run):
        dest = r.dir / to
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(r.dir / "data", dest)
        if decoy:
            shutil.copytree(dest, r.dir / decoy)
            for name in ("test.csv", "sample_submission.csv"):
                p = r.dir / decoy / name
                p.write_text(p.read_text().replace("te-", "decoy-"))
    return step


# ---- case checks -----------------------------------------------------------------------------------------------

def says(text: str) -> Callable:
    return lambda r: "" if text in r.out + r.err else f"output lacks {text!r}"


def lacks(text: str) -> Callable:
    return lambda r: f"output says {text!r}" if text in r.out + r.err else ""


def gone(*rels: str) -> Callable:
    return lambda r: next((f"{rel} is still there" for rel in rels if (r.dir / rel).exists()), "")


def present(*rels: str) -> Callable:
    return lambda r: next((f"{rel} is missing" for rel in rels if not (r.dir / rel).exists()), "")


def kept(*rels: str) -> Callable:
    """The files are as they were before the command (size and mtime)."""
    def check(r: Run) -> str:
        for rel in rels:
            p = r.dir / rel
            if not p.is_file() or (p.stat().st_size, p.stat().st_mtime_ns) != r.before.get(rel):
                return f"{rel} was {'removed' if not p.is_file() else 'rewritten'}"
        return ""
    return check


def picked(exp: str, fold: int, step: int) -> Callable:
    def check(r: Run) -> str:
        import yaml

        entry = yaml.safe_load((r.dir / f"checkpoints/{exp}/selection.yaml").read_text())["folds"][fold]
        return "" if entry["step"] == step and entry["rule"] == "manual" else f"selection.yaml has {entry}"
    return check


def all_of(*checks: Callable) -> Callable:
    return lambda r: next((why for why in (c(r) for c in checks) if why), "")


def if_ok(check: Callable) -> Callable:
    return lambda r: check(r) if r.rc == 0 else ""


def submission_problem(sub: Path, sample: Path) -> str:
    """Why `sub` is not a valid submission for `sample` ("" if it is)."""
    if not sub.is_file():
        return f"no submission {sub.name}"

    def table(p: Path) -> list[list[str]]:
        return [row for row in csv.reader(io.StringIO(p.read_bytes().decode("utf-8-sig"), newline="")) if row]

    try:
        got, want = table(sub), table(sample)
    except (UnicodeDecodeError, csv.Error) as e:
        return f"submission unreadable: {e}"
    if got[0] != want[0]:
        return f"submission header {got[0]} != sample's {want[0]}"
    if [row[0] for row in got[1:]] != [row[0] for row in want[1:]]:
        return "submission ids differ from the sample's"
    bad = [row for row in got if len(row) != len(got[0])]
    bad += [v for row in got[1:] for v in row[1:] if v not in ("0", "1")]
    return f"submission values not 0/1: {bad[0]!r}" if bad else ""


# ---- the cases -------------------------------------------------------------------------------------------------

def src(*args: str) -> list[str]:
    return [PY, "-m", "src", *args]


def tfidf(*over: str, cmd: str = "run") -> list[str]:
    return src(cmd, *TFIDF, *over)


def tiny(*over: str, cmd: str = "run", config: str = "tiny") -> list[str]:
    return src(cmd, "--config", f"{{fixture}}/{config}.yaml", *over)


def train_sh(*args: str, config: str = str(ROOT / "configs/tfidf.yaml")) -> list[str]:
    return ["bash", str(ROOT / "train.sh"), config, *TSH, *args]


def nobody_cannot_run_python(root: bool) -> str:
    """Why train.sh cannot run as uid NOBODY here ("" if it can, or if the campaign is not root)."""
    if not root or not shutil.which("setpriv"):
        return ""
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "bash", "-c",
                            'command -v "$0"', PY], capture_output=True)
    return "" if probe.returncode == 0 else f"uid {NOBODY} cannot run {PY} from bash here"


def cases() -> list[Case]:
    C: list[Case] = []
    add = lambda tag, name, cmd, **kw: C.append(Case(tag, name, cmd, **kw))  # noqa: E731
    root = os.geteuid() == 0

    # malformed CSVs: every error leaves the finished run of the same exp as it was
    bad = lambda name, *setup, expect_in="", **kw: add("csv", name, tfidf(), setup=setup, expect_in=expect_in, **kw)
    good = lambda name, *setup, **kw: add("csv", name, tfidf(), setup=setup, expect="ok", base="data", **kw)
    either = lambda name, *setup, **kw: add("csv", name, tfidf(), setup=setup, expect="either", base="data", **kw)
    for rel in (TR, TE, SS):
        f = Path(rel).stem
        bad(f"sep-semicolon-{f}", edit(rel, lambda t: t.replace(",", ";")), expect_in="';'")
        bad(f"sep-tab-{f}", edit(rel, lambda t: t.replace(",", "\t")), expect_in="tab")
        bad(f"trailing-commas-{f}", edit(rel, lambda t: t.replace("\n", ",\n").replace(",\n", "\n", 1)),
            expect_in="trailing comma")
        bad(f"trailing-comma-header-{f}", edit(rel, lambda t: t.replace("\n", ",\n")), expect_in="no name")
        bad(f"no-header-{f}", drop_header(rel), expect_in=Path(rel).name)
        bad(f"empty-{f}", put(rel, b""), expect_in="empty")
        bad(f"header-only-{f}", edit(rel, lambda t: t.split("\n", 1)[0] + "\n"), expect_in="no rows")
        bad(f"latin1-{f}", raw(rel, lambda b: b.replace(b"-00003", b"\xe9-00003")), expect_in="UTF-8")
        bad(f"missing-{f}", remove(rel), expect_in=Path(rel).name)
        good(f"bom-{f}", edit(rel, lambda t: "\ufeff" + t))
        good(f"crlf-{f}", edit(rel, lambda t: t.replace("\n", "\r\n")))
    bad("sep-pipe-test", edit(TE, lambda t: t.replace(",", "|")), expect_in="'|'")
    bad("utf16-train", raw(TR, lambda b: b.decode().encode("utf-16")), expect_in="UTF-8")
    bad("extra-field-train", cell(TR, 7, "trust", "0,1"), expect_in="line 9")
    bad("missing-field-train", rows(TR, lambda rs: [*rs[:5], rs[5][:-1], *rs[6:]]), expect_in="line 6")
    bad("extra-field-test", cell(TE, 3, "Tweet", "joyy,x"), expect_in="line 5")
    bad("dup-column-train", rows(TR, lambda rs: [r + [r[2]] for r in rs]), expect_in="twice")
    bad("dup-label-train-and-sample", rows(TR, lambda rs: [r + [r[2]] for r in rs]),
        rows(SS, lambda rs: [r + [r[1]] for r in rs]), expect_in="twice")
    bad("empty-column-name-sample", rows(SS, lambda rs: [[*rs[0][:2], "", *rs[0][3:]], *rs[1:]]),
        expect_in="no name")
    for name in ("id", "fold", "_row"):
        bad(f"label-named-{name}", *rename("trust", name, TR, SS), expect_in=f"'{name}'")
    good("id-column-named-id", *rename("ID", "id", TR, TE, SS))
    either("text-column-named-fold", *rename("Tweet", "fold", TR, TE))
    either("id-column-named-fold", *rename("ID", "fold", TR, TE, SS))
    bad("text-column-named-like-label", *rename("Tweet", "anger", TR, TE), expect_in="anger")
    good("bom-crlf-all", *(edit(rel, lambda t: "\ufeff" + t.replace("\n", "\r\n")) for rel in (TR, TE, SS)))
    bad("unbalanced-quote-train", cell(TR, 5, "Tweet", '"joyy angery'), expect_in="quote")
    bad("unbalanced-quote-test", cell(TE, 5, "Tweet", '"joyy angery'), expect_in="quote")
    good("quoted-comma-newline-text", cell(TR, 3, "Tweet", '"joyy, angery\nfeary ""x"""'),
         cell(TE, 3, "Tweet", '"a, b\nc"'))
    bad("empty-text-train", cell(TR, 4, "Tweet", ""), expect_in="tr-00004")
    bad("blank-text-train", cell(TR, 4, "Tweet", "   "), expect_in="tr-00004")
    bad("quoted-empty-text-test", cell(TE, 4, "Tweet", '""'), expect_in="te-00004")
    words = ["NA", "nan", "null", "N/A", "007", "1e5", "True", "-", "0", "NULL", "#N/A", "None"]
    good("number-like-texts", column(TR, "Tweet", lambda i, v: words[i] if i < len(words) else v),
         column(TE, "Tweet", lambda i, v: words[i] if i < len(words) else v))
    good("long-text", cell(TR, 2, "Tweet", "joyy " * 40000), cell(TE, 2, "Tweet", "angery " * 40000))
    good("unicode-texts", cell(TR, 2, "Tweet", "joyy 😀 مرحبا ünïcödé"), cell(TE, 2, "Tweet", "\u200b angery \u202e"))
    either("nul-byte-text", cell(TR, 2, "Tweet", "joyy \x00 x"))
    bad("dup-ids-train", cell(TR, 1, "ID", "tr-00000"), expect_in="tr-00000")
    bad("dup-ids-test", cell(TE, 1, "ID", "te-00000"), cell(SS, 1, "ID", "te-00000"), expect_in="te-00000")
    bad("dup-ids-sample", cell(SS, 1, "ID", "te-00000"), expect_in="te-00000")
    bad("empty-id-train", cell(TR, 2, "ID", ""), expect_in="empty ids")
    bad("id-space-test-only", cell(TE, 3, "ID", " te-00003"), expect_in="spaces")
    bad("test-ids-differ", cell(SS, 2, "ID", "te-99999"), expect_in="te-99999")
    bad("sample-extra-row", edit(SS, lambda t: t + "te-99999,0,0,0,0\n"), expect_in="te-99999")
    ids = ["7", "07", "007", "0007", "1e5", "1E5", "100000", "NA", "nan", "null", "True", "00", "0", "-0", "+1",
           "1.0", "1", " 5", "5 ", "id 9"]
    good("ids-number-like-test", column(TE, "ID", lambda i, v: ids[i]), column(SS, "ID", lambda i, v: ids[i]))
    good("ids-leading-zeros-train", column(TR, "ID", lambda i, v: "0" * (i % 4) + str(i // 4)))
    good("sample-order-shuffled", rows(SS, lambda rs: [rs[0], *reversed(rs[1:])]))
    good("sample-values-nonzero", column(SS, "joy", lambda i, v: "1"))
    good("labels-1.0", column(TR, "anger", lambda i, v: v + ".0"))
    good("labels-true-false", column(TR, "joy", lambda i, v: "True" if v == "1" else "False"))
    for value in ("2", "-1", "", "yes", "0.5", "NA"):
        bad(f"label-{value or 'blank'}", cell(TR, 6, "fear", value), expect_in="fear")
    either("label-padded", cell(TR, 6, "fear", " 1"))
    either("label-never-positive", column(TR, "trust", lambda i, v: "0"))
    either("label-always-positive", column(TR, "trust", lambda i, v: "1"))
    good("labels-named-like-numbers", *sum((rename(a, b, TR, SS) for a, b in (("anger", "1"), ("joy", "2"),
                                                                              ("fear", "3"), ("trust", "4"))), ()))
    good("label-name-with-space", *rename("joy", "joy ful", TR, SS))
    bad("train-lacks-label", rows(TR, lambda rs: [r[:-1] for r in rs]), expect_in="trust")
    bad("train-extra-column", rows(TR, lambda rs: [rs[0] + ["extra"], *(r + ["0"] for r in rs[1:])]),
        expect_in="extra")
    bad("sample-no-labels", rows(SS, lambda rs: [r[:1] for r in rs]), expect_in="no label")
    bad("test-two-text-columns", rows(TE, lambda rs: [rs[0] + ["Other"], *(r + ["x"] for r in rs[1:])]),
        expect_in="text")
    bad("header-space-test", edit(TE, lambda t: t.replace("ID,Tweet", "ID, Tweet", 1)), expect_in="Tweet")
    bad("no-data-folder", remove("data"), expect_in="data")
    for over, hint in (("data.labels=[anger,joy]", "data.labels"), ("data.id_col=Tweet", "Tweet"),
                       ("data.text_col=ID", "text_col"), ("data.text_col=nope", "nope")):
        add("csv", over.replace("=", "-"), tfidf(over), expect_in=hint)

    # config and command-line mistakes: refused before anything is written
    cfg_bad = [
        ("tfidf.Cc=1", "tfidf.Cc"), ("foo.bar=1", "foo"), ("tfidf.C", "tfidf.C"), ("=1", ""),
        ("tfidf.C=abc", "tfidf.C"), ("tfidf.C=[1,", "tfidf.C"), ("tfidf.word_ngram=[1,", "word_ngram"),
        ("folds.run=[0", "folds.run"), ("tfidf.word_ngram={a: 1}", "word_ngram"), ("tfidf.C=", "tfidf.C"),
        ("folds.n_folds=2.5", "n_folds"), ("folds.n_folds=true", "n_folds"), ("folds.n_folds=1", "n_folds"),
        ("folds.n_folds=0", "n_folds"), ("folds.n_folds=100", "fold"), ("folds.seed=-1", "folds.seed"),
        ("tfidf.n_jobs=0", "n_jobs"), ("tfidf.n_jobs=-2", "n_jobs"), ("tfidf.C=0", "tfidf.C"),
        ("tfidf.C=-1", "tfidf.C"), ("tfidf.C=nan", "tfidf.C"), ("tfidf.C=inf", "tfidf.C"),
        ("tfidf.C=.inf", "tfidf.C"), ("tfidf.C=1e400", "tfidf.C"), ("tfidf.min_df=0", "min_df"),
        ("tfidf.min_df=1000", ""), ("tfidf.max_features=0", "max_features"),
        ("tfidf.word_ngram=[1]", "word_ngram"), ("tfidf.word_ngram=[2,1]", "word_ngram"),
        ("tfidf.word_ngram=[0,1]", "word_ngram"), ("tfidf.word_ngram=[1,2,3]", "word_ngram"),
        ("tfidf.word_ngram=[a,b]", "word_ngram"), ("tfidf.char_ngram=[5,2]", "char_ngram"),
        ("tfidf.classifier=foo", "classifier"), ("tfidf.class_weight=foo", "class_weight"),
        ("tfidf.char_analyzer=foo", "char_analyzer"), ("output.plots=maybe", "output.plots"),
        ("thresholds.mode=foo", "thresholds.mode"), ("thresholds.fixed=1.5", "thresholds.fixed"),
        ("thresholds.fixed=nan", "thresholds.fixed"), ("select.rule=foo", "select.rule"),
        ("model_type=foo", "model_type"), ("folds.run=[]", "names no fold"), ("folds.run=", "names no fold"),
        ("folds.run=[99]", "folds.run"), ("folds.run=[0,0]", "folds.run"), ("folds.run=[-1]", "folds.run"),
        ("folds.run=[a]", "folds.run"), ("folds.run=[0,1,2,3]", "folds.run"), ("exp=a/b", "exp"),
        ("exp=..", "exp"), ("exp=.x", "exp"), ("exp=a b", "exp"), ("exp=", "exp"), ("exp=../x", "exp"),
    ]
    for over, hint in cfg_bad:
        add("config", over or "(empty)", tfidf(over), expect_in=hint)
    add("config", "grid_C-empty", tfidf("tfidf.grid_search=true", "tfidf.grid_C=[]"), expect_in="grid_C")
    add("config", "grid_word_ngram-backwards", tfidf("tfidf.grid_search=true", "tfidf.grid_word_ngram=[[2,1]]"),
        expect_in="grid_word_ngram")
    tr_bad = [("train.lr=0", "train.lr"), ("train.lr=nan", "train.lr"), ("train.lr=inf", "train.lr"),
              ("train.lr=1e30", "train.lr"), ("train.batch_size=0", "batch_size"), ("train.max_steps=-1", "max_steps"),
              ("train.epochs=-1", "epochs"), ("lora.dropout=1", "lora.dropout"), ("train.ema=1", "train.ema"),
              ("model.max_length=0", "max_length"), ("train.scheduler=foo", "scheduler"), ("train.loss=foo", "loss"),
              ("train.precision=fp8", "precision"), ("model.method=foo", "method"),
              ("train.keep_metric=foo", "keep_metric"), ("train.lr=1e-3", "train.lr 3e-05 -> 0.001")]
    for over, hint in tr_bad:
        add("config", f"tiny-{over}", tiny(over), base="tr", expect_in=hint, timeout=120)
    add("config", "tiny-model-missing", tiny("model.name_or_path={dir}/no-such-model"), base="tr",
        expect_in="no-such-model")
    good_cfg = lambda name, *over, sub="submissions/tfidf.csv", **kw: add(  # noqa: E731
        "config", name, tfidf(*over), expect="ok", base="data", sub=sub, **kw)
    for exp in ("007", "true", "null", "1e5", "no"):
        good_cfg(f"exp-{exp}", f"exp={exp}", sub=f"submissions/{exp}.csv")
    good_cfg("thresholds-fixed", "thresholds.mode=fixed", "thresholds.fixed=0.5")
    good_cfg("thresholds-min-one", "thresholds.min_one=true")
    good_cfg("plots-on", "output.plots=true", check=present("checkpoints/tfidf/report"))
    for folder, decoy in (("d/comp #v2", "d/comp"), ("d/a: b", None), ("[x]", None), ("{x}", None), ("'q'", "q"),
                          ("null", "data"), ("007", "7"), ("d/- a", None)):
        good_cfg(f"data_dir-{folder}", f"data.data_dir={folder}", setup=(move_data(folder, decoy),), data=folder)
    good_cfg("submissions_dir-hash", "output.submissions_dir=subs #1", sub="subs #1/tfidf.csv")
    good_cfg("checkpoints_dir-colon", "output.checkpoints_dir=ck: x", check=present("ck: x/tfidf/oof.csv"))
    good_cfg("folds_dir-bracket", "folds.dir=[f]", check=present("[f]/data_k3_s42.csv"))
    for name in ("a/b", "..", "x #y"):
        add("config", f"data.name-{name}", tfidf(f"data.name={name}"), expect="either", base="data",
            check=if_ok(lambda r: "" if all(p.parent == r.dir / "folds" for p in (r.dir / "folds").rglob("*.csv"))
                        and any((r.dir / "folds").glob("*.csv")) else "fold file written outside folds/"))
    cfg_file = lambda name, content, hint="", **kw: add(  # noqa: E731
        "config", f"config-file-{name}", src("run", "--config", "bad.yaml", "data.data_dir=data", *OUTS,
                                             "tfidf.n_jobs=1"), setup=(put("bad.yaml", content),), expect_in=hint, **kw)
    add("config", "config-file-missing", src("run", "--config", "nope.yaml", *OUTS), expect_in="nope.yaml")
    cfg_file("syntax", "exp: [x\n", "YAML")
    cfg_file("list", "- a\n- b\n", "mapping")
    cfg_file("unknown-key", "tfidf:\n  Cc: 1\n", "tfidf.Cc")
    cfg_file("tab-indent", "tfidf:\n\tC: 1\n", "YAML")
    cfg_file("not-utf8", b"exp: caf\xe9\n", "bad.yaml")
    cfg_file("section-scalar", "tfidf: 3\n", "tfidf")
    cfg_file("empty", "", expect="ok", base="data", sub="submissions/bad.csv")

    # the command line: src's commands and train.sh
    add("cli", "unknown-command", src("frobnicate"), base="none", expect_in="frobnicate")
    add("cli", "run-config-no-value", src("run", "--config"), base="none", expect_in="--config")
    add("cli", "run-unknown-option", tfidf("--bogus"), expect_in="--bogus")
    add("cli", "predict-tfidf-config", tfidf(cmd="predict"), expect_in="model_type")
    add("cli", "checkpoints-list-unknown-exp", src("checkpoints", "list", "nope"), expect_in="nope")
    add("cli", "checkpoints-step-without-fold", src("checkpoints", "select", "tr", "--step", "1"), base="tr",
        expect_in="--fold")
    add("cli", "checkpoints-select-fold-9", src("checkpoints", "select", "tr", "--fold", "9", "--step", "1"),
        base="tr", expect_in="9")
    add("cli", "checkpoints-select-step-99", src("checkpoints", "select", "tr", "--fold", "0", "--step", "99"),
        base="tr", expect_in="99")
    add("cli", "checkpoints-list", src("checkpoints", "list", "tr"), base="tr", expect="ok", sub=None)
    add("cli", "checkpoints-select-manual", src("checkpoints", "select", "tr", "--fold", "0", "--step", "2"),
        base="tr", expect="ok", sub=None, check=picked("tr", 0, 2))
    add("cli", "folds-semicolon-data", src("folds", *TFIDF[:2], "data.data_dir=data", *OUTS),
        setup=(edit(TR, lambda t: t.replace(",", ";")),), expect_in="';'")
    add("cli", "folds-ok", src("folds", *TFIDF[:2], "data.data_dir=data", *OUTS), base="data", expect="ok", sub=None,
        check=present("folds/data_k3_s42.csv"))
    validate = lambda name, *setup, **kw: add(  # noqa: E731
        "cli", f"validate-{name}", src("validate", "bad.csv", SS),
        setup=(lambda r: shutil.copy2(r.dir / "submissions/tfidf.csv", r.dir / "bad.csv"), *setup), **kw)
    validate("ok", expect="ok", sub=None)
    validate("value-2", cell("bad.csv", 3, "joy", "2"), expect_in="bad.csv")
    validate("ids-differ", cell("bad.csv", 3, "ID", "te-99999"), expect_in="te-99999")
    validate("header", edit("bad.csv", lambda t: t.replace("trust", "trusty", 1)), expect_in="trusty")
    validate("missing-row", rows("bad.csv", lambda rs: rs[:-1]), expect_in="bad.csv")
    validate("missing-file", remove("bad.csv"), expect_in="bad.csv")
    sh = lambda name, *args, expect_in="", base="data", **kw: add(  # noqa: E731
        "cli", f"train.sh-{name}", train_sh(*args), expect_in=expect_in, base=base, merged=True, **kw)
    sh("folds-no-value", "--folds", expect_in="--folds needs a value")
    sh("folds-empty", "--folds", "", expect_in="--folds")
    sh("folds-backwards", "--folds", "3-1", expect_in="backwards")
    sh("folds-letter", "--folds", "a", expect_in="--folds")
    sh("folds-twice", "--folds", "0,0", expect_in="folds.run")
    sh("folds-out-of-range", "--folds", "7", expect_in="folds.run")
    sh("unknown-option", "--bogus", expect_in="--bogus")
    sh("stray-argument", "foo", expect_in="foo")
    sh("two-configs", str(ROOT / "configs/tfidf_cnb.yaml"), expect_in="two config")
    sh("folds.run-empty", "folds.run=[]", expect_in="names no fold")
    sh("n_jobs-0", "tfidf.n_jobs=0", expect_in="n_jobs")
    add("cli", "train.sh-config-missing", ["bash", str(ROOT / "train.sh"), "configs/nope.yaml"], base="none",
        merged=True, expect_in="nope.yaml")
    sh("num-processes-0", env={"NUM_PROCESSES": "0"}, expect_in="NUM_PROCESSES")
    sh("submit-without-competition", "--submit", expect_in="KAGGLE_COMPETITION")
    sh("log-dir-is-a-file", setup=(put("logfile", "x"),), env={"LOG_DIR": "{dir}/logfile"}, expect_in="log")
    sh("ok", expect="ok")
    sh("data_dir-hash", expect="ok", setup=(move_data("d/comp #v2", "d/comp"),), data="d/comp #v2",
       env={"DATA_DIR": "{dir}/d/comp #v2"})
    sh("log-dir-hash-space", expect="ok", env={"LOG_DIR": "{dir}/my logs #1"},
       check=lambda r: "" if any((r.dir / "my logs #1").glob("*.log")) else "no log in 'my logs #1'")
    sh("folds-partial-fresh", "--folds=0", expect="ok", sub=None,
       check=all_of(gone("submissions/tfidf.csv"), present("checkpoints/tfidf/partial/oof.csv")))
    ens = lambda name, *args, **kw: add("cli", f"ensemble-{name}", src("ensemble", *args), **kw)  # noqa: E731
    ens("ok", "tfidf", "cnb", "--out", "bl", "--trials", "20", expect="ok", sub="submissions/bl.csv")
    ens("out-slash", "tfidf", "cnb", "--out", "a/b", expect_in="a/b")
    ens("out-dotdot", "tfidf", "cnb", "--out", "..", expect_in="..")
    ens("unknown-run", "tfidf", "nope", "--out", "bl", expect_in="nope")
    ens("trials-negative", "tfidf", "cnb", "--out", "bl", "--trials", "-1", expect="either", sub="submissions/bl.csv")
    ens("out-is-input", "tfidf", "cnb", "--out", "tfidf", expect="either")

    # state faults in finished (or killed) run folders
    st = lambda name, *setup, cmd=None, **kw: add(  # noqa: E731
        "state", name, cmd or tfidf(cmd="finalize"), setup=setup, **kw)
    run_dir = "checkpoints/tfidf"
    for f in ("oof", "test"):
        rel = f"{run_dir}/{f}.csv"
        st(f"{f}.csv-truncated", truncate(rel), expect_in=f"{f}.csv")
        st(f"{f}.csv-empty", put(rel, b""), expect_in=f"{f}.csv")
        for value in ("nan", "inf", "2.0", "-0.1", "abc"):
            st(f"{f}.csv-{value}", cell(rel, 3, "joy", value), expect_in=f"{f}.csv")
        st(f"{f}.csv-no-label-column", rows(rel, lambda rs: [r[:-1] for r in rs]), expect_in="trust")
        st(f"{f}.csv-duplicate-row", rows(rel, lambda rs: [*rs, rs[1]]), expect_in=f"{f}.csv")
        st(f"{f}.csv-unknown-id", cell(rel, 0, "id", "zz-1"), expect_in=f"{f}.csv")
        st(f"{f}.csv-missing-row", rows(rel, lambda rs: rs[:-1]), expect_in=f"{f}.csv")
    st("oof.csv-nan-via-run", cell(f"{run_dir}/oof.csv", 3, "joy", "nan"), cmd=tfidf(), expect="ok")
    st("oof.csv-other-folds", column(f"{run_dir}/oof.csv", "fold", lambda i, v: str((int(v) + 1) % 3)),
       expect_in="fold")
    for f in ("metrics.json", "thresholds.json", "config.yaml", "per_label.csv"):
        st(f"{f}-truncated", truncate(f"{run_dir}/{f}"), expect="ok")
    st("config.yaml-garbage-ensemble", put("checkpoints/cnb/config.yaml", "exp: [\n"),
       cmd=src("ensemble", "tfidf", "cnb", "--out", "bl"), expect_in="config.yaml")
    st("cnb-oof-nan-ensemble", cell("checkpoints/cnb/oof.csv", 2, "fear", "nan"),
       cmd=src("ensemble", "tfidf", "cnb", "--out", "bl"), expect_in="oof.csv")
    st("fold-file-truncated", truncate("folds/data_k3_s42.csv"), cmd=tfidf(), expect_in="data_k3_s42.csv")
    st("fold-file-fold-7", cell("folds/data_k3_s42.csv", 3, "fold", "7"), cmd=tfidf(), expect_in="data_k3_s42.csv")
    st("fold-file-other-ids", cell("folds/data_k3_s42.csv", 3, "id", "zz-1"), cmd=tfidf(), expect_in="data_k3_s42")
    st("rerun-finished", cmd=tfidf(), expect="ok")
    lk = f"{run_dir}/.lock"
    st("lock-dead-pid", lock(lk, dead_pid), cmd=tfidf(), expect="ok", check=all_of(gone(lk), says("taking over")))
    st("lock-unreadable-old", lock(lk, None, text="{garbage", age_s=3600), cmd=tfidf(), expect="ok", check=gone(lk))
    st("lock-other-host-stale", lock(lk, os.getpid, host="elsewhere", age_s=3600), cmd=tfidf(), expect="ok",
       check=gone(lk))
    st("lock-live", lock(lk, os.getpid), cmd=tfidf(), expect_in="in use")
    st("lock-live-finalize", lock(lk, os.getpid), expect_in="in use")
    st("lock-live-other-host", lock(lk, lambda: 1, host="elsewhere"), cmd=tfidf(), expect_in="in use")
    st("lock-live-ensemble-out", lambda r: (r.dir / "checkpoints/bl").mkdir(), lock("checkpoints/bl/.lock", os.getpid),
       cmd=src("ensemble", "tfidf", "cnb", "--out", "bl"), expect_in="in use")
    for member, rel in (("cnb", "test.csv"), ("cnb", "oof.csv")):
        st(f"{member}-{rel}-missing-row-ensemble", rows(f"checkpoints/{member}/{rel}", lambda rs: rs[:-1]),
           cmd=src("ensemble", "tfidf", "cnb", "--out", "bl"), expect_in=rel)
    st("cnb-test.csv-2.0-ensemble", cell("checkpoints/cnb/test.csv", 2, "fear", "2.0"),
       cmd=src("ensemble", "tfidf", "cnb", "--out", "bl"), expect_in="test.csv")
    st("two-runs-at-once", cmd=[PY, "-c", TWICE_SCRIPT, *tiny("exp=both")], base="tr", expect="ok",
       sub="submissions/both.csv", check=says("outcomes:"))
    st("leftover-tmp-files", put(f"{run_dir}/.oof.csv.abc123.tmp", "id,fold\n"),
       put("submissions/.tfidf.csv.x1y2.tmp", "half"), put(f"{run_dir}/partial/.metrics.json.q.tmp", "{"),
       put("submissions/.write-probe.zz.tmp", "x"), old("submissions/.write-probe.zz.tmp"),
       put("submissions/.other.csv.k.tmp", "not ours"), cmd=tfidf(), expect="ok",
       check=all_of(gone(f"{run_dir}/.oof.csv.abc123.tmp", "submissions/.tfidf.csv.x1y2.tmp",
                         f"{run_dir}/partial/.metrics.json.q.tmp", "submissions/.write-probe.zz.tmp"),
                    present("submissions/.other.csv.k.tmp")))
    st("submission-is-a-directory", remove("submissions/tfidf.csv"), put("submissions/tfidf.csv/x", "x"),
       cmd=tfidf(), expect_in="tfidf.csv")

    tr = lambda name, *setup, cmd=None, sub="submissions/tr.csv", **kw: add(  # noqa: E731
        "state", f"tiny-{name}", cmd or tiny(), setup=setup, base="tr", sub=sub, **kw)
    tr("rerun-finished", expect="ok", check=says("already trained"))
    flip = lambda i, v: ("0" if v == "1" else "1") if i % 3 == 0 else v  # noqa: E731
    tr("train-labels-changed", column(TR, "anger", flip), expect="either", expect_in="data",
       check=if_ok(lacks("already trained")))
    tr("train-texts-changed", column(TR, "Tweet", lambda i, v: v + " joyy"), expect="either", expect_in="data",
       check=if_ok(lacks("already trained")))
    tr("test-texts-changed", column(TE, "Tweet", lambda i, v: v + " joyy"), expect="ok",
       check=says("computed for folds [0, 1, 2]"))
    tr("done.json-truncated", truncate("checkpoints/tr/fold0/done.json"), expect="either", expect_in="done.json")
    tr("metrics.json-truncated", truncate("checkpoints/tr/fold0/step1/metrics.json"), expect="either",
       expect_in="metrics.json")
    tr("valid_probs-truncated", at_selected("tr", 0, lambda d: truncate(f"{d}/valid_probs.npy")), expect="either",
       expect_in="valid_probs.npy")
    tr("valid_probs-nan", at_selected("tr", 1, lambda d: npy_value(f"{d}/valid_probs.npy", float("nan"))),
       expect="either", expect_in="valid_probs.npy")
    tr("model-truncated-predict", at_selected("tr", 0, lambda d: truncate(f"{d}/model.safetensors")),
       at_selected("tr", 0, lambda d: remove(f"{d}/test_probs.npy", f"{d}/test_probs.json")),
       cmd=tiny(cmd="predict"), expect="either", expect_in="model.safetensors")
    tr("test_probs-nan", at_selected("tr", 0, lambda d: npy_value(f"{d}/test_probs.npy", float("nan"))),
       cmd=tiny(cmd="predict"), expect="ok", check=says("computed for folds [0]"))
    tr("test_probs-2.0", at_selected("tr", 0, lambda d: npy_value(f"{d}/test_probs.npy", 2.0)),
       cmd=tiny(cmd="predict"), expect="ok")
    tr("test_probs-truncated", at_selected("tr", 0, lambda d: truncate(f"{d}/test_probs.npy")),
       cmd=tiny(cmd="predict"), expect="ok")
    tr("selection.yaml-truncated", truncate("checkpoints/tr/selection.yaml", 0.7), cmd=tiny(cmd="predict"),
       expect="either", expect_in="selection.yaml")
    tr("selection.yaml-step-99", edit("checkpoints/tr/selection.yaml", lambda t: re.sub(r"step: \d+", "step: 99", t,
                                                                                          count=1)),
       cmd=tiny(cmd="predict"), expect="either", expect_in="99")
    tr("checkpoints-list-metrics-truncated", truncate("checkpoints/tr/fold0/step1/metrics.json"),
       cmd=src("checkpoints", "list", "tr"), expect="either", sub=None, expect_in="metrics.json")
    tr("leftover-tmp-step", put("checkpoints/tr/fold0/.tmp-step5/model.safetensors", "half"),
       put("checkpoints/tr/fold1/step1/.model.safetensors.ab.tmp", "half"), expect="ok",
       check=gone("checkpoints/tr/fold0/.tmp-step5", "checkpoints/tr/fold1/step1/.model.safetensors.ab.tmp"))
    cut = lambda name, *setup, **kw: add(  # noqa: E731
        "state", f"killed-{name}", tiny(config="cut"), setup=setup, base="cut", sub="submissions/cut.csv", **kw)
    cut("resume", expect="ok", check=says("resuming at step 2"))
    cut("resume.pt-truncated", truncate("checkpoints/cut/fold0/step2/resume.pt"), expect="either",
        expect_in="resume.pt")
    cut("resume.pt-garbage", put("checkpoints/cut/fold0/step2/resume.pt", b"\x00garbage" * 8), expect="either",
        expect_in="resume.pt")
    cut("model-truncated", truncate("checkpoints/cut/fold0/step2/model.safetensors"), expect="either",
        expect_in="model.safetensors")
    cut("metrics.json-truncated", truncate("checkpoints/cut/fold0/step2/metrics.json"), expect="either",
        expect_in="metrics.json")
    cut("leftover-tmp-step", put("checkpoints/cut/fold0/.tmp-step3/model.safetensors", "half"), expect="ok",
        check=gone("checkpoints/cut/fold0/.tmp-step3"))

    # partial runs keep the complete run's files
    whole = [f"{run_dir}/{f}" for f in ("oof.csv", "test.csv", "metrics.json", "thresholds.json")]
    add("partial", "folds-0-on-finished", tfidf("folds.run=[0]"), expect="ok",
        check=all_of(kept("submissions/tfidf.csv", *whole), present(f"{run_dir}/partial/oof.csv")))
    add("partial", "folds-1-2-on-finished", tfidf("folds.run=[1,2]"), expect="ok",
        check=all_of(kept("submissions/tfidf.csv", *whole), present(f"{run_dir}/partial/oof.csv")))
    add("partial", "train.sh-folds-0-on-finished", train_sh("--folds", "0"), merged=True, expect="ok",
        check=all_of(kept("submissions/tfidf.csv", *whole), present(f"{run_dir}/partial/oof.csv")))
    add("partial", "tiny-folds-1-on-finished", tiny("folds.run=[1]"), base="tr", expect="ok", sub="submissions/tr.csv",
        check=all_of(kept("submissions/tr.csv", "checkpoints/tr/oof.csv", "checkpoints/tr/test.csv"),
                     says("already trained")))
    add("partial", "finalize-after-partial", tfidf("folds.run=[0]", cmd="finalize"), expect="ok",
        setup=(pre(tfidf("folds.run=[0]")),), check=kept("submissions/tfidf.csv", *whole))
    add("partial", "folds-0-fresh", tfidf("folds.run=[0]"), base="data", expect="ok", sub=None,
        check=all_of(gone("submissions/tfidf.csv", f"{run_dir}/oof.csv"), present(f"{run_dir}/partial/oof.csv")))

    # disk faults: unwritable output folders, found before any work (as an ordinary user: root writes anyway)
    ro = dict(unprivileged=True, skip="" if not root or shutil.which("setpriv") else "root without setpriv")
    add("disk", "read-only-submissions", tfidf(), setup=(chmod("submissions"),), expect_in="submissions", **ro)
    add("disk", "read-only-run-dir", tfidf(), setup=(chmod(run_dir),), expect_in=run_dir, **ro)
    add("disk", "read-only-checkpoints-new-exp", tfidf("exp=new"), setup=(chmod("checkpoints"),),
        expect_in="checkpoints", **ro)
    add("disk", "read-only-folds", tfidf(), base="data", setup=(chmod("folds"),), expect_in="folds", **ro)
    add("disk", "read-only-transformer-run", tiny("exp=tr2"), base="tr", setup=(chmod("submissions"),),
        expect_in="submissions", check=gone("checkpoints/tr2/fold0"), **ro)
    sh_ro = {**ro, "skip": ro["skip"] or nobody_cannot_run_python(root)}  # train.sh tests `command -v python`
    add("disk", "read-only-log-dir", train_sh(), base="data", merged=True, setup=(chmod("logs"),),
        env={"LOG_DIR": "{dir}/logs"}, expect_in="log", **sh_ro)
    add("disk", "unreadable-train", tfidf(), base="data", setup=(chmod_file(TR),), expect_in="train.csv", **ro)
    add("disk", "unreadable-data-folder", tfidf(), base="data", setup=(chmod_file("data", 0o000),),
        expect_in="data", **ro)
    add("disk", "unreadable-config", src("run", "--config", "c.yaml", "data.data_dir=data", *OUTS),
        setup=(put("c.yaml", "exp: c\n"), chmod_file("c.yaml")), base="data", expect_in="c.yaml", **ro)
    add("disk", "unreadable-fold-file", tfidf(), setup=(chmod_file("folds/data_k3_s42.csv"),),
        expect_in="data_k3_s42.csv", **ro)
    add("disk", "unreadable-checkpoint", tiny(cmd="predict"), base="tr",
        setup=(at_selected("tr", 0, lambda d: chmod_file(f"{d}/model.safetensors")),
               at_selected("tr", 0, lambda d: remove(f"{d}/test_probs.npy"))), expect_in="model.safetensors", **ro)
    add("disk", "read-only-data-ok", tfidf(), base="data", setup=(chmod("data"),), expect="ok", **ro)
    add("disk", "submissions-dir-is-a-file", tfidf("output.submissions_dir=subfile"), setup=(put("subfile", "x"),),
        expect_in="subfile")
    add("disk", "checkpoints-dir-is-a-file", tfidf("output.checkpoints_dir=ckfile"), setup=(put("ckfile", "x"),),
        expect_in="ckfile")
    add("disk", "run-dir-is-a-file", tfidf("exp=new"), setup=(put("checkpoints/new", "x"),),
        expect_in="checkpoints/new")
    add("disk", "folds-dir-is-a-file", tfidf("folds.dir=foldfile"), setup=(put("foldfile", "x"),),
        expect_in="foldfile")
    round3(add, root)
    return C


class Payload:
    """Unpickling it runs `touch marker` (what a crafted resume.pt in someone else's run folder could hold)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted_resume(rel: str, marker: str) -> Callable:
    """Replace a resume.pt by a torch.save file (the zip format a real one has) whose unpickling runs a command."""
    def step(r: Run):
        import torch

        torch.save({"optimizer": Payload(str(r.dir / marker)), "scheduler": {}, "rng": [], "position": {}},
                   r.dir / rel)
    return step


def labels_reversed_in_test_folds(rel: str) -> Callable:
    """A member's test_folds.npz written with its label columns in another order (a run made from data whose columns
    were ordered otherwise)."""
    def step(r: Run):
        import numpy as np

        with np.load(r.dir / rel, allow_pickle=False) as z:
            parts = dict(z)
        parts["labels"], parts["probs"] = parts["labels"][::-1], parts["probs"][:, :, ::-1]
        with open(r.dir / rel, "wb") as f:
            np.savez(f, **parts)
    return step


def remote_code(step_dir: str, marker: str) -> Callable:
    """A checkpoint whose config.json names its own code (auto_map), which would create `marker` if imported."""
    def step(r: Run):
        d = r.dir / step_dir
        cfg = json.loads((d / "config.json").read_text())
        cfg["auto_map"] = {"AutoConfig": "configuration_x.XConfig",
                           "AutoModelForSequenceClassification": "modeling_x.X"}
        (d / "config.json").write_text(json.dumps(cfg))
        for name in ("configuration_x.py", "modeling_x.py"):
            (d / name).write_text(f"open({str(r.dir / marker)!r}, 'w').write('ran')\n")
    return step


def round3(add_case: Callable, root: bool) -> None:
    """Issue 29's 92 cases found these failures; each is a case from now on (`--issue 29`)."""
    add = lambda *a, **kw: add_case(*a, issue=29, **kw)  # noqa: E731
    pwned = "pwned"
    add("security", "resume.pt-runs-code", tiny(config="cut"), base="cut",
        setup=(crafted_resume("checkpoints/cut/fold0/step2/resume.pt", pwned),), expect="ok",
        sub="submissions/cut.csv", check=all_of(gone(pwned), says("safe load refuses")))
    trusted = edit("checkpoints/tr/config.yaml", lambda t: t.replace("trust_remote_code: false",
                                                                     "trust_remote_code: true"))
    add("security", "run-config-trusts-remote-code", src("predict", "--exp", "tr"), base="tr", sub="submissions/tr.csv",
        setup=(trusted, at_selected("tr", 0, lambda d: remote_code(d, pwned)),
               at_selected("tr", 0, lambda d: remove(f"{d}/test_probs.npy"))), expect="ok",
        check=all_of(gone(pwned), says("names remote code")))
    add("security", "remote-code-asked-on-the-command-line-only", src("predict", "--exp", "tr"), base="tr",
        sub="submissions/tr.csv", setup=(trusted,), expect="ok", check=gone(pwned))

    flip = lambda i, v: ("0" if v == "1" else "1") if i % 3 == 0 else v  # noqa: E731
    stale = lambda name, *setup, cmd=None, hint="": add(  # noqa: E731
        "state", name, cmd or tfidf(cmd="finalize"), setup=setup, expect_in=hint)
    stale("finalize-after-train-labels-edited", column(TR, "anger", flip), hint="train labels changed")
    stale("finalize-after-test-texts-edited", column(TE, "Tweet", lambda i, v: v + " joyy"), hint="test texts")
    stale("finalize-exp-after-train-texts-edited", column(TR, "Tweet", lambda i, v: v + " joyy"),
          cmd=src("finalize", "--exp", "tfidf", "data.data_dir=data", *OUTS[2:]), hint="train texts")
    stale("ensemble-member-made-from-other-data", column(TE, "Tweet", lambda i, v: v + " joyy"),
          cmd=src("ensemble", "tfidf", "cnb", "--out", "bl", "data.data_dir=data"), hint="member 'tfidf'")
    stale("stack-member-made-from-other-data", column(TR, "anger", flip),
          cmd=src("stack", "tfidf", "cnb", "--out", "st", "data.data_dir=data"), hint="train labels")
    stale("teacher-made-from-other-data", column(TR, "anger", flip),
          cmd=tfidf("exp=student", "teacher.exp=cnb", "teacher.mode=hard"), hint="member 'cnb'")
    add("config", "config-file-duplicate-section", src("run", "--config", "bad.yaml", "data.data_dir=data", *OUTS),
        setup=(put("bad.yaml", "tfidf:\n  C: 1\ntfidf:\n  C: 2\n"),), expect_in="appears twice")
    add("state", "failed-rerun-keeps-config.yaml", tfidf("tfidf.grid_search=true", "tfidf.grid_cv=1000"),
        expect_in="grid_cv")
    add("state", "finalize-exp-of-a-moved-run", src("finalize", "--exp", "tfidf", "output.checkpoints_dir=moved/ck"),
        setup=(lambda r: shutil.copytree(r.dir / "checkpoints", r.dir / "moved/ck"),
               lambda r: shutil.copytree(r.dir / "folds", r.dir / "moved/folds")),
        expect="ok", sub="moved/submissions/tfidf.csv", check=says("was moved from"))
    add("state", "blend-member-labels-in-another-order", src("ensemble", "tfidf", "cnb", "--out", "bl"),
        setup=(rows("checkpoints/cnb/oof.csv", lambda rs: [[r[0], r[1], *reversed(r[2:])] for r in rs]),
               rows("checkpoints/cnb/test.csv", lambda rs: [[r[0], *reversed(r[1:])] for r in rs]),
               labels_reversed_in_test_folds("checkpoints/cnb/test_folds.npz")),
        expect="ok", sub="submissions/bl.csv")

    lk = lambda rel: lock(rel, os.getpid)  # noqa: E731 (a live holder: this campaign's own pid)
    add("lock", "pack-while-locked", src("pack", "tr", "--out", "p"), base="tr", setup=(lk("checkpoints/tr/.lock"),),
        expect_in="in use")
    add("lock", "select-while-a-fold-trains", src("checkpoints", "select", "tr", "--fold", "0", "--step", "1"),
        base="tr", setup=(lk("checkpoints/tr/.lock-fold1"),), expect_in="in use")
    add("lock", "ensemble-member-locked", src("ensemble", "tfidf", "cnb", "--out", "bl"),
        setup=(lk("checkpoints/cnb/.lock"),), expect_in="in use")
    add("lock", "stack-member-locked", src("stack", "tfidf", "cnb", "--out", "st"),
        setup=(lk("checkpoints/cnb/.lock"),), expect_in="in use")
    add("lock", "teacher-locked", tfidf("exp=student", "teacher.exp=cnb", "teacher.mode=hard"),
        setup=(lk("checkpoints/cnb/.lock"),), expect_in="in use")

    add("kill", "resume_state-false-cut-restarts", tiny("train.resume_state=false", config="cut"),
        base="cut", setup=(remove("checkpoints/cut/fold0/step2/resume.pt"),), expect="ok", sub="submissions/cut.csv",
        check=says("cut short with train.resume_state=false"))

    add("cli", "progress-interval-abc", tfidf(), env={"PROGRESS_INTERVAL": "abc"}, expect_in="PROGRESS_INTERVAL")
    add("cli", "train.sh-progress-interval-abc", train_sh(), base="data", merged=True,
        env={"PROGRESS_INTERVAL": "abc"}, expect_in="PROGRESS_INTERVAL")
    for tol in ("nan", "-5", "inf"):
        add("cli", f"select-tolerance-{tol}", src("checkpoints", "select", "tr", "--tolerance", tol), base="tr",
            expect_in="tolerance")
    add("config", "tiny-max_length-past-positions", tiny("model.max_length=500"), base="tr",
        expect_in="model.max_length=500")
    add("config", "tiny-max_steps-1e12", tiny("exp=big", "train.max_steps=1000000000000", "folds.run=[0]"),
        base="tr", expect_in="max_steps", timeout=60)
    add("config", "tiny-wandb-without-credentials", tiny("train.report_to=wandb"), base="tr",
        env={"WANDB_MODE": ""}, expect_in="wandb")
    add("cli", "predict-exp-other-data-writes-no-fold-file", src("predict", "--exp", "tr", "data.data_dir=other",
                                                                 "folds.dir=folds"),
        base="tr", setup=(lambda r: shutil.copytree(r.dir / "data", r.dir / "other"),
                          column("other/train.csv", "anger", flip), rows("other/train.csv", lambda rs: rs[:-3])),
        expect_in="holds a run made from")
    add("cli", "rerun-after-sample-labels-reordered", tfidf(),
        setup=(rows(SS, lambda rs: [[r[0], *reversed(r[1:])] for r in rs]),
               rows(TR, lambda rs: [[*r[:2], *reversed(r[2:])] for r in rs])), expect_in="order of its label columns")
    add("cli", "rerun-after-ids-renamed", tfidf(), setup=(column(TR, "ID", lambda i, v: "x" + v),),
        expect_in="renamed")
    add("data", "ids-differ-in-unicode-form-only", tfidf(), base="data",
        setup=(cell(TE, 2, "ID", "caf\u00e9"), cell(SS, 2, "ID", "cafe\u0301")), expect_in="Unicode form")
    add("cli", "exp-leading-dash", tfidf("exp=-x"), base="data", expect_in="exp")
    add("cli", "exp-with-equals", tfidf("exp=a=b"), base="data", expect_in="exp")
    add("data", "label-named-rows", src("folds", *TFIDF[:2], "data.data_dir=data", *OUTS), base="data", sub=None,
        setup=rename("trust", "rows", TR, SS), expect="ok", check=says("(rows)"))


# ---- fixtures --------------------------------------------------------------------------------------------------

TWICE_SCRIPT = """
import subprocess, sys, time
# The same run started twice, 0.5 s apart: each must either finish or stop with the lock's one-line error.
procs = []
for _ in range(2):
    procs.append(subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    time.sleep(0.5)
outcomes = []
for p in procs:
    out, err = p.communicate()
    last = ([ln for ln in err.splitlines() if ln.strip()] or [""])[-1]
    ok = p.returncode == 0 or (p.returncode == 2 and last.startswith("error:") and "in use" in last)
    outcomes.append(f"exit {p.returncode}" + ("" if p.returncode == 0 else f" ({last[:120]})"))
    if not ok or "Traceback" in err:
        print("bad outcome:", outcomes[-1], err[-2000:], file=sys.stderr)
        sys.exit(1)
print("outcomes:", "; ".join(outcomes))
"""

CUT_SCRIPT = """
import sys
from src.config import load_config
from src.data import load_competition
from src.folds import ensure_folds
from src.rundir import RunDir
from src.train import train_folds


class Stop(Exception):
    pass


def stop(record):
    if record["step"] == 2:
        raise Stop


cfg = load_config(sys.argv[1])
comp = load_competition(cfg.data)
folds, _ = ensure_folds(cfg, comp, verbose=False)
try:
    train_folds(cfg, comp, folds, RunDir.of(cfg), callbacks=(stop,))
except Stop:
    pass
"""


def env_for(d: Path, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "KAGGLE_COMPETITION", "KAGGLE_USERNAME",
                                                             "KAGGLE_KEY", "WANDB_API_KEY")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled", USE_SYSTEM_PYTHON="1",
               PYTHON=PY, NUM_PROCESSES="1", LOG_DIR=str(d / "logs"), KAGGLE_CONFIG_DIR=str(d / "no-kaggle"))
    env.update(extra or {})
    return env


def execute(cmd: list[str], cwd: Path, env: dict, timeout: float, merged: bool = False) -> tuple[int, str, str]:
    """Run `cmd` in its own process group (killed whole on timeout); returns (rc, stdout, stderr)."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if merged else subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return -9, out.decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")
    return p.returncode, out.decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    return lines[-1] if lines else ""


def build_fixtures(root: Path, bases: set[str], jobs: int) -> dict[str, Path | str]:
    """One folder per base (a str in place of a folder: why it could not be built)."""
    sys.path.insert(0, str(ROOT))
    from src.smoke import make_competition, make_frame, tiny_model

    root.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path | str] = {}
    if bases & {"tr", "cut"}:
        model = tiny_model("bert", root / "model", make_frame(N_TRAIN)["Tweet"].tolist())
        common = {"model_type": "transformer", "data": {"data_dir": "data"},
                  "folds": {"n_folds": 3, "dir": "folds"},
                  "model": {"name_or_path": str(model), "max_length": 32, "dtype": "float32"},
                  "train": {"max_steps": 2, "eval_every": 1, "batch_size": 8, "eval_batch_size": 32,
                            "precision": "no", "log_every": 1},
                  "output": {"checkpoints_dir": "checkpoints", "submissions_dir": "submissions", "plots": False}}
        (root / "tiny.yaml").write_text(json.dumps({"exp": "tr", **common}))  # JSON is YAML
        common["train"]["max_steps"] = 4
        (root / "cut.yaml").write_text(json.dumps({"exp": "cut", **common}))
    steps = {"none": [], "data": [], "tfidf": [tfidf(), src("run", "--config", str(ROOT / "configs/tfidf_cnb.yaml"),
                                                             "exp=cnb", *TFIDF[2:])],
             "tr": [tiny()], "cut": [[PY, "-c", CUT_SCRIPT, str(root / "cut.yaml")]]}

    def build(base: str) -> None:
        d = root / base
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        if base != "none":
            make_competition(d / "data", n_train=N_TRAIN, n_test=N_TEST)
        for cmd in steps[base]:
            cmd = [a.replace("{fixture}", str(root)) for a in cmd]
            rc, out, err = execute(cmd, d, env_for(d), 600)
            if rc != 0:
                made[base] = f"fixture '{base}' failed (exit {rc}): {last_line(err) or last_line(out)}"
                return
        if base == "cut" and not (d / "checkpoints/cut/fold0/step2/resume.pt").is_file():
            made[base] = "fixture 'cut' has no fold0/step2/resume.pt"
            return
        shutil.rmtree(d / "logs", ignore_errors=True)
        made[base] = d

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(build, sorted(bases)))
    return made


# ---- running and judging ---------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file under `root` (train.sh's logs/ left out)."""
    snap = {}
    for dirpath, dirnames, files in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != "logs"]
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            snap[os.path.relpath(os.path.join(dirpath, f), root)] = (st.st_size, st.st_mtime_ns)
    return snap


def changes(before: dict, after: dict) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = [f"{what} {', '.join(names[:3])}{f' (+{len(names) - 3})' if len(names) > 3 else ''}"
             for what, names in (("wrote", added), ("removed", removed), ("changed", changed)) if names]
    return "; ".join(parts)


def judge(r: Run) -> str:
    """Why the case failed ("" if it passed): the generic checks, then the case's own."""
    c = r.case
    err = r.out if c.merged else r.err
    if "Traceback (most recent call last)" in err:
        return "traceback in stderr"
    if r.rc == 2 and c.expect in ("error", "either"):
        last = last_line(err)
        if not last.startswith("error:"):
            return "exit 2 without a last line 'error: ...'"
        if c.expect_in and c.expect_in not in last:
            return f"the error does not mention {c.expect_in!r}"
        diff = changes(r.before, snapshot(r.dir))
        if diff:
            return f"error, but files changed: {diff}"
    elif r.rc == 0 and c.expect in ("ok", "either"):
        if c.sub:
            why = submission_problem(r.dir / c.sub, r.dir / c.data / "sample_submission.csv")
            if why:
                return why
    else:
        want = {"error": "2 (a one-line error)", "ok": "0", "either": "0 or 2"}[c.expect]
        return "timed out" if r.rc == -9 else f"exit {r.rc}, expected {want}"
    return c.check(r) if c.check else ""


def fill(s: str, d: Path, fixture: Path) -> str:
    return s.replace("{dir}", str(d)).replace("{fixture}", str(fixture))


def run_case(case: Case, i: int, fixtures: dict, fixture_root: Path, cases_dir: Path, keep: bool) -> dict:
    t0 = time.time()
    res = {"tag": case.tag, "name": case.name, "expect": case.expect, "base": case.base, "rc": None, "reason": "",
           "last_line": "", "command": " ".join(case.cmd)}
    if case.skip:
        return {**res, "status": "SKIP", "reason": case.skip, "seconds": 0.0}
    base = fixtures.get(case.base)
    if not isinstance(base, Path):
        return {**res, "status": "FAIL", "reason": str(base), "seconds": 0.0}
    d = cases_dir / f"{i:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', case.tag + '-' + case.name)}"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(base, d, symlinks=True)
    r = Run(case, d, fixture_root)
    try:
        for step in case.setup:
            step(r)
        r.before = snapshot(d)
        cmd = [fill(a, d, fixture_root) for a in case.cmd]
        env = env_for(d, {k: fill(v, d, fixture_root) for k, v in case.env.items()})
        if case.unprivileged and os.geteuid() == 0:
            for path in [d, *d.rglob("*")]:
                os.lchown(path, NOBODY, NOBODY)
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
            home = Path(tempfile.gettempdir()) / f"faults-home-{NOBODY}"  # caches there, not in the case folder
            home.mkdir(exist_ok=True)
            os.chown(home, NOBODY, NOBODY)
            env.update(HOME=str(home), MPLCONFIGDIR=str(home / "mpl"))
        r.rc, r.out, r.err = execute(cmd, d, env, case.timeout, case.merged)
        reason = judge(r)
    except Exception as e:  # a broken setup step or check is a failed case, not a crashed campaign
        reason = f"campaign error: {type(e).__name__}: {e}"
    finally:
        for undo in r.cleanup:
            undo()
    res.update(status="FAIL" if reason else "PASS", rc=r.rc, reason=reason, seconds=round(time.time() - t0, 3),
               last_line=last_line(r.out if case.merged else r.err)[:300])
    if not reason and not keep:
        shutil.rmtree(d, ignore_errors=True)
    else:
        res["folder"] = str(d)
    return res


def line(res: dict) -> str:
    s = f"{res['status']:4}  {res['tag']:7}  {res['name']:42}  {res['seconds']:6.1f}s"
    if res["status"] == "FAIL":
        s += f"  {res['reason']}" + (f"  | {res['last_line']}" if res["last_line"] else "")
    elif res["status"] == "SKIP":
        s += f"  ({res['reason']})"
    return s


def summary(results: list[dict]) -> tuple[str, dict]:
    def count(rs):
        n = {s: sum(r["status"] == s for r in rs) for s in ("PASS", "FAIL", "SKIP")}
        return {"cases": len(rs), "passed": n["PASS"], "failed": n["FAIL"], "skipped": n["SKIP"]}

    def text(c):
        return (f"{c['cases']} cases, {c['passed']} passed, {c['failed']} failed"
                + (f", {c['skipped']} skipped" if c["skipped"] else ""))

    per_tag = {tag: count([r for r in results if r["tag"] == tag]) for tag in dict.fromkeys(r["tag"] for r in results)}
    total = count(results)
    lines = [text(total)] + [f"  {tag:7}  {text(c)}" for tag, c in per_tag.items()]
    return "\n".join(lines), {**total, "per_tag": per_tag}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="run the cases whose tag/name matches this regex")
    p.add_argument("--issue", type=int, default=0, help="run the cases the review of this issue added")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--jobs", type=int, default=2, help="cases run in parallel")
    p.add_argument("--out", default="", help="folder for fixtures and case folders (kept; default: a temp folder)")
    p.add_argument("--results", default="", help="results JSON (default: bench/results/faults.json for the whole "
                                                 "campaign, a temp file with --only: the committed record stays)")
    a = p.parse_args(argv)
    try:
        pattern = re.compile(a.only)
    except re.error as e:
        p.error(f"--only: {e}")
    todo = [c for c in cases() if pattern.search(f"{c.tag}/{c.name}") and (not a.issue or c.issue == a.issue)]
    names = [f"{c.tag}/{c.name}" for c in todo]
    assert len(set(names)) == len(names), "duplicate case names"
    if a.list:
        for c in todo:
            print(f"{c.tag}/{c.name}  expect={c.expect}  base={c.base}" + (f"  skip: {c.skip}" if c.skip else ""))
        print(f"{len(todo)} cases")
        return 0
    if not todo:
        p.error(f"--only {a.only!r} / --issue {a.issue} match no case")
    out = Path(a.out).resolve() if a.out else Path(tempfile.mkdtemp(prefix="faults-"))
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)  # the read-only cases run as another user, who must reach their folders
    t0 = time.time()
    print(f"fault campaign: {len(todo)} cases, {a.jobs} jobs, folders in {out}", flush=True)
    fixtures = build_fixtures(out / "fixture", {c.base for c in todo if not c.skip}, a.jobs)
    print(f"fixtures built in {time.time() - t0:.0f} s", flush=True)
    printing = threading.Lock()

    def one(item):
        i, case = item
        res = run_case(case, i, fixtures, out / "fixture", out / "cases", keep=bool(a.out))
        with printing:
            print(line(res), flush=True)
        return res

    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results = list(pool.map(one, enumerate(todo)))
    text, counts = summary(results)
    wall = time.time() - t0
    print(f"\n{text}\nwall {wall:.0f} s")
    failed = [r for r in results if r["status"] == "FAIL"]
    if failed:
        print("failed: " + ", ".join(f"{r['tag']}/{r['name']}" for r in failed))
    results_path = Path(a.results or (ROOT / "bench/results/faults.json" if not (a.only or a.issue)
                                      else Path(tempfile.gettempdir()) / "faults-only.json"))
    results_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"summary": {**counts, "wall_s": round(wall, 1), "jobs": a.jobs, "only": a.only,
                       "command": " ".join([Path(PY).name, "bench/faults.py", *(argv if argv is not None
                                                                               else sys.argv[1:])])},
           "cases": results}
    results_path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results: {results_path}")
    if not a.out:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
