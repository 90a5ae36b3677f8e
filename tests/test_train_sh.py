"""train.sh on a tiny transformer config, end to end (folds -> train -> select -> predict -> submission -> upload
with a stand-in `kaggle`), including a run killed mid-fold (SIGKILL of its process group, as a preempted pod) whose
rerun skips the finished fold and resumes the unfinished one from its saved step."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from src.smoke import make_competition, make_frame, tiny_model
from src.submission import validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_run(tmp_path):
    """A synthetic competition, a tiny random BERT and a 2-fold config writing everything under tmp_path."""
    data = make_competition(tmp_path / "data", n_train=120, n_test=40)
    model = tiny_model("bert", tmp_path / "model", make_frame(120)["Tweet"].tolist())
    cfg = {"exp": "tiny", "model_type": "transformer", "data": {"data_dir": str(data)},
           "folds": {"n_folds": 2, "dir": str(tmp_path / "folds")},
           "model": {"name_or_path": str(model), "max_length": 32},
           "train": {"max_steps": 40, "eval_every": 10, "batch_size": 8, "log_every": 5, "keep_top_k": 0},
           "output": {"checkpoints_dir": str(tmp_path / "checkpoints"),
                      "submissions_dir": str(tmp_path / "submissions"), "plots": False}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    fake_bin = tmp_path / "bin"  # a stand-in `kaggle` that records its arguments
    fake_bin.mkdir()
    (fake_bin / "kaggle").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/kaggle-args\n')
    (fake_bin / "kaggle").chmod(0o755)
    env = {**os.environ, "USE_SYSTEM_PYTHON": "1", "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs"),
           "NUM_PROCESSES": "1", "OMP_NUM_THREADS": "1", "PATH": f"{fake_bin}:{os.environ['PATH']}",
           "KAGGLE_COMPETITION": "some-competition", "KAGGLE_USERNAME": "user", "KAGGLE_KEY": "key"}
    return tmp_path, env


def train_sh(tmp_path, env, *args) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(ROOT / "train.sh"), str(tmp_path / "tiny.yaml"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def steps(fold_dir: Path) -> dict[int, float]:
    """step -> mtime of metrics.json for the fold's finished checkpoints."""
    return {int(d.name[4:]): (d / "metrics.json").stat().st_mtime_ns
            for d in fold_dir.glob("step*") if (d / "metrics.json").is_file()}


def test_killed_run_resumes_and_submits(tiny_run):
    tmp_path, env = tiny_run
    run = tmp_path / "checkpoints" / "tiny"
    proc = train_sh(tmp_path, env)
    deadline = time.time() + 240
    while not steps(run / "fold1") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # a preempted pod: nothing gets to clean up
    proc.wait()
    assert (run / "fold0" / "done.json").is_file(), "fold 0 should have finished before the kill"
    assert not (run / "fold1" / "done.json").is_file(), "fold 1 finished before the kill: nothing to resume"
    fold0, fold1 = steps(run / "fold0"), steps(run / "fold1")
    saved = max(s for s in fold1 if (run / "fold1" / f"step{s}" / "resume.pt").is_file())
    assert not (tmp_path / "submissions" / "tiny.csv").exists()

    rerun = train_sh(tmp_path, env, "--resume", "--submit")
    assert rerun.wait(timeout=300) == 0
    logs = sorted((tmp_path / "logs").glob("tiny-*.log"))
    assert len(logs) == 2, logs  # one log per run
    log = logs[-1].read_text()
    assert "fold 0: already trained" in log
    assert re.search(rf"\[tiny\] fold 1: .*; resuming at step {saved} from ", log)
    assert steps(run / "fold0") == fold0, "the finished fold was trained again"
    assert all(steps(run / "fold1")[s] == t for s, t in fold1.items()), "fold 1's saved checkpoints were rewritten"
    assert max(steps(run / "fold1")) == 40 and (run / "fold1" / "done.json").is_file()
    history = [json.loads(line) for line in (run / "fold1" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if h.get("event") == "resume"] == [saved]

    sub = pd.read_csv(tmp_path / "submissions" / "tiny.csv", dtype={"ID": str})
    validate(sub, pd.read_csv(tmp_path / "data" / "sample_submission.csv", dtype={"ID": str}))
    assert json.loads((run / "metrics.json").read_text())["complete"]
    assert set(yaml.safe_load((run / "selection.yaml").read_text())["folds"]) == {0, 1}
    args = (tmp_path / "kaggle-args").read_text().split()
    assert args[:4] == ["competitions", "submit", "-c", "some-competition"]
    assert args[4:6] == ["-f", str(tmp_path / "submissions" / "tiny.csv")]


def test_submit_checks_credentials_before_training(tiny_run):
    tmp_path, env = tiny_run
    cmd = ["bash", str(ROOT / "train.sh"), str(tmp_path / "tiny.yaml"), "--submit"]
    no_creds = {**{k: v for k, v in env.items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")}, "HOME": str(tmp_path)}
    out = subprocess.run(cmd, env=no_creds, capture_output=True, text=True)
    assert out.returncode == 2 and "needs Kaggle credentials" in out.stderr
    out = subprocess.run(cmd, env={**env, "KAGGLE_COMPETITION": ""}, capture_output=True, text=True)
    assert out.returncode == 2 and "needs KAGGLE_COMPETITION" in out.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "logs").exists()  # refused before anything


def test_several_processes_train_then_one_predicts(tiny_run):
    """NUM_PROCESSES=2 (what several GPUs give): the folds train in 2 DDP processes through accelerate launch (CPU
    processes here), then selection, prediction and the submission run once, in one process."""
    tmp_path, env = tiny_run
    out = subprocess.run(["bash", str(ROOT / "train.sh"), str(tmp_path / "tiny.yaml"), "train.max_steps=4",
                          "train.eval_every=2"], env={**env, "NUM_PROCESSES": "2"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "training in 2 processes" in out.stdout
    assert out.stdout.count("batch 8 = 4 x 2 proc") == 2  # each fold trained once, by the 2-process group
    assert "fold 0: already trained" in out.stdout and "fold 1: already trained" in out.stdout  # the 1-process step
    assert out.stdout.count("test probabilities computed for folds [0, 1]") == 1
    sub = pd.read_csv(tmp_path / "submissions" / "tiny.csv", dtype={"ID": str})
    validate(sub, pd.read_csv(tmp_path / "data" / "sample_submission.csv", dtype={"ID": str}))


def test_gpus_listed_but_not_seen_by_torch_stop_before_training(tiny_run):
    """A pod whose nvidia-smi lists GPUs while the venv's torch sees none (a wheel for another driver) must not train
    on the CPU silently: one line naming the fix, exit 2, nothing trained; ALLOW_CPU=1 goes on."""
    tmp_path, env = tiny_run
    (tmp_path / "bin" / "nvidia-smi").write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"\n')
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    cmd = ["bash", str(ROOT / "train.sh"), str(tmp_path / "tiny.yaml"), "train.max_steps=2", "folds.run=[0]"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stdout[-2000:]
    error = [line for line in out.stdout.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "lists 1 GPU(s)" in error[0] and "USE_SYSTEM_PYTHON=1" in error[0]
    assert not (tmp_path / "checkpoints").exists()
    out = subprocess.run(cmd, env={**env, "ALLOW_CPU": "1"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:]
    assert (tmp_path / "checkpoints" / "tiny" / "fold0" / "done.json").is_file()


def plain_env(tmp_path, **extra) -> dict:
    """The environment for a train.sh run with this python and every log under tmp_path."""
    return {**os.environ, "USE_SYSTEM_PYTHON": "1", "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs"),
            "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.parametrize("args", [
    ["--folds"], ["configs/tfidf.yaml", "--folds"], ["--folds", ""], ["--folds", ","], ["--folds", "3-1"],
    ["--folds", "a"], ["--folds", "-1"], ["--folds", "0,,1"], ["--folds", "0-"], ["--folds=x"], ["--folds", "--wandb"],
    ["folds.run="], ["folds.run=[]"], ["folds.run=[ ]"], ["foo"], ["configs/tfidf.yaml", "foo"], ["README.md"],
    ["configs/nope.yaml"], ["configs/tfidf.yaml", "configs/tfidf_cnb.yaml"], [""], ["/x=y"], ["a b=c"], ["--bogus"],
])
def test_bad_arguments_stop_with_one_line(tmp_path, args):
    out = subprocess.run(["bash", str(ROOT / "train.sh"), *args], env=plain_env(tmp_path), capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 2, (args, out.stderr)
    assert out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1, (args, out.stderr)
    assert not out.stdout and not (tmp_path / "logs").exists()  # refused before anything


@pytest.mark.parametrize("env, says", [({"NUM_PROCESSES": "two"}, "NUM_PROCESSES"),
                                       ({"NUM_PROCESSES": "0"}, "NUM_PROCESSES"),
                                       ({"PYTHON": "/no/such/python"}, "no python '/no/such/python'")])
def test_bad_environment_stops_with_one_line(tmp_path, env, says):
    data = make_competition(tmp_path / "comp", n_train=40, n_test=10)  # a data folder, so these checks are reached
    out = subprocess.run(["bash", str(ROOT / "train.sh")], env=plain_env(tmp_path, DATA_DIR=str(data), **env),
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1, out.stderr
    assert says in out.stderr


def test_data_dir_with_spaces_and_hash_reaches_the_run_literally(tmp_path):
    """DATA_DIR="<tmp>/comp #v2" trains on that folder (a YAML-parsed value would cut it at ' #' and train on the
    decoy <tmp>/comp next to it); `--folds 0-1` becomes folds.run=[0,1]."""
    make_competition(tmp_path / "comp", n_train=80, n_test=20, labels=["x", "y"], seed=5)  # the decoy
    data = make_competition(tmp_path / "comp #v2", n_train=120, n_test=30)
    args = [f"folds.dir={tmp_path}/folds", "folds.n_folds=2", f"output.checkpoints_dir={tmp_path}/ck",
            f"output.submissions_dir={tmp_path}/sub: final", "output.plots=false", "tfidf.min_df=1",
            "tfidf.n_jobs=1", "exp=spaced"]
    out = subprocess.run(["bash", str(ROOT / "train.sh"), "configs/tfidf.yaml", "--folds", "0-1", *args],
                         env=plain_env(tmp_path, DATA_DIR=str(data)), capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "folds.run=[0,1]" in out.stdout
    saved = yaml.safe_load((tmp_path / "ck" / "spaced" / "config.yaml").read_text())
    assert saved["data"]["data_dir"] == str(data) and saved["folds"]["run"] == [0, 1]
    sub = pd.read_csv(tmp_path / "sub: final" / "spaced.csv", dtype={"ID": str})
    validate(sub, pd.read_csv(data / "sample_submission.csv", dtype={"ID": str}))


USAGE_WORDS = ["--folds", "--resume", "--wandb", "--submit", "DATA_DIR", "LOG_DIR", "USE_SYSTEM_PYTHON", "PYTHON",
               "NUM_PROCESSES", "ALLOW_CPU", "PROGRESS_INTERVAL", "KAGGLE_COMPETITION", "WANDB_API_KEY"]


@pytest.mark.parametrize("cmd, cwd", [
    pytest.param(["bash", "train.sh", "--help"], ROOT, id="--help"),
    pytest.param(["bash", "../train.sh", "-h"], ROOT / "configs", id="-h-from-another-folder"),
    pytest.param(["bash", str(ROOT / "train.sh"), "configs/tfidf.yaml", "--folds", "0", "--help"], ROOT,
                 id="after-other-arguments"),
    pytest.param(["bash", "-s", "--", "--help"], ROOT, id="script-on-stdin"),  # curl ... | bash -s -- --help
])
def test_help_prints_the_usage(tmp_path, cmd, cwd):
    with open(ROOT / "train.sh") as script:
        out = subprocess.run(cmd, cwd=cwd, env=plain_env(tmp_path), capture_output=True, text=True, stdin=script)
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.startswith("usage: bash train.sh") and "set -euo" not in out.stdout, out.stdout[:300]
    assert all(word in out.stdout for word in USAGE_WORDS), [w for w in USAGE_WORDS if w not in out.stdout]
    assert not (tmp_path / "logs").exists()


def marker_python(tmp_path) -> Path:
    """A stand-in python that only records that it ran (setup would start) and fails."""
    py = tmp_path / "bin" / "python"
    py.parent.mkdir(exist_ok=True)
    py.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(tmp_path / 'python-ran'))}\nexit 1\n")
    py.chmod(0o755)
    return py


# (config text, DATA_DIR, overrides, the folder the error names, what it says); {tmp} is the caller's folder (the
# test's tmp_path) and {repo} the repository: typed paths are the caller's, a config file's are the repository's.
NO_DATA = [
    pytest.param("exp: e\n", "nodata", [], "{tmp}/nodata", "does not exist (DATA_DIR)", id="DATA_DIR-relative"),
    pytest.param("exp: e\n", "{tmp}/half", [], "{tmp}/half", "lacks test.csv, sample_submission.csv (DATA_DIR)",
                 id="DATA_DIR-lacks-files"),
    pytest.param("exp: e\n", "", ["data.data_dir=rel/comp"], "{tmp}/rel/comp",
                 "does not exist (data.data_dir= on the command line)", id="override-relative"),
    pytest.param("exp: e\n", "", ["data.data_dir=./rel", "exp=f"], "{tmp}/rel", "does not exist", id="override-dot"),
    pytest.param("exp: e\n", "nodata", ["data.data_dir={tmp}/comp"], "{tmp}/nodata", "(DATA_DIR)",
                 id="DATA_DIR-before-override"),
    pytest.param("data:\n  data_dir: {tmp}/gone  # note\n", "", [], "{tmp}/gone", "does not exist (data.data_dir of",
                 id="config-absolute"),
    pytest.param("exp: e\ndata:   # the competition\n  name: x\n  # data_dir: {tmp}/comp\n"
                 "  data_dir: 'no-such-data-9z'\nfolds:\n  n_folds: 2\n", "", [], "{repo}/no-such-data-9z",
                 "relative to the repository", id="config-relative-is-the-repository's"),
]


@pytest.mark.parametrize("config, data_dir, overrides, folder, says", NO_DATA)
def test_missing_data_folder_stops_before_setup(tmp_path, config, data_dir, overrides, folder, says):
    """The data folder is checked before setup (minutes on a fresh pod), with the absolute path tried: DATA_DIR,
    else data.data_dir= on the command line (both from the caller's folder), else the config file's (a text read;
    relative to the repository)."""
    make_competition(tmp_path / "comp", n_train=40, n_test=10)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.csv").write_text("ID,Tweet,a\n1,x,0\n")
    fill = lambda text: text.format(tmp=tmp_path, repo=ROOT)  # noqa: E731
    (tmp_path / "c.yaml").write_text(fill(config))
    env = plain_env(tmp_path, PYTHON=str(marker_python(tmp_path)), DATA_DIR=fill(data_dir))
    out = subprocess.run(["bash", str(ROOT / "train.sh"), str(tmp_path / "c.yaml"), *map(fill, overrides)],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert out.stderr.startswith(f"error: data folder {fill(folder)} ") and says in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1 and not out.stdout
    assert not (tmp_path / "python-ran").exists() and not (tmp_path / "logs").exists()  # before any setup


@pytest.mark.parametrize("config", [
    pytest.param('data:\n  data_dir: "{tmp}/comp #v2"  # quoted: the " #v2" is part of it\n', id="quoted"),
    pytest.param("exp: e\ndata: # here\n  data_dir: {tmp}/comp #v2\nfolds:\n  n_folds: 2\n", id="comment"),
    pytest.param("data: {{data_dir: {tmp}/nowhere}}\n", id="flow-style-left-to-the-run"),  # not read as text
])
def test_data_folder_check_passes_a_good_folder(tmp_path, config):
    make_competition(tmp_path / "comp #v2", n_train=40, n_test=10)
    make_competition(tmp_path / "comp", n_train=40, n_test=10)
    (tmp_path / "c.yaml").write_text(config.format(tmp=tmp_path))
    out = subprocess.run(["bash", str(ROOT / "train.sh"), str(tmp_path / "c.yaml")], cwd=tmp_path,
                         env=plain_env(tmp_path, PYTHON=str(marker_python(tmp_path))), capture_output=True, text=True)
    assert "data folder" not in out.stderr, out.stderr
    assert (tmp_path / "python-ran").exists()  # on to setup (which the stand-in python fails)


def recording_python(tmp_path) -> Path:
    """A python that records each call's first arguments and PROGRESS_INTERVAL, prints a progress bar's carriage-
    return updates before `-m src run`, fails `-m src folds` with exit status $FAIL_FOLDS if set, else runs."""
    py = tmp_path / "bin" / "python"
    py.parent.mkdir(exist_ok=True)
    py.write_text(f"""#!/bin/sh
echo "$1 $2 $3 PROGRESS_INTERVAL=${{PROGRESS_INTERVAL-unset}}" >> {shlex.quote(str(tmp_path / 'calls'))}
case "$1 $2 $3" in
  "-m src run") printf 'bar  0%%\\rbar 50%%\\rbar 100%%\\n' >&2 ;;
  "-m src folds") [ -z "${{FAIL_FOLDS:-}}" ] || exit "$FAIL_FOLDS" ;;
esac
exec {shlex.quote(sys.executable)} "$@"
""")
    py.chmod(0o755)
    return py


def calls(tmp_path) -> dict[str, str]:
    """'-m src run' -> its PROGRESS_INTERVAL as recording_python saw it."""
    lines = (tmp_path / "calls").read_text().splitlines()
    return {line.split(" PROGRESS_INTERVAL=")[0]: line.split(" PROGRESS_INTERVAL=")[1]
            for line in lines if line.startswith("-m src ")}


STAMPED = re.compile(r"\[\d\d:\d\d:\d\d\]( .*)?")


def test_relative_paths_are_the_callers_and_the_log_is_per_run(tmp_path):
    """From another folder: a relative config, DATA_DIR, LOG_DIR and path overrides mean that folder (not the
    repository); --folds between overrides; the log is named by exp and the start time, holds each line stamped,
    a progress bar's last state only, and the elapsed time and exit status; the screen gets the live output."""
    data = make_competition(tmp_path / "comp", n_train=120, n_test=30)
    (tmp_path / "x.yaml").write_text("exp: rel\nmodel_type: tfidf\ntfidf:\n  min_df: 1\n  n_jobs: 1\n")
    env = plain_env(tmp_path, PYTHON=str(recording_python(tmp_path)), DATA_DIR="comp", LOG_DIR="lg")
    out = subprocess.run(["bash", str(ROOT / "train.sh"), "x.yaml", "output.checkpoints_dir=ck", "folds.n_folds=2",
                          "--folds", "0-1", "output.submissions_dir=./sub", "folds.dir=fo", "output.plots=false"],
                         cwd=tmp_path, env=env, capture_output=True)  # bytes: text mode would turn \r into \n
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    saved = yaml.safe_load((tmp_path / "ck" / "rel" / "config.yaml").read_text())
    assert saved["data"]["data_dir"] == str(data) and saved["folds"]["dir"] == str(tmp_path / "fo")
    assert saved["folds"]["run"] == [0, 1] and saved["folds"]["n_folds"] == 2
    assert saved["output"]["submissions_dir"] == str(tmp_path / "sub") and list((tmp_path / "fo").glob("*.csv"))
    validate(pd.read_csv(tmp_path / "sub" / "rel.csv", dtype={"ID": str}),
             pd.read_csv(data / "sample_submission.csv", dtype={"ID": str}))
    assert not any((ROOT / d).exists() for d in ("ck", "sub", "fo", "lg", "comp"))

    assert b"bar  0%\rbar 50%\rbar 100%\n" in out.stdout  # the screen: live
    assert set(calls(tmp_path).values()) == {"unset"}  # not a terminal: the progress bars' own default
    logs = list((tmp_path / "lg").iterdir())
    assert len(logs) == 1 and re.fullmatch(r"rel-\d{8}-\d{6}\.log", logs[0].name), logs
    log = logs[0].read_bytes().decode()
    lines = log.split("\n")[:-1]
    assert "\r" not in log and all(STAMPED.fullmatch(line) for line in lines), [line for line in lines
                                                                              if not STAMPED.fullmatch(line)]
    assert "train.sh: rel started " in lines[0] and str(logs[0]) in lines[0]
    assert re.fullmatch(r"\[[\d:]{8}\] train\.sh: rel done in 0:\d\d:\d\d \(exit status 0\)", lines[-1]), lines[-1]
    assert [line[11:] for line in lines if "bar" in line] == ["bar 100%"]
    assert "[rel] submission: " in log and "folds.run=[0,1]" in lines[0]


def run_in_terminal(cmd, cwd, env, timeout=180) -> tuple[int, bytes]:
    """Run cmd with stdout and stderr on a pseudo-terminal: (exit status, what the terminal showed)."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    shown, deadline = b"", time.time() + timeout
    try:
        while time.time() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # EIO: every process let go of the terminal
                    break
                if not data:
                    break
                shown += data
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        os.close(master)
    return proc.wait(timeout=30), shown


def test_terminal_gets_live_progress_and_a_failed_run_logs_its_status(tmp_path):
    """On a terminal the progress bars refresh every second (PROGRESS_INTERVAL=1, else 30 s); a failing step ends
    the log with the elapsed time and its exit status."""
    data = make_competition(tmp_path / "comp", n_train=40, n_test=10)
    env = plain_env(tmp_path, PYTHON=str(recording_python(tmp_path)), DATA_DIR=str(data), FAIL_FOLDS="3")
    rc, shown = run_in_terminal(["bash", str(ROOT / "train.sh"), "exp=tty", f"folds.dir={tmp_path}/fo",
                                 f"output.checkpoints_dir={tmp_path}/ck"], tmp_path, env)
    assert rc == 3, shown[-2000:]
    assert calls(tmp_path)["-m src folds"] == "1"
    (log,) = (tmp_path / "logs").glob("tty-*.log")
    last = log.read_text().splitlines()[-1]
    assert re.fullmatch(r"\[[\d:]{8}\] train\.sh: tty stopped after 0:\d\d:\d\d \(exit status 3\)", last), last
    assert b"train.sh: tty stopped after" in shown


def fake_setup(tmp_path: Path, nvidia: bool) -> tuple[Path, dict]:
    """setup.sh in a copy of the repository's setup files, with a stand-in python whose venv's pip records its
    arguments (and 'installs' torch when asked for it), and nvidia-smi on PATH or not."""
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    for f in ("setup.sh", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        (repo / f).write_bytes((ROOT / f).read_bytes())
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "pip.log"
    pip = (f'#!/bin/sh\necho "$*" >> {log}\ncase "$*" in *torch*) touch "$(dirname "$0")/torch-installed";; esac\n')
    python = ('#!/bin/sh\nif [ "$1" = -c ]; then [ -f "$(dirname "$0")/torch-installed" ]; exit $?; fi\n')
    (fake / "python3").write_text('#!/bin/sh\n[ "$1 $2" = "-m venv" ] || exit 1\nmkdir -p "$3/bin"\n'
                                  f"cat > \"$3/bin/pip\" <<'EOF'\n{pip}EOF\n"
                                  f"cat > \"$3/bin/python\" <<'EOF'\n{python}EOF\n"
                                  'chmod +x "$3/bin/pip" "$3/bin/python"\n')
    (fake / "python3").chmod(0o755)
    if nvidia:
        (fake / "nvidia-smi").write_text("#!/bin/sh\necho GPU 0: Tesla P100\n")
        (fake / "nvidia-smi").chmod(0o755)
    return repo, {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": str(fake / "python3")}


def pip_calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "pip.log").read_text().splitlines()


def test_setup_installs_the_cpu_torch_without_a_gpu_and_honours_torch_spec_with_one(tmp_path):
    """A CPU-only box gets PyTorch's CPU build, not PyPI's multi-GB CUDA one; with nvidia-smi, TORCH_SPEC (the fix
    train.sh and the config check name for a driver or an old card) is installed, not ignored, and it replaces the
    torch of an existing .venv."""
    repo, env = fake_setup(tmp_path / "cpu", nvidia=False)
    subprocess.run(["bash", "setup.sh"], cwd=repo, env=env, check=True, capture_output=True)
    calls = pip_calls(tmp_path / "cpu")
    assert calls[0] == "install -q --retries 0 --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert calls[1] == "install -q torch==2.13.0"

    repo, env = fake_setup(tmp_path / "gpu", nvidia=True)
    subprocess.run(["bash", "setup.sh"], cwd=repo, env=env, check=True, capture_output=True)
    assert pip_calls(tmp_path / "gpu")[0] == "install -q torch>=2.3"  # PyPI's CUDA build
    spec = "torch<2.15 --index-url https://download.pytorch.org/whl/cu126"
    subprocess.run(["bash", "setup.sh"], cwd=repo, env={**env, "TORCH_SPEC": spec}, check=True, capture_output=True)
    calls = pip_calls(tmp_path / "gpu")
    n = calls.index(f"install -q --force-reinstall --no-deps {spec}")  # torch was there: replaced
    assert calls[n + 1] == f"install -q {spec}"
    before = len(pip_calls(tmp_path / "gpu"))
    subprocess.run(["bash", "setup.sh"], cwd=repo, env={**env, "TORCH_SPEC": spec}, check=True, capture_output=True)
    assert len(pip_calls(tmp_path / "gpu")) == before  # done once: the stamp holds the spec
