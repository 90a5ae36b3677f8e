"""`python -m src tune`: an Optuna search whose trials are ordinary runs, resumable (the study in SQLite under the run
folder, or a shared storage URL), pruned on a transformer's first-fold evaluations; refusals are one line, before
anything is written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from src import pipeline, tune
from src.config import load_config
from src.tune import Objective, Plan, Pruning, Stopped, main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["folds.n_folds=2", "tfidf.min_df=1", "output.plots=false", "tfidf.n_jobs=1"]
C = "tfidf.C: {low: 0.1, high: 10, log: true}\n"


def space(workdir, text: str = C) -> str:
    path = workdir / "space.yaml"
    path.write_text(text)
    return str(path)


def honest(workdir, exp: str, metric: str = "macro_f1") -> float:
    return json.loads((workdir / "checkpoints" / exp / "metrics.json").read_text())["oof_crossfit"][metric]


def load(workdir, name: str = "tfidf-tune"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/checkpoints/{name}/study.db")


@pytest.fixture
def fake_run(monkeypatch):
    """pipeline.run stood in for: the figure is tfidf.C / 100 (the runs it was asked for are recorded)."""
    runs = []

    def run(cfg, callbacks=()):
        runs.append(cfg)
        figures = {"macro_f1": cfg.tfidf.C / 100, "jaccard": cfg.tfidf.C / 200}
        return {"oof": figures, "oof_crossfit": figures}

    monkeypatch.setattr(pipeline, "run", run)
    return runs


def test_each_trial_is_a_run_and_a_rerun_resumes_the_study(workdir, comp_dir, capsys):
    argv = ["--space", space(workdir), "--trials", "3", f"data.data_dir={comp_dir}", *FAST]
    result = main(argv)
    runs = [f"tfidf-t{n}" for n in range(3)]
    assert all((workdir / "checkpoints" / r / "metrics.json").is_file() for r in runs)
    assert (workdir / "checkpoints/tfidf-tune/study.db").is_file()
    figures = {r: honest(workdir, r) for r in runs}
    best = max(figures, key=figures.get)
    assert result["exp"] == best and result["value"] == figures[best] and result["trials"] == 3
    saved = yaml.safe_load((workdir / "checkpoints/tfidf-tune/best.yaml").read_text())
    assert saved["exp"] == best and saved["overrides"] == [f"tfidf.C={saved['settings']['tfidf.C']}"]
    assert yaml.safe_load((workdir / "checkpoints" / best / "config.yaml").read_text())["tfidf"]["C"] == \
        saved["settings"]["tfidf.C"]
    out = capsys.readouterr().out
    assert out.count("[tfidf-tune] trial ") == 3 and f"again: python -m src run data.data_dir={comp_dir}" in out

    before = (workdir / "checkpoints/tfidf-t0/metrics.json").stat().st_mtime_ns
    assert main([*argv[:3], "4", *argv[4:]])["trials"] == 4  # the rest only: one more trial
    assert [t.user_attrs["exp"] for t in load(workdir).trials] == [*runs, "tfidf-t3"]
    assert (workdir / "checkpoints/tfidf-t0/metrics.json").stat().st_mtime_ns == before
    assert main(argv)["trials"] == 4  # already there: nothing trained, the table again
    assert "trial 4" not in capsys.readouterr().out


def test_the_objective_is_the_runs_metric(workdir, comp_dir):
    result = main(["--space", space(workdir), "--trials", "1", f"data.data_dir={comp_dir}", *FAST,
                   "data.metric=jaccard", "--study", "jac"])
    assert result["metric"] == "jaccard" and result["exp"] == "jac-t0"  # another study: its own run names
    assert result["value"] == honest(workdir, "jac-t0", "jaccard") and result["direction"] == "maximize"
    assert Plan(None, [], None, load_config(None, ["data.metric=log_loss"]), {}).direction == "minimize"


def test_one_fold_trials_are_judged_in_sample(workdir, comp_dir, capsys):
    result = main(["--space", space(workdir), "--trials", "1", "--folds", "0", f"data.data_dir={comp_dir}", *FAST])
    metrics = json.loads((workdir / "checkpoints/tfidf-t0/partial/metrics.json").read_text())
    assert metrics["oof_crossfit"] is None and result["value"] == metrics["oof"]["macro_f1"]
    assert "in-sample OOF" in capsys.readouterr().out and result["figure"].startswith("in-sample")


@pytest.mark.parametrize("text, extra, message", [
    ("tfidf.nope: {low: 1, high: 2}\n", [], "unknown config key 'tfidf.nope'"),
    ("tfidf.C: {low: 1}\n", [], "'tfidf.C' must be {low: L, high: H"),
    ("tfidf.C: {low: 2, high: 1}\n", [], "'tfidf.C': "),
    ("tfidf.C: {low: 0, high: 1, log: true}\n", [], "'tfidf.C': "),
    ("tfidf.C: {low: 0.1, high: 1, log: yes please}\n", [], "log must be true or false"),
    ("tfidf.C: {low: one, high: 2}\n", [], "low must be a number"),
    ("tfidf.C: {choices: []}\n", [], "choices must be a non-empty list"),
    ("tfidf.C: {choices: [1, 1]}\n", [], "choices name a value twice"),
    ("thresholds.mode: {choices: [global, nope]}\n", [], "thresholds.mode must be one of"),
    ("tfidf.solver: {low: 1, high: 2}\n", [], "'tfidf.solver' is not a number setting"),
    ("tfidf.max_features: {low: 1000.0, high: 5000.0}\n", [], "'tfidf.max_features' is a whole number"),
    ("data.metric: {choices: [jaccard, macro_f1]}\n", [], "'data.metric' cannot be searched"),
    ("exp: {choices: [a, b]}\n", [], "'exp' cannot be searched"),
    ("[1, 2]\n", [], "must map config keys to distributions"),
    ("tfidf.C: [\n", [], "is not valid YAML"),
    ("!!python/object/apply:os.system [echo hi]\n", [], "is not valid YAML"),
    (C, ["tfidf.C=2"], "'tfidf.C' is both searched"),
    (C, ["--trials", "0"], "--trials must be >= 1"),
    (C, ["--study", "a/b"], "--study 'a/b' must be a plain name"),
    (C, ["--storage", "nope://x"], "cannot open the study storage nope://x"),
])
def test_refusals_are_one_line_before_anything_is_written(workdir, comp_dir, capsys, text, extra, message):
    with pytest.raises(SystemExit) as e:
        main(["--space", space(workdir, text), "--trials", "2", *extra, f"data.data_dir={comp_dir}", *FAST])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1
    assert {p.name for p in workdir.iterdir()} == {"space.yaml", "data"}


def test_the_space_files_of_the_kit_check_out():
    for config, path in (("tfidf", "tfidf"), ("minilm-l6", "encoder")):
        p = tune.plan(str(ROOT / f"configs/{config}.yaml"), [], None, str(ROOT / f"configs/spaces/{path}.yaml"), None)
        assert p.space and p.stem == p.base.exp and p.direction == "maximize"


def test_a_study_refuses_what_would_mix_it_up(workdir, comp_dir, fake_run, capsys):
    argv = ["--space", space(workdir), "--trials", "1", f"data.data_dir={comp_dir}", *FAST]
    main(argv)
    with pytest.raises(SystemExit):
        main([*argv, "data.metric=jaccard"])  # the study's values are macro-F1s
    assert "study 'tfidf-tune' searches for the best macro_f1, not jaccard" in capsys.readouterr().err
    (workdir / "checkpoints/other-t0").mkdir()  # another search's run, where study 'other' would put its trial 0
    with pytest.raises(SystemExit):
        main([*argv, "--study", "other"])
    assert "checkpoints/other-t0 is not a trial of study 'other'" in capsys.readouterr().err
    main([*argv[:3], "2", *argv[4:], "tfidf.sublinear_tf=false"])
    assert "was started with other settings (tfidf.sublinear_tf: True -> False)" in capsys.readouterr().out


def test_a_shared_storage_splits_the_trials_between_machines(workdir, comp_dir, fake_run):
    url = f"sqlite:///{workdir}/shared.db"
    argv = ["--space", space(workdir), "--storage", url, f"data.data_dir={comp_dir}", *FAST]
    main([*argv, "--trials", "2", "--seed", "1"])
    result = main([*argv, "--trials", "3", "--seed", "2", "output.checkpoints_dir=pod2"])  # a second machine
    study = optuna.load_study(study_name="tfidf-tune", storage=url)
    assert len(study.trials) == 3 and [c.exp for c in fake_run] == ["tfidf-t0", "tfidf-t1", "tfidf-t2"]
    assert fake_run[2].output.checkpoints_dir == "pod2" and result["value"] == study.best_value
    assert not (workdir / "checkpoints/tfidf-tune/study.db").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_dead_trial_is_retried_with_its_values_and_its_run(workdir, comp_dir, fake_run, monkeypatch):
    """A process killed mid-trial leaves it RUNNING: once its heartbeat is stale Optuna fails it and queues it
    again, and the retry trains (resumes) the original's run folder."""
    monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune, "GRACE_S", 1)
    argv = ["--space", space(workdir), "--trials", "1", f"data.data_dir={comp_dir}", *FAST]
    p = tune.plan(None, argv[4:], None, argv[1], None)
    study = tune.open_study(p, None, "tfidf-tune", 42)
    study.enqueue_trial({"tfidf.C": 0.5})
    dead = study.ask()
    dead.suggest_float("tfidf.C", 0.1, 10, log=True)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2.1)
    main(argv)
    states = [(t.state, t.params, t.user_attrs.get("exp")) for t in load(workdir).trials]
    assert states == [(TrialState.FAIL, {"tfidf.C": 0.5}, None), (TrialState.COMPLETE, {"tfidf.C": 0.5}, "tfidf-t0")]
    assert [c.exp for c in fake_run] == ["tfidf-t0"]


def test_ctrl_c_queues_the_trial_again(workdir, comp_dir, fake_run, monkeypatch, capsys):
    argv = ["--space", space(workdir), "--trials", "2", f"data.data_dir={comp_dir}", *FAST]

    def interrupted(cfg, callbacks=()):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline, "run", interrupted)
        with pytest.raises(KeyboardInterrupt):
            main(argv)
    assert "trial 0 (tfidf-t0) is queued again" in capsys.readouterr().out
    main(argv)
    trials = load(workdir).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params and [c.exp for c in fake_run] == ["tfidf-t0", "tfidf-t2"]


def test_failing_trials_are_recorded_and_stop_the_search_when_they_repeat(workdir, comp_dir, monkeypatch, capsys):
    from src.errors import UserError

    def diverges(cfg, callbacks=()):
        raise UserError("fold 0 diverged")

    monkeypatch.setattr(pipeline, "run", diverges)
    with pytest.raises(SystemExit):
        main(["--space", space(workdir), "--trials", "5", f"data.data_dir={comp_dir}", *FAST])
    captured = capsys.readouterr()
    assert captured.out.count("failed: fold 0 diverged") == 3
    assert "3 trials in a row failed, the last: fold 0 diverged" in captured.err
    assert [t.state for t in load(workdir).trials] == [TrialState.FAIL] * 3


def finished(study, value: float, step: int = 2) -> None:
    """A finished trial whose first fold scored `value` at `step`."""
    study.add_trial(optuna.create_trial(value=value, params={"tfidf.C": 1.0}, intermediate_values={step: value},
                                        distributions={"tfidf.C": FloatDistribution(0.1, 10, log=True)}))


@pytest.mark.parametrize("metric, score, others", [("macro_f1", 0.2, 0.8), ("log_loss", -0.9, 0.3)])
def test_pruning_reports_the_first_folds_scores_in_the_studys_direction(metric, score, others):
    study = optuna.create_study(direction="minimize" if metric == "log_loss" else "maximize", pruner=tune.pruner())
    for _ in range(3):
        finished(study, others)
    trial = study.ask()
    sign = -1 if metric == "log_loss" else 1
    callback = Pruning(trial, fold=1, sign=sign)
    callback({"fold": 0, "step": 2, "score": score, "metric": metric})  # not the first trained fold: ignored
    assert trial.should_prune() is False
    with pytest.raises(Stopped, match=f"pruned at fold 1 step 2: {metric} {abs(score):.4f}"):
        callback({"fold": 1, "step": 2, "score": score, "metric": metric})
    assert study.trials[-1].intermediate_values == {2: sign * score}
    fine = Pruning(study.ask(), fold=1, sign=sign)
    fine({"fold": 1, "step": 2, "score": sign * others, "metric": metric})  # at the median: goes on


def test_a_pruned_transformer_trial_stops_its_run_and_is_recorded_pruned(workdir, monkeypatch):
    """The objective hands transformer runs the pruning callback; `Stopped` (like Ctrl-C, so the run keeps its
    config.yaml) becomes a PRUNED trial."""
    def training(cfg, callbacks=()):
        for step in (1, 2):
            callbacks[0]({"fold": 0, "step": step, "score": 0.1, "metric": "macro_f1"})
        raise AssertionError("not pruned")

    monkeypatch.setattr(pipeline, "run", training)
    base = load_config(None, ["model_type=transformer", "exp=tiny", "folds.n_folds=2"])
    p = Plan(None, ["model_type=transformer", "exp=tiny", "folds.n_folds=2"], None, base,
             {"train.lr": FloatDistribution(1e-5, 1e-3, log=True)}, stem="tiny")
    study = optuna.create_study(direction="maximize", pruner=tune.pruner())
    for _ in range(3):
        finished(study, 0.9, step=1)
    study.optimize(Objective(study, p), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == TrialState.PRUNED and trial.intermediate_values == {1: 0.1}
    assert trial.user_attrs["exp"] == "tiny-t3" and trial.user_attrs["run"].endswith("checkpoints/tiny-t3")


def test_a_tiny_transformer_search_prunes_inside_training(workdir, comp_dir, tiny_root, one_thread, fresh_accelerator):
    """The callback reaches the training loop (pipeline.run -> the transformer family -> train_folds): trial 3 is
    pruned at its first evaluation (the 3 trials before it scored 2 there) and its run stays, config.yaml included."""
    from test_transformer import make_tiny

    config = workdir / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "exp": "tiny", "model_type": "transformer", "data": {"data_dir": str(comp_dir)}, "folds": {"n_folds": 2},
        "model": {"name_or_path": str(make_tiny("bert", tiny_root)), "max_length": 24},
        "train": {"max_steps": 2, "eval_every": 1, "batch_size": 16, "eval_batch_size": 100},
        "output": {"plots": False}}))
    (workdir / "checkpoints/tiny-tune").mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{workdir}/checkpoints/tiny-tune/study.db", study_name="tiny-tune",
                                direction="maximize")
    for _ in range(3):
        study.add_trial(optuna.create_trial(value=2.0, params={"train.lr": 1e-3}, intermediate_values={1: 2.0},
                                            distributions={"train.lr": FloatDistribution(1e-4, 1e-2, log=True)}))
    result = main(["--config", str(config), "--space", space(workdir, "train.lr: {low: 1.0e-4, high: 1.0e-2, log: "
                   "true}\n"), "--trials", "4"])
    trial = load(workdir, "tiny-tune").trials[3]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1] and result["trials"] == 4
    run = workdir / "checkpoints/tiny-t3"
    assert (run / "config.yaml").is_file() and (run / "fold0").is_dir() and not (run / "fold0/done.json").exists()
    assert not (run / "fold1").exists()
