"""Run-folder guards: the lock, writable outputs, leftovers of killed writes, partial runs, checked probabilities."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from src.config import load_config
from src.errors import UserError
from src.pipeline import finalize, run
from src.rundir import RunDir, check_probs, read_probs, write_probs
from src.runguard import clean_leftovers, run_lock

BASE = ["folds.n_folds=5", "tfidf.min_df=1", "tfidf.C=1", "output.plots=false"]


def cfg_of(comp_dir, *more):
    return load_config(None, [f"data.data_dir={comp_dir}", "exp=g", *BASE, *more])


@pytest.fixture
def finished(workdir, comp_dir):
    """A complete tfidf run: checkpoints/g/ and submissions/g.csv."""
    run(cfg_of(comp_dir))
    return workdir


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_partial_run_keeps_the_complete_runs_files(finished, comp_dir, capsys):
    root = finished / "checkpoints/g"
    before = {p: (root / p).read_bytes() for p in ("oof.csv", "test.csv", "metrics.json", "config.yaml")}
    sub = (finished / "submissions/g.csv").read_bytes()
    capsys.readouterr()
    result = run(cfg_of(comp_dir, "folds.run=[0]"))
    out = capsys.readouterr().out
    assert not result["complete"] and result["folds"] == [0]
    assert "partial run (folds [0] of 5)" in out and "untouched" in out
    assert {p: (root / p).read_bytes() for p in before} == before
    assert (finished / "submissions/g.csv").read_bytes() == sub
    assert len(pd.read_csv(root / "partial/oof.csv")) == 40
    assert json.loads((root / "partial/metrics.json").read_text())["folds"] == [0]


def test_failed_run_keeps_the_previous_config(finished, comp_dir):
    config = (finished / "checkpoints/g/config.yaml").read_bytes()
    with pytest.raises(UserError, match="tfidf.char_analyzer must be one of"):
        run(cfg_of(comp_dir, "tfidf.char_analyzer=chars"))
    assert (finished / "checkpoints/g/config.yaml").read_bytes() == config


def test_unwritable_submissions_folder_is_found_before_any_work(workdir, comp_dir):
    (workdir / "blocked").write_text("a file where the folder should be")
    with pytest.raises(UserError, match="blocked is a file, where a folder is needed"):
        run(cfg_of(comp_dir, "output.submissions_dir=blocked"))
    assert not (workdir / "checkpoints/g").exists()  # no empty run folder left behind either


def test_live_lock_refuses_a_second_run(workdir, comp_dir):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = workdir / "checkpoints/g/.lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now",
                                    "command": "python -m src run"}))
        with pytest.raises(UserError, match=f"in use by another run \\(pid {holder.pid}"):
            run(cfg_of(comp_dir))
        assert lock.is_file() and not (workdir / "checkpoints/g/oof.csv").exists()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(workdir, comp_dir, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = workdir / "checkpoints/g/.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then", "command": "x"}))
    assert "submission" in run(cfg_of(comp_dir))
    assert f"pid {dead.pid} is not running" in capsys.readouterr().out
    assert not lock.exists()  # released at the end


def test_old_lock_from_another_machine_is_taken_over(workdir):
    rd = RunDir(workdir / "checkpoints/g", workdir / "submissions")
    (rd.root).mkdir(parents=True)
    lock = rd.root / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": "a-preempted-vm", "started": "then", "command": "x"}))
    os.utime(lock, (0, 0))
    with run_lock(rd):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with run_lock(rd):  # re-entrant: run -> finalize
            pass
        assert lock.exists()
    assert not lock.exists()


def test_leftovers_of_killed_writes_are_removed(finished, comp_dir, capsys):
    root, subs = finished / "checkpoints/g", finished / "submissions"
    junk = [root / ".oof.csv.k3j2.tmp", root / "fold0/.tmp-step5/model.safetensors", subs / ".g.csv.x1.tmp"]
    for p in junk:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\0" * 1000)
    other = subs / ".other.csv.x1.tmp"  # another exp's write may be in progress: not ours to remove
    other.write_text("x")
    capsys.readouterr()
    run(cfg_of(comp_dir))
    assert "removed 3 temp files/folders" in capsys.readouterr().out
    assert not any(p.exists() for p in junk) and not (root / "fold0/.tmp-step5").exists() and other.exists()
    assert clean_leftovers(RunDir.of(cfg_of(comp_dir))) == 0


@pytest.mark.parametrize("value,kind", [("nan", "NaN"), ("inf", "infinite"), ("2.0", "outside"), ("-0.1", "outside")])
@pytest.mark.parametrize("name", ["oof.csv", "test.csv"])
def test_broken_probabilities_in_run_files_are_refused(finished, comp_dir, name, value, kind):
    path = finished / f"checkpoints/g/{name}"
    frame = pd.read_csv(path, dtype=str)
    frame.loc[3, "joy"] = value
    frame.to_csv(path, index=False)
    sub = (finished / "submissions/g.csv").read_bytes()
    with pytest.raises(UserError, match=f"{name}: 1 probabilities .*{kind}.*label 'joy'"):
        finalize(cfg_of(comp_dir))
    assert (finished / "submissions/g.csv").read_bytes() == sub


def test_text_in_a_probability_column_is_refused(finished, comp_dir):
    path = finished / "checkpoints/g/oof.csv"
    frame = pd.read_csv(path, dtype=str)
    frame.loc[0, "fear"] = "0.3x"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError, match="column 'fear' holds non-numbers, e.g. '0.3x'"):
        finalize(cfg_of(comp_dir))


def test_probabilities_are_checked_before_writing(tmp_path):
    with pytest.raises(UserError, match="refusing to write .*NaN"):
        write_probs(tmp_path / "p.csv", ["a", "b"], np.array([[0.1, np.nan], [0.2, 0.3]]), ["x", "y"])
    assert not (tmp_path / "p.csv").exists()
    write_probs(tmp_path / "p.csv", ["007", "NA"], np.array([[0.1, 0.9], [0.2, 0.3]]), ["x", "y"], folds=[0, 1])
    back = read_probs(tmp_path / "p.csv", ["x", "y"])
    assert back["id"].tolist() == ["007", "NA"] and back["fold"].tolist() == [0, 1]
    assert check_probs([[0.0, 1.0]], ["x", "y"], "ok").dtype == np.float64


def test_finalize_without_oof_is_one_line(workdir, comp_dir):
    with pytest.raises(UserError, match="oof.csv does not exist: run this config first"):
        finalize(cfg_of(comp_dir))


def damage_rows(path, how):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    {"missing": lambda: frame.drop(index=frame.index[-1]),
     "twice": lambda: pd.concat([frame, frame.iloc[[0]]]),
     "unknown": lambda: frame.assign(id=["zz-1", *frame["id"][1:]])}[how]().to_csv(path, index=False)


@pytest.mark.parametrize("name,how,msg", [
    ("oof.csv", "missing", r"oof.csv covers 199 of 200 train rows \(missing e.g. .*\): a damaged file"),
    ("test.csv", "missing", r"test.csv covers 59 of 60 test rows \(missing e.g. .*\): a damaged file"),
    ("test.csv", "twice", r"test.csv lists 1 ids more than once"),
    ("test.csv", "unknown", r"test.csv has 1 ids that are not in test.csv \(e.g. zz-1\)"),
    ("test.csv", "nan", r"test.csv: 1 probabilities are NaN"),
])
def test_finalize_checks_both_probability_files_before_writing_anything(finished, comp_dir, name, how, msg):
    path = finished / f"checkpoints/g/{name}"
    if how == "nan":
        frame = pd.read_csv(path, dtype=str)
        frame.loc[3, "joy"] = "nan"
        frame.to_csv(path, index=False)
    else:
        damage_rows(path, how)
    before = snapshot(finished)
    with pytest.raises(UserError, match=msg):
        finalize(cfg_of(comp_dir))
    after = snapshot(finished)
    assert [p for p in after if after[p] != before.get(p)] == [] and set(after) == set(before)


def test_an_output_file_that_is_a_folder_is_found_before_any_work(finished, comp_dir):
    (finished / "submissions/g.csv").unlink()
    (finished / "submissions/g.csv").mkdir()
    before = snapshot(finished)
    with pytest.raises(UserError, match=r"submissions/g.csv is a folder, where the run writes a file"):
        run(cfg_of(comp_dir, "tfidf.C=2"))
    assert snapshot(finished) == before


def test_tfidf_min_df_above_the_fold_rows_is_refused_before_any_write(finished, comp_dir):
    before = snapshot(finished)
    with pytest.raises(UserError, match=r"tfidf.min_df=500 is more than the 160 training rows of the smallest fold"):
        run(cfg_of(comp_dir, "tfidf.min_df=500"))
    assert snapshot(finished) == before


def test_an_unchanged_config_is_not_rewritten(finished, comp_dir):
    config = finished / "checkpoints/g/config.yaml"
    os.utime(config, (1e9, 1e9))
    run(cfg_of(comp_dir))
    assert config.stat().st_mtime == 1e9
    run(cfg_of(comp_dir, "tfidf.C=2"))
    assert config.stat().st_mtime > 1e9 and "C: 2" in config.read_text()


def test_a_run_folder_refuses_other_data_and_records_its_own(finished, comp_dir, tmp_path):
    from synth import make_competition

    record = json.loads((finished / "checkpoints/g/run.json").read_text())
    assert record["fold_file"] == "data_k5_s42.csv" and record["train_rows"] == 200 and record["dataset"] == "data"
    other = make_competition(tmp_path / "goemo", n_train=150, labels=("a", "b", "c"))
    before = snapshot(finished)
    for call in (run, finalize):  # the README's GoEmotions command under the same exp name
        with pytest.raises(UserError, match=r"checkpoints/g holds a run made from 'data' \(200 train rows, 4 labels, "
                                            r"fold file data_k5_s42.csv, .*\); this run uses 'goemo' \(150 train rows, "
                                            r"3 labels, fold file goemo_k5_s42.csv.*use another exp name \(e.g. "
                                            r"exp=g-goemo\), or delete checkpoints/g"):
            call(load_config(None, [f"data.data_dir={other}", "exp=g", *BASE]))
    with pytest.raises(UserError, match="fold file data_k4_s42.csv"):
        run(cfg_of(comp_dir, "folds.n_folds=4"))
    assert {p: v for p, v in snapshot(finished).items() if not p.startswith("folds/")} == \
           {p: v for p, v in before.items() if not p.startswith("folds/")}
    frame = pd.read_csv(comp_dir / "train.csv", dtype=str)
    frame["Tweet"] = frame["Tweet"] + " cleaned"  # the same data edited in place: the same run
    frame.to_csv(comp_dir / "train.csv", index=False)
    assert run(cfg_of(comp_dir))["complete"]
    (finished / "checkpoints/g/run.json").unlink()  # an older kit's run: its config.yaml names the fold file
    with pytest.raises(UserError, match=r"holds a run made from 'data' \(fold file data_k5_s42.csv\)"):
        run(load_config(None, [f"data.data_dir={other}", "exp=g", *BASE]))


def test_finalize_by_exp_uses_the_runs_config_and_records_its_threshold_overrides(finished, comp_dir, capsys):
    from src.__main__ import main as cli_main

    cli_main(["finalize", "--exp", "g", "thresholds.min_one=true", f"data.data_dir={comp_dir}"])
    saved = yaml.safe_load((finished / "checkpoints/g/config.yaml").read_text())
    assert saved["thresholds"]["min_one"] is True and saved["tfidf"]["min_df"] == 1  # the run's own settings
    assert "thresholds and metric updated" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["finalize", "--exp", "nope"])
    assert "checkpoints/nope/config.yaml does not exist: is 'nope' a run here?" in capsys.readouterr().err


def test_a_rerun_says_which_finalize_settings_it_decides_differently(finished, comp_dir, capsys):
    """`finalize --exp g thresholds.min_one=true metric=jaccard` records its settings; a later rerun of the config
    (train.sh after a crash) decides with the config's own, and says so, naming the override that keeps each."""
    from src.__main__ import main as cli_main

    cli_main(["finalize", "--exp", "g", "thresholds.min_one=true", "metric=jaccard"])
    capsys.readouterr()
    result = run(cfg_of(comp_dir))
    out = capsys.readouterr().out
    assert "thresholds.min_one is True in" in out and "pass thresholds.min_one=true to keep it" in out
    assert "data.metric is 'jaccard'" in out and "pass data.metric=jaccard to keep it" in out
    assert result["metric"] == "macro_f1"
    run(cfg_of(comp_dir))
    assert "note: " not in capsys.readouterr().out  # the same settings again: nothing to say


def _fake_holder(path, pid, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "now", "command": "x", **extra}))


def test_fold_locks_let_other_folds_train_at_once(workdir, monkeypatch):
    """`python -m src.train --folds 3,4` in one process and `--folds 0-2` in another: both run; a whole run or the
    same fold waits for neither (one-line refusal), and the fold locks go at the end."""
    monkeypatch.setattr("src.runguard.MUTEX_WAIT_S", 0.5)
    rd = RunDir(workdir / "checkpoints/g", workdir / "submissions")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _fake_holder(rd.root / ".lock-fold3", holder.pid, folds=[3, 4])
        _fake_holder(rd.root / ".lock-fold4", holder.pid, folds=[3, 4])
        with run_lock(rd, [0, 1, 2]):
            assert json.loads((rd.root / ".lock-fold1").read_text())["folds"] == [0, 1, 2]
            assert not (rd.root / ".lock").exists()  # the run lock is only held while the fold locks are taken
            with run_lock(rd, [0, 1, 2]):  # re-entrant
                pass
            assert (rd.root / ".lock-fold0").exists()
        assert not any((rd.root / f".lock-fold{k}").exists() for k in (0, 1, 2))
        with pytest.raises(UserError, match=f"in use by another run training its folds 3, 4 \\(pid {holder.pid}"):
            run_lock(rd, [2, 3]).__enter__()
        assert not (rd.root / ".lock-fold2").exists()  # a refused take leaves none of its locks
        with pytest.raises(UserError, match="in use by another run training its folds 3, 4"):
            run_lock(rd).__enter__()
        assert not (rd.root / ".lock").exists()
        _fake_holder(rd.root / ".lock", holder.pid)  # a whole run holds the exp: no fold may start
        with pytest.raises(UserError, match=f"in use by another run \\(pid {holder.pid}"):
            run_lock(rd, [0]).__enter__()
    finally:
        holder.kill()
        holder.wait()


def test_fold_scoped_cleanup_leaves_other_folds_writes(workdir):
    rd = RunDir(workdir / "checkpoints/g", workdir / "submissions")
    mine, theirs = rd.fold(0) / ".tmp-step5/model.safetensors", rd.fold(3) / ".tmp-step9/model.safetensors"
    for p in (mine, theirs):
        p.parent.mkdir(parents=True)
        p.write_text("x")
    assert clean_leftovers(rd, folds=[0, 1]) == 1
    assert not mine.parent.exists() and theirs.exists()
