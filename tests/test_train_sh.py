"""train.sh on a tiny transformer config, end to end (folds -> train -> select -> predict -> submission -> upload
with a stand-in `kaggle`), including a run killed mid-fold (SIGKILL of its process group, as a preempted pod) whose
rerun skips the finished fold and resumes the unfinished one from its saved step."""

from __future__ import annotations

import json
import os
import re
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
           "train": {"max_steps": 40, "eval_every": 10, "batch_size": 8, "log_every": 5},
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
    assert out.stdout.count("batch 8x2 proc") == 2  # each fold trained once, by the 2-process group
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
                         text=True)
    assert out.returncode == 2, (args, out.stderr)
    assert out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1, (args, out.stderr)
    assert not out.stdout and not (tmp_path / "logs").exists()  # refused before anything


@pytest.mark.parametrize("env", [{"NUM_PROCESSES": "two"}, {"NUM_PROCESSES": "0"}, {"PYTHON": "/no/such/python"}])
def test_bad_environment_stops_with_one_line(tmp_path, env):
    out = subprocess.run(["bash", str(ROOT / "train.sh")], env=plain_env(tmp_path, **env), capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1, out.stderr


def test_data_dir_with_spaces_and_hash_reaches_the_run_literally(tmp_path):
    """DATA_DIR="<tmp>/comp #v2" trains on that folder (a YAML-parsed value would cut it at ' #' and train on the
    decoy <tmp>/comp next to it); `--folds 0-1` becomes folds.run=[0,1]."""
    from src.smoke import make_competition

    make_competition(tmp_path / "comp", n_train=80, n_test=20, labels=["x", "y"], seed=5)  # the decoy
    data = make_competition(tmp_path / "comp #v2", n_train=120, n_test=30)
    args = [f"folds.dir={tmp_path}/folds", "folds.n_folds=2", f"output.checkpoints_dir={tmp_path}/ck",
            f"output.submissions_dir={tmp_path}/sub: final", "output.plots=false", "tfidf.min_df=1",
            "tfidf.n_jobs=1", "exp=spaced"]
    out = subprocess.run(["bash", str(ROOT / "train.sh"), "configs/tfidf.yaml", "--folds", "0-1", *args],
                         env=plain_env(tmp_path, DATA_DIR=str(data)), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "folds.run=[0,1]" in out.stdout
    saved = yaml.safe_load((tmp_path / "ck" / "spaced" / "config.yaml").read_text())
    assert saved["data"]["data_dir"] == str(data) and saved["folds"]["run"] == [0, 1]
    sub = pd.read_csv(tmp_path / "sub: final" / "spaced.csv", dtype={"ID": str})
    validate(sub, pd.read_csv(data / "sample_submission.csv", dtype={"ID": str}))
