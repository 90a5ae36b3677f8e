import json

import numpy as np
import pytest
import yaml

from src import checkpoints
from src.checkpoints import list_checkpoints, pick, read_selection, select
from src.config import dump_config, load_config
from src.errors import UserError
from src.rundir import RunDir

# step -> (val_loss, f1_tuned): best_f1 -> 500, best_loss -> 400, balanced (tol 0.005) -> 300
CURVE = {100: (0.40, 0.50), 200: (0.30, 0.618), 300: (0.28, 0.616), 400: (0.25, 0.55), 500: (0.35, 0.62)}


def write_checkpoint(rd: RunDir, fold: int, step: int, val_loss: float, f1: float, probs=None,
                     labels=("a", "b")) -> None:
    """A fabricated checkpoint per the transformer contract: metrics.json and valid_probs.npy (no weights)."""
    d = rd.step(fold, step)
    d.mkdir(parents=True, exist_ok=True)
    m = {"fold": fold, "step": step, "epoch": step / 200, "train_loss": val_loss + 0.05, "val_loss": val_loss,
         "f1_at_0.5": f1 - 0.02, "f1_tuned": f1, "per_label_f1": {lab: f1 for lab in labels},
         "per_label_f1_at_0.5": {lab: f1 - 0.02 for lab in labels}, "lr": 1e-5, "elapsed_s": 1.0}
    (d / "metrics.json").write_text(json.dumps(m))
    if probs is None:
        probs = np.random.default_rng(fold * 1000 + step).random((3, len(labels)))
    np.save(d / "valid_probs.npy", np.asarray(probs, np.float32))


def fake_run(exp: str = "x", n_folds: int = 2, curve=CURVE, done: bool = True):
    cfg = load_config(None, [f"exp={exp}", "select.rule=balanced"])
    rd = RunDir.of(cfg)
    rd.root.mkdir(parents=True)
    rd.config.write_text(dump_config(cfg))  # the CLI reads the run's rule from here
    for k in range(n_folds):
        for step, (loss, f1) in curve.items():
            write_checkpoint(rd, k, step, loss + 0.01 * k, f1)
        if done:
            (rd.fold(k) / "done.json").write_text("{}")
    return cfg, rd


def test_rules(workdir):
    _, rd = fake_run(n_folds=1)
    t = list_checkpoints(rd, 0)
    assert list(t["step"]) == [100, 200, 300, 400, 500]
    assert pick(t, "best_f1") == 500
    assert pick(t, "best_loss") == 400
    assert pick(t, "balanced", 0.005) == 300  # 200, 300, 500 are within 0.005 of 0.62; 300 has the lowest loss
    assert pick(t, "balanced", 0.0) == 500
    assert pick(t, "balanced", 0.1) == 400
    with pytest.raises(UserError, match="select.rule must be one of"):
        pick(t, "best_acc")


def test_rules_ties_and_checkpoints_without_probs(workdir):
    _, rd = fake_run(n_folds=1, curve={100: (0.30, 0.6), 200: (0.20, 0.6), 300: (0.20, 0.7)})
    (rd.step(0, 300) / "valid_probs.npy").unlink()  # unusable for OOF: never selected
    t = list_checkpoints(rd, 0)
    assert pick(t, "best_f1") == 200  # tie on F1 -> lower loss
    assert pick(t, "best_loss") == 200
    (rd.step(0, 400)).mkdir()  # a step directory without metrics.json (still being written) is not listed
    assert list(list_checkpoints(rd, 0)["step"]) == [100, 200, 300]


def test_select_writes_readable_yaml(workdir):
    cfg, rd = fake_run()
    assert select(cfg) == {0: 300, 1: 300}
    doc = yaml.safe_load(rd.selection.read_text())
    assert doc["rule"] == "balanced" and doc["tolerance"] == 0.005
    assert doc["folds"][1] == {"step": 300, "rule": "balanced", "epoch": 1.5, "train_loss": 0.34,
                               "val_loss": 0.29, "f1_at_0.5": 0.596, "f1_tuned": 0.616, "score": 0.616}
    assert rd.selection.read_text().startswith("# Checkpoint selected per fold")
    assert select(cfg, rule="best_loss") == {0: 400, 1: 400}


def test_manual_pick_survives_rule_and_auto_restores(workdir, capsys):
    cfg, rd = fake_run()
    select(cfg)
    checkpoints.main(["select", "x", "--fold", "1", "--step", "100"])
    assert "fold 1: step 100 (manual)" in capsys.readouterr().out
    assert select(cfg, rule="best_f1") == {0: 500, 1: 100}
    assert read_selection(rd)[1]["rule"] == "manual" and read_selection(rd)[0]["rule"] == "best_f1"
    checkpoints.main(["select", "x", "--fold", "1", "--auto"])  # back to the saved rule (best_f1)
    assert {k: e["step"] for k, e in read_selection(rd).items()} == {0: 500, 1: 500}


def test_hand_edited_selection(workdir):
    cfg, rd = fake_run()
    rd.selection.write_text("folds:\n  0: {step: 200, rule: manual}\n  1: 400\n")  # `1: 400` is shorthand
    assert select(cfg) == {0: 200, 1: 400}
    assert read_selection(rd)[0] == {"step": 200, "rule": "manual", "epoch": 1.0, "train_loss": 0.35, "val_loss": 0.3,
                                     "f1_at_0.5": 0.598, "f1_tuned": 0.618, "score": 0.618}  # filled in
    rd.selection.write_text("folds:\n  0: {step: 200, rule: best_guess}\n")
    with pytest.raises(UserError, match="rule 'best_guess'"):
        select(cfg)
    rd.selection.write_text("folds:\n  0: {step: 250, rule: manual}\n")
    with pytest.raises(UserError, match=r"fold 0 has no checkpoint at step 250 \(steps: 100, 200, 300, 400, 500\)"):
        select(cfg)


def test_bad_picks_are_one_line_errors(workdir, capsys):
    cfg, rd = fake_run()
    with pytest.raises(UserError, match="fold 0 has no checkpoint at step 123"):
        select(cfg, manual={0: 123})
    with pytest.raises(UserError, match=r"fold 7 has no checkpoints .* \(folds with checkpoints: \[0, 1\]\)"):
        select(cfg, manual={7: 100})
    for argv in (["select", "x", "--fold", "5", "--step", "100"], ["select", "x", "--step", "100"],
                 ["select", "nope"], ["list", "nope"]):
        with pytest.raises(SystemExit) as e:
            checkpoints.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
    assert not rd.selection.exists()  # nothing written by failed picks


def test_list_prints_tables_and_plots(workdir, capsys):
    cfg, rd = fake_run(done=False)
    (rd.fold(0) / "done.json").write_text("{}")
    checkpoints.main(["list", "x", "--per-label"])
    out = capsys.readouterr().out
    assert "fold 0 (done; selected step 300: balanced, not saved yet)" in out
    assert "fold 1 (not finished;" in out
    assert "f1:a" in out and "f1_tuned" in out
    row = next(line for line in out.splitlines() if line.lstrip().startswith("*"))
    assert row.split()[1] == "300"
    assert (rd.report / "checkpoints.png").stat().st_size > 5000
    checkpoints.main(["select", "x", "--fold", "0", "--step", "100"])
    checkpoints.main(["list", "x"])
    assert "fold 0 (done; selected step 100: manual)" in capsys.readouterr().out


def test_rule_passes_over_a_damaged_pick_for_the_next_intact_one(workdir, capsys):
    cfg, rd = fake_run(n_folds=1)
    assert checkpoints.select(cfg, rule="best_f1") == {0: 500}
    (rd.step(0, 500) / "valid_probs.npy").write_bytes(b"\x93NUMPY garbage")  # truncated by a sync
    capsys.readouterr()
    assert checkpoints.select(cfg, rule="best_f1") == {0: 200}  # the next best by F1 among intact ones
    out = capsys.readouterr().out
    assert "note: passing over fold 0 step 500 (damaged: " in out and "valid_probs.npy" in out
    for step in (100, 200, 300, 400):
        (rd.step(0, step) / "valid_probs.npy").write_bytes(b"")
    with pytest.raises(UserError, match="fold 0 of .* has no intact checkpoint with valid_probs.npy: delete"):
        checkpoints.select(cfg, rule="best_f1")


def test_the_table_shows_every_evaluation_kept_or_not_and_the_plot_is_rewritten_only_when_it_changes(workdir,
                                                                                                      capsys):
    cfg, rd = fake_run(n_folds=1)
    evals = [{"event": "eval", "step": s, "train_loss": 0.5, "val_loss": loss, "f1_at_0.5": f1 - 0.02, "f1_tuned": f1}
             for s, (loss, f1) in {**CURVE, 50: (0.6, 0.3), 600: (0.5, 0.4)}.items()]
    (rd.fold(0) / "history.jsonl").write_text("\n".join(json.dumps(e) for e in evals) + "\n{broken\n")
    tables = checkpoints.show(rd, cfg)
    out = capsys.readouterr().out
    t = tables[0]
    assert list(t["step"]) == [50, 100, 200, 300, 400, 500, 600]
    assert list(t["kept"]) == ["no", "yes", "yes", "yes", "yes", "yes", "no"] and not t["has_probs"].iloc[0]
    assert "kept" in out.splitlines()[2] and " 600 " in out
    plot = rd.report / "checkpoints.png"
    before = plot.stat().st_mtime_ns
    checkpoints.show(rd, cfg)
    assert plot.stat().st_mtime_ns == before  # the same picture: not rewritten
