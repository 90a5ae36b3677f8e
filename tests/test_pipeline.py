import json
import os

import pandas as pd
import pytest

from src.__main__ import main as cli_main
from src.config import load_config
from src.errors import UserError
from src.pipeline import run


def test_tfidf_end_to_end(workdir, comp_dir):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=t", "folds.n_folds=5", "tfidf.min_df=1"])
    result = run(cfg)
    assert result["complete"] and result["oof_rows"] == 200
    assert result["oof"]["macro_f1"] > 0.7  # keywords make the synthetic labels learnable
    oof = pd.read_csv(workdir / "checkpoints/t/oof.csv")
    assert sorted(oof["id"]) == sorted(pd.read_csv(comp_dir / "train.csv")["ID"])
    sub = pd.read_csv(workdir / "submissions/t.csv")
    sample = pd.read_csv(comp_dir / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and (sub["ID"] == sample["ID"]).all()
    assert set(sub.iloc[:, 1:].to_numpy().ravel()) <= {0, 1}
    th = json.loads((workdir / "checkpoints/t/thresholds.json").read_text())
    assert list(th["thresholds"]) == list(sample.columns[1:])
    for png in ("roc.png", "confusion.png", "f1_per_label.png"):
        assert (workdir / "checkpoints/t/report" / png).stat().st_size > 1000


def test_partial_run_writes_no_submission(workdir, comp_dir):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=p", "folds.n_folds=5", "folds.run=[1]",
                             "tfidf.min_df=1"])
    result = run(cfg)
    assert not result["complete"] and result["folds"] == [1] and result["oof_rows"] == 40
    assert not (workdir / "submissions/p.csv").exists()
    assert result["oof_crossfit"] is None  # one fold: no other folds to tune its thresholds on


def test_finalize_reports_thresholds_tuned_on_other_folds(workdir, comp_dir, capsys):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=c", "folds.n_folds=5", "tfidf.min_df=1",
                             "thresholds.exclusive=[trust]", "thresholds.shrink=20", "output.plots=false"])
    result = run(cfg)
    assert 0.5 < result["oof_crossfit"]["macro_f1"] < 1 and result["oof_crossfit"] != result["oof"]
    assert "thresholds tuned on the other folds: " in capsys.readouterr().out
    th = json.loads((workdir / "checkpoints/c/thresholds.json").read_text())
    assert th["exclusive"] == ["trust"] and th["shrink"] == 20
    sub = pd.read_csv(workdir / "submissions/c.csv").set_index("ID")
    assert not ((sub["trust"] == 1) & (sub.drop(columns="trust").sum(axis=1) > 0)).any()  # trust stands alone


def test_unknown_exclusive_label_stops_before_training(workdir, comp_dir):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=x", "folds.n_folds=5", "thresholds.exclusive=[neutral]"])
    with pytest.raises(UserError, match="thresholds.exclusive names 'neutral', not a label"):
        run(cfg)
    assert not (workdir / "checkpoints/x").exists()


def test_cli_bad_data_dir_is_one_line(workdir, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["run", "data.data_dir=nowhere"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: data folder 'nowhere' ({workdir / 'nowhere'}) lacks") and "\n" not in err
    assert "kaggle competitions download" in err and "python -m src.data semeval" in err


def test_tfidf_grid_search_reaches_the_model(comp_dir):
    from synth import make_frame

    from src.config import TfidfConfig
    from src.models.tfidf import fit

    df = make_frame(120)
    cfg = TfidfConfig(min_df=1, grid_search=True, grid_C=[0.01, 10.0], grid_word_ngram=[[1, 1]], grid_cv=2)
    model = fit(cfg, df["Tweet"].tolist(), df[["anger", "joy", "fear", "trust"]].to_numpy())
    assert model.get_params()["clf__estimator__C"] == 10.0  # keyword data: weak regularization wins
    assert model.get_params()["features__word__ngram_range"] == (1, 1)


def test_finalize_without_every_test_row_writes_no_submission(workdir, comp_dir):
    from src.pipeline import finalize

    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=s", "folds.n_folds=5", "tfidf.min_df=1",
                             "output.plots=false"])
    assert "submission" in run(cfg)
    test = workdir / "checkpoints/s/test.csv"
    pd.read_csv(test).iloc[:10].to_csv(test, index=False)
    (workdir / "submissions/s.csv").unlink()
    with pytest.raises(UserError, match=r"test.csv covers 10 of 60 test rows .*run the config again"):
        finalize(cfg)  # a complete run with a short test.csv: a damaged file, never a silent 'no submission'
    assert not (workdir / "submissions/s.csv").exists()


@pytest.mark.parametrize("bad", ["thresholds.mode=perlabel", "select.rule=best", "model_type=xgb"])
def test_typos_in_late_settings_stop_before_training(workdir, comp_dir, bad):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", bad])
    with pytest.raises(UserError):
        run(cfg)
    assert not (workdir / "folds").exists()


def test_run_takes_folds_between_overrides_on_the_command_line(workdir, comp_dir):
    cli_main(["run", f"data.data_dir={comp_dir}", "--folds", "1-2", "exp=f", "folds.n_folds=5", "tfidf.min_df=1",
              "output.plots=false"])
    metrics = json.loads((workdir / "checkpoints/f/partial/metrics.json").read_text())
    assert metrics["folds"] == [1, 2] and not metrics["complete"]
    with pytest.raises(SystemExit):
        cli_main(["run", f"data.data_dir={comp_dir}", "--folds", "5", "folds.n_folds=5"])


def test_the_cli_runs_from_any_folder_once_setup_installed_the_kit(tmp_path):
    import subprocess
    import sys
    from importlib import metadata

    try:
        metadata.version("multilabel-text-kit")
    except metadata.PackageNotFoundError:
        pytest.skip("the kit is not installed in this python (setup.sh installs it)")
    p = subprocess.run([sys.executable, "-m", "src", "config", "--get", "exp", "exp=x1"], cwd=tmp_path,
                       capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert p.returncode == 0 and p.stdout.strip() == "x1", p.stderr


@pytest.mark.parametrize("solver", ["lbfgs", "liblinear"])
def test_tfidf_solver_reaches_the_model(solver):
    from src.config import TfidfConfig
    from src.models.tfidf import classifier

    assert classifier(TfidfConfig(solver=solver)).get_params()["solver"] == solver


def test_tfidf_unknown_solver_is_one_line_before_any_write(workdir, comp_dir):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=s", "folds.n_folds=5", "tfidf.solver=saga"])
    with pytest.raises(UserError, match="tfidf.solver must be one of lbfgs, liblinear, got 'saga'"):
        run(cfg)
    assert not (workdir / "checkpoints/s").exists()


def test_a_failed_rerun_leaves_the_finished_run_s_config_as_it_was(workdir, comp_dir, monkeypatch):
    """A setting refused only inside a fold (after config.yaml was written) puts the finished run's config.yaml back:
    it keeps describing that run's oof.csv, test.csv and submission."""
    from src.models import tfidf

    base = [f"data.data_dir={comp_dir}", "exp=t", "folds.n_folds=3", "tfidf.min_df=1", "output.plots=false"]
    run(load_config(None, base))
    saved = (workdir / "checkpoints/t/config.yaml").read_bytes()

    def refused(*a, **k):
        raise UserError("tfidf fold 0: a setting only the fit refuses")

    monkeypatch.setattr(tfidf, "_fold", refused)
    with pytest.raises(UserError, match="only the fit refuses"):
        run(load_config(None, [*base, "tfidf.C=7"]))
    assert (workdir / "checkpoints/t/config.yaml").read_bytes() == saved
