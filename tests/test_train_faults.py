"""Faults around training and prediction: data edited in place, a diverging fold, damaged checkpoint files, a full
disk, up-front checks of every fold (`preflight`) and --folds taken literally. Tiny random models, a few steps."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_checkpoints import fake_run
from test_predict import FakePredictor, fake_transformer_run
from test_train import Interrupt, history, overrides, setup, steps, stop_at
from test_transformer import make_tiny

import src.train as train_module
from src import checkpoints
from src import predict as predict_mod
from src.checkpoints import list_checkpoints, makes_top_k, prune, save_checkpoint
from src.config import load_config
from src.data import load_competition
from src.errors import UserError
from src.fingerprint import fingerprint
from src.models import family
from src.models import transformer as tm
from src.predict import predict
from src.rundir import RunDir
from src.train import parse_folds, preflight, train_folds

pytestmark = pytest.mark.usefixtures("one_thread")
SHORT = ("train.max_steps=6", "train.eval_every=2", "model.max_length=24")


def tiny_cfg(comp_dir, tiny_root, exp, *extra):
    return load_config(None, overrides(comp_dir, make_tiny("bert", tiny_root), exp, *SHORT, *extra))


def edit_csv(path: Path, column: str, change) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0, column] = change(frame.loc[0, column])
    frame.to_csv(path, index=False)


# ---------------------------------------------------------------- 1, 6: fingerprints and preflight

def test_edited_train_csv_or_settings_are_found_before_any_fold_trains(workdir, comp_dir, tiny_root):
    cfg = tiny_cfg(comp_dir, tiny_root, "fp", "folds.run=[1]")
    comp, folds, rd = setup(cfg)
    train_folds(cfg, comp, folds, rd)
    done = json.loads((rd.fold(1) / "done.json").read_text())
    assert done["fingerprint_parts"]["train"]["lr"] == 5e-3 and "train texts" in done["fingerprint_parts"]["data"]

    both = tiny_cfg(comp_dir, tiny_root, "fp", "folds.run=[0,1]", "train.lr=1e-3")
    with pytest.raises(UserError, match=r"fold1 holds a finished fold that no longer matches: settings changed "
                                        r"\(train.lr 0.005 -> 0.001\); delete .*fold1 to train it again") as e:
        train_folds(both, comp, folds, rd)
    assert "\n" not in str(e.value) and not rd.fold(0).exists()  # found before fold 0 trained

    edit_csv(comp_dir / "train.csv", "Tweet", lambda t: t + " cleaned")  # same ids, another text
    with pytest.raises(UserError, match=r"data changed \(train texts\)"):
        train_folds(cfg, load_competition(cfg.data), folds, rd)
    edit_csv(comp_dir / "train.csv", "Tweet", lambda t: t.removesuffix(" cleaned"))
    edit_csv(comp_dir / "train.csv", "joy", lambda v: "0" if v == "1" else "1")  # relabelled
    with pytest.raises(UserError, match=r"data changed \(train labels\)"):
        preflight(cfg, load_competition(cfg.data), folds, rd)
    edit_csv(comp_dir / "train.csv", "joy", lambda v: "0" if v == "1" else "1")
    preflight(cfg, load_competition(cfg.data), folds, rd)  # back as it was: reusable again

    old = {key: v for key, v in done.items() if key != "fingerprint_parts"} | {"fingerprint": "0123456789abcdef"}
    (rd.fold(1) / "done.json").write_text(json.dumps(old))  # an older kit's done.json: only the hash
    with pytest.raises(UserError, match=r"settings or data changed \(fingerprint 0123456789abcdef"):
        preflight(cfg, comp, folds, rd)


def test_half_trained_fold_mismatch_and_every_family_exposes_preflight(workdir, comp_dir, tiny_root):
    cfg = tiny_cfg(comp_dir, tiny_root, "half")
    comp, folds, rd = setup(cfg)
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(2),))
    changed = tiny_cfg(comp_dir, tiny_root, "half", "train.warmup_ratio=0.2")
    with pytest.raises(UserError, match=r"half-trained fold .*settings changed \(train.warmup_ratio 0.1 -> 0.2\)"):
        family("transformer").preflight(changed, comp, folds, rd)  # what pipeline.run calls
    family("transformer").preflight(cfg, comp, folds, rd)
    with pytest.raises(UserError, match=r"folds \[0\] of .* have not finished training"):
        predict_mod.preflight(cfg, comp, folds, rd, predict_only=True)
    assert callable(family("llm_finetune").preflight)


def test_a_fold_is_reused_with_gradient_checkpointing_on_and_under_settings_added_since(workdir, comp_dir, tiny_root):
    straight = tiny_cfg(comp_dir, tiny_root, "straight", "folds.run=[0]")
    comp, folds, rd_a = setup(straight)
    train_folds(straight, comp, folds, rd_a)
    cfg = tiny_cfg(comp_dir, tiny_root, "gc", "folds.run=[0]")
    rd = RunDir.of(cfg)
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(2),))
    low_memory = tiny_cfg(comp_dir, tiny_root, "gc", "folds.run=[0]", "model.gradient_checkpointing=true")
    family("transformer").preflight(low_memory, comp, folds, rd)  # the same model, computed with less memory
    train_folds(low_memory, comp, folds, rd)
    assert [h["step"] for h in history(rd) if h.get("event") in ("start", "resume")] == [0, 2]
    np.testing.assert_allclose(np.load(rd.step(0, 6) / "valid_probs.npy"),  # as if trained straight through
                               np.load(rd_a.step(0, 6) / "valid_probs.npy"), atol=1e-5)
    preflight(cfg, comp, folds, rd)  # and the finished fold is reused without it

    done_path = rd.fold(0) / "done.json"
    done = json.loads(done_path.read_text())
    parts = done["fingerprint_parts"]
    parts["model"]["gradient_checkpointing"] = False  # as a kit that counted the switch in the fingerprint wrote it
    done_path.write_text(json.dumps(done | {"fingerprint": fingerprint(parts)}))
    preflight(low_memory, comp, folds, rd)  # its finished folds are still reused
    del parts["model"]["padding_side"]  # a key the kit gained after the fold was trained: at its default ...
    done_path.write_text(json.dumps(done | {"fingerprint": fingerprint(parts)}))
    preflight(cfg, comp, folds, rd)
    other_side = tiny_cfg(comp_dir, tiny_root, "gc", "folds.run=[0]", "model.padding_side=left")
    with pytest.raises(UserError, match=r"settings changed \(model.padding_side \(unset\) -> left\)"):
        preflight(other_side, comp, folds, rd)  # ... and set otherwise now


# ---------------------------------------------------------------- 2: divergence

def test_diverged_fold_stops_before_writing_that_step(workdir, comp_dir, tiny_root, monkeypatch):
    import torch

    step_ = train_module.optimizer_step

    def poisoned(acc, model, *a):
        applied = step_(acc, model, *a)
        if a[3] == 2:  # after the 3rd update (the first evaluation, at step 2, was fine)
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
        return applied

    monkeypatch.setattr(train_module, "optimizer_step", poisoned)
    cfg = tiny_cfg(comp_dir, tiny_root, "nan")
    comp, folds, rd = setup(cfg)
    with pytest.raises(UserError, match=r"^fold 0 diverged at step 4 \(NaN/inf outputs\): lower train.lr \(now "
                                        r"0.005\).*delete .*fold0 to train it again"):
        train_folds(cfg, comp, folds, rd)
    assert steps(rd) == [2] and not list(rd.fold(0).glob(".tmp-step*"))
    assert np.isfinite(np.load(rd.step(0, 2) / "valid_probs.npy")).all()
    assert not (rd.fold(0) / "done.json").exists()


# ---------------------------------------------------------------- 3: probabilities checked

def test_bad_probabilities_are_recomputed_or_refused(workdir, comp_dir, capsys):
    cfg, comp, folds, rd = fake_transformer_run(comp_dir)
    predict(cfg, comp, folds, rd, predictor=FakePredictor())
    cache = rd.step(2, 200) / "test_probs.npy"
    bad = np.load(cache)
    bad[0, 0] = np.nan
    np.save(cache, bad)
    (rd.step(3, 200) / "test_probs.npy").write_bytes(b"\x93NUMPY garbage")
    fake = FakePredictor()
    capsys.readouterr()
    predict(cfg, comp, folds, rd, predictor=fake)
    assert sorted(fake.calls) == [rd.step(2, 200), rd.step(3, 200)]  # recomputed, after a one-line note each
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and str(cache) in notes[0] + notes[1] and "recomputing it" in notes[0]
    assert np.isfinite(np.load(cache)).all()

    nan = lambda cfg, d, labels, texts: np.full((len(texts), len(labels)), np.nan)
    (rd.step(1, 200) / "test_probs.json").unlink()
    with pytest.raises(UserError, match=r"test predictions of .*fold1/step200: .* NaN"):
        predict(cfg, comp, folds, rd, predictor=nan)
    assert not (rd.step(1, 200) / "test_probs.json").exists()  # never cached

    probs = rd.step(0, 200) / "valid_probs.npy"
    probs.write_bytes(probs.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match=rf"{probs} is damaged .*pick another step of fold 0"):
        predict(cfg, comp, folds, rd, predictor=FakePredictor())
    np.save(probs, np.full((int((folds["fold"] == 0).sum()), len(comp.labels)), 1.5, np.float32))
    with pytest.raises(UserError, match=rf"{probs}: .* outside \[0, 1\]"):
        predict(cfg, comp, folds, rd, predictor=FakePredictor())


# ---------------------------------------------------------------- 4: damaged checkpoint files

def damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if how == "truncated" else b"\x00garbage\xff" * 50)


@pytest.mark.parametrize(("name", "how"), [("resume.pt", "truncated"), ("model.safetensors", "garbage"),
                                           ("metrics.json", "truncated")])
def test_damaged_newest_resume_checkpoint_trains_the_fold_again(workdir, comp_dir, tiny_root, capsys, name, how):
    cfg = tiny_cfg(comp_dir, tiny_root, "dmg")
    comp, folds, rd = setup(cfg)
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(4),))
    damage(rd.step(0, 4) / name, how)
    capsys.readouterr()
    train_folds(cfg, comp, folds, rd)
    out = capsys.readouterr().out
    assert f"note: {rd.step(0, 4) / name}" in out and "training fold 0 again from step 0" in out
    assert [h["step"] for h in history(rd) if h.get("event") in ("start", "resume")] == [0, 0]
    assert steps(rd) == [2, 4, 6] and (rd.fold(0) / "done.json").is_file()
    assert not checkpoints.checkpoint_problem(rd.step(0, 4))


def test_damaged_resume_state_falls_back_to_an_older_intact_one(workdir, comp_dir, tiny_root, capsys):
    straight = tiny_cfg(comp_dir, tiny_root, "straight")
    comp, folds, rd_a = setup(straight)
    train_folds(straight, comp, folds, rd_a)
    cfg = tiny_cfg(comp_dir, tiny_root, "fallback")
    rd = RunDir.of(cfg)
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(2),))
    older = (rd.step(0, 2) / "resume.pt").read_bytes()
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(4),))
    (rd.step(0, 2) / "resume.pt").write_bytes(older)  # as if the newer save had been cut before dropping it
    damage(rd.step(0, 4) / "resume.pt", "garbage")
    capsys.readouterr()
    train_folds(cfg, comp, folds, rd)
    assert f"resuming fold 0 from the older intact {rd.step(0, 2)}" in capsys.readouterr().out
    assert [h["step"] for h in history(rd) if h.get("event") in ("start", "resume")] == [0, 2, 2]
    for step in (4, 6):  # the same run as without any fault
        np.testing.assert_allclose(np.load(rd.step(0, step) / "valid_probs.npy"),
                                   np.load(rd_a.step(0, step) / "valid_probs.npy"), atol=1e-5)

    weights = rd.step(0, 6) / "model.safetensors"
    damage(weights, "truncated")
    with pytest.raises(UserError, match=rf"^{weights} is damaged \(truncated or corrupted\?\).*pick another"):
        tm.load_checkpoint(cfg, rd.step(0, 6), comp.labels)
    damage(rd.fold(0) / "done.json", "truncated")
    with pytest.raises(UserError, match=rf"{rd.fold(0) / 'done.json'} is not valid JSON.*delete .*fold0 to train"):
        train_folds(cfg, comp, folds, rd)


def test_damaged_metrics_are_skipped_by_ranking_listing_and_pruning(workdir, capsys):
    _, rd = fake_run(n_folds=1, done=False)
    broken = rd.step(0, 400) / "metrics.json"  # the best by val_loss
    broken.write_text('{"val_loss": 0.2')
    capsys.readouterr()
    assert makes_top_k(rd.fold(0), {"val_loss": 0.29}, 2, "val_loss")  # 0.25 (step 400) unreadable: 2nd best
    prune(rd.fold(0), 2, "val_loss")
    assert steps(rd) == [200, 300, 400]  # the damaged one is neither ranked nor deleted
    assert list(list_checkpoints(rd, 0)["step"]) == [200, 300]
    notes = capsys.readouterr().out.strip().splitlines()
    assert notes == [f"note: skipping checkpoint {rd.step(0, 400)}: {broken} is not valid JSON (truncated or "
                     "corrupted?): Expecting ',' delimiter at line 1 column 17"]


def test_damaged_selection_yaml_is_a_one_line_error(workdir, capsys):
    cfg, rd = fake_run()
    checkpoints.select(cfg)
    rd.selection.write_bytes(b"\xff\xfe\x00garbage")
    for argv in (["select", "x"], ["select", "x", "--fold", "0", "--step", "100"]):
        with pytest.raises(SystemExit) as e:
            checkpoints.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {rd.selection} is not UTF-8 text (corrupted?): fix it, or delete it to select by " \
                      "the rule again (manual picks are lost)"
    rd.selection.write_text("rule: best_f1\nfolds: [1, 2\n")
    with pytest.raises(UserError, match=f"{rd.selection} is not valid YAML"):
        checkpoints.saved_rule(rd)


def test_predict_preflight_checks_selected_checkpoints(workdir, comp_dir):
    cfg, comp, folds, rd = fake_transformer_run(comp_dir)
    checkpoints.select(cfg, manual={3: 300})
    predict_mod.preflight(cfg, comp, folds, rd, predict_only=True)
    (rd.step(3, 300) / "valid_probs.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"selection.yaml picks fold 3 step 300, but .*valid_probs.npy is damaged"):
        predict_mod.preflight(cfg, comp, folds, rd, predict_only=True)
    with pytest.raises(UserError, match=r"picks fold 3 step 300"):  # a manual pick: checked before training too
        predict_mod.preflight(cfg, comp, folds, rd)


# ---------------------------------------------------------------- 5: a full disk

class FullDisk:
    def save_pretrained(self, path):
        Path(path).mkdir(parents=True)
        (Path(path) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(path) / "model.safetensors"))


def test_full_disk_while_saving_is_a_user_error_without_temp_folder(tmp_path):
    fold_dir = tmp_path / "fold0"
    fold_dir.mkdir()
    with pytest.raises(UserError, match=rf"^cannot write checkpoint {fold_dir / 'step4'}: No space left on device "
                                        rf"\(check that {fold_dir} is writable"):
        save_checkpoint(fold_dir, 4, FullDisk(), None, {"step": 4}, np.zeros((2, 2)), None)
    assert list(fold_dir.iterdir()) == []


# ---------------------------------------------------------------- 7: --folds

def test_folds_option_taken_literally():
    assert parse_folds("0, 3") == [0, 3] and parse_folds("7", 10) == [7]
    assert parse_folds("0-2,5", 10) == [0, 1, 2, 5] and parse_folds("4-4") == [4]
    for text, message in [("", "comma-separated fold numbers"), (",", "comma-separated"), ("0,,3", "got '0,,3'"),
                          ("1.0", "comma-separated"), ("\u0663", "comma-separated"), ("-1", "comma-separated"),
                          ("0,0", "names fold 0 twice"), ("2,10", r"fold 10, outside 0..9 \(folds.n_folds=10\)"),
                          ("3-1", "runs backwards"), ("0-2,1", "names fold 1 twice"), ("8-10", "fold 10, outside")]:
        with pytest.raises(UserError, match=message):
            parse_folds(text, 10)


# ---------------------------------------------------------------- llm_finetune

def test_llm_finetune_fold_follows_test_texts_and_damaged_files(workdir, comp_dir, tmp_path, capsys):
    from test_llm_finetune import CORPUS
    from tiny_lm import save_decoder

    from src.pipeline import run

    decoder = save_decoder(tmp_path / "lm", CORPUS)
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=ft", "model_type=llm_finetune", "folds.n_folds=5",
                             "folds.run=[0]", f"model.name_or_path={decoder}", "llm.max_train_rows=6",
                             "llm.max_test_rows=3", "llm.max_new_tokens=3", "train.max_steps=1",
                             "train.batch_size=4", "lora.r=2"])
    run(cfg)
    fold = Path("checkpoints/ft/fold0")
    assert json.loads((fold / "done.json").read_text())["fingerprint_parts"]["data"]["test texts"] != "none"
    test = pd.read_csv(comp_dir / "test.csv", dtype=str)
    test["Tweet"] = test["Tweet"] + " edited"  # test.csv edited in place: the readout is stale
    test.to_csv(comp_dir / "test.csv", index=False)
    capsys.readouterr()
    run(cfg)
    assert "fold 0: data changed (test texts); training it again" in capsys.readouterr().out
    damage(fold / "readout.npz", "truncated")
    run(cfg)
    assert "readout.npz is damaged (truncated or corrupted?)" in capsys.readouterr().out
    steps = fold / "steps_oof.jsonl"
    steps.write_text(steps.read_text()[:-9])  # cut inside its last record
    run(cfg)
    out = capsys.readouterr().out
    assert re.search(rf"fold 0: {re.escape(str(steps))} line \d+ is not valid JSON .*; training it again", out), out
    damage(fold / "done.json", "garbage")
    with pytest.raises(UserError, match=r"done.json is not valid JSON.*delete .*fold0 to train the fold again"):
        family("llm_finetune").preflight(cfg, load_competition(cfg.data), *_folds(cfg))


def _folds(cfg):
    from src.folds import ensure_folds

    folds, _ = ensure_folds(cfg, load_competition(cfg.data), verbose=False)
    return folds, RunDir.of(cfg)


def test_checkpoint_helpers_moved_to_one_module():
    import src.checkpoints as ck

    for name in ("resumable", "save_checkpoint", "_key", "_ranked", "prune", "makes_top_k", "find_resume",
                 "repair_resume", "checkpoint_problem"):
        assert callable(getattr(ck, name))
    assert train_module.save_checkpoint is ck.save_checkpoint


class _Payload:
    """Unpickling this runs a shell command (what a crafted resume.pt in someone else's run folder would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_resume_state_never_runs_code(workdir, comp_dir, tiny_root, capsys):
    """resume.pt is read with weights_only=True: a pickle that would run a command is refused (the fold resumes from
    an older intact state or trains again, with a note), and the command never runs."""
    import torch

    cfg = tiny_cfg(comp_dir, tiny_root, "crafted")
    comp, folds, rd = setup(cfg)
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(4),))
    marker = workdir / "pwned"
    state = torch.load(rd.step(0, 4) / "resume.pt", weights_only=True)
    torch.save({**state, "position": {"step": 4, "epoch": 0, "micro": 4, "elapsed_s": _Payload(marker)}},
               rd.step(0, 4) / "resume.pt")
    capsys.readouterr()
    assert train_module.check_fold(cfg, comp, folds, rd, 0) is False  # preflight's look: no code either
    train_folds(cfg, comp, folds, rd)
    out = capsys.readouterr().out
    assert not marker.exists()
    assert "holds objects a safe load refuses" in out and "training fold 0 again from step 0" in out
    assert (rd.fold(0) / "done.json").is_file()


def test_a_resume_state_of_the_previous_version_still_resumes(workdir, comp_dir, tiny_root):
    """Earlier versions saved numpy's RNG key array itself: a plain uint32 array is still read (safely)."""
    import torch

    cfg = tiny_cfg(comp_dir, tiny_root, "legacy")
    comp, folds, rd = setup(cfg)
    with pytest.raises(Interrupt):
        train_folds(cfg, comp, folds, rd, callbacks=(stop_at(4),))
    path = rd.step(0, 4) / "resume.pt"
    state = torch.load(path, weights_only=True)
    for rng in state["rng"]:
        kind, keys, *rest = rng["numpy"]
        rng["numpy"] = (kind, keys.numpy().astype(np.uint32), *rest)
    torch.save(state, path)
    train_folds(cfg, comp, folds, rd)
    assert [h["step"] for h in history(rd) if h.get("event") in ("start", "resume")] == [0, 4]
