"""W&B records results: every finished run (TF-IDF, blend, stack, and transformer runs through the same finalize)
logs a summary run with its figures, per-label table, thresholds and output files; tested with the real wandb in
offline mode, read back from the run's .wandb log."""

import pytest
from test_ensemble import fake_member

from src.config import load_config
from src.ensemble import blend
from src.errors import UserError
from src.pipeline import run
from src.stack import stack

wandb = pytest.importorskip("wandb")
from wandb_log import logged_runs  # noqa: E402


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Real wandb, offline, everything it writes under tmp_path/wb."""
    root = tmp_path / "wb"
    for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_CONFIG_DIR", "config")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb.teardown()  # wandb keeps its settings (WANDB_DIR...) for the process: start each test afresh
    yield root
    wandb.teardown()


def test_a_finished_run_logs_its_results_and_outputs(workdir, comp_dir, offline, capsys):
    result = run(load_config(None, [f"data.data_dir={comp_dir}", "exp=t", "folds.n_folds=5", "tfidf.min_df=1",
                                    "output.plots=false", "train.report_to=wandb", "metric=jaccard"]))
    runs = logged_runs(offline)
    assert list(runs) == ["t"]
    t = runs["t"]
    assert t["job_type"] == "summary" and t["group"] == "t"
    s = t["summary"]
    assert s["metric"] == "jaccard" and s["oof/jaccard"] == pytest.approx(result["oof"]["jaccard"])
    assert s["oof_crossfit/jaccard"] == pytest.approx(result["oof_crossfit"]["jaccard"])
    assert s["oof/macro_f1"] == pytest.approx(result["oof"]["macro_f1"]) and "per_label_f1/trust" in s
    kind, files = t["artifacts"]["t-outputs"]
    assert kind == "run-outputs" and sorted(files) == ["config.yaml", "metrics.json", "oof.csv", "per_label.csv",
                                                       "t.csv", "test.csv", "thresholds.json"]
    assert {kind for kind, _ in t["artifacts"].values()} >= {"run_table"}  # per-label table and thresholds
    assert "W&B: summary run 't'" in capsys.readouterr().out


def test_blends_and_stacks_log_their_own_figures(workdir, comp_dir, offline):
    fake_member(comp_dir, "m1", seed=1)
    fake_member(comp_dir, "m2", seed=2)
    b = blend(["m1", "m2"], "b", [f"data.data_dir={comp_dir}", "train.report_to=wandb"], trials=5)
    stack(["m1", "m2"], "st", [f"data.data_dir={comp_dir}", "train.report_to=wandb"])
    runs = logged_runs(offline)
    assert sorted(runs) == ["b", "st"]  # one summary each (finalize inside them logs nothing of its own)
    assert runs["b"]["summary"]["ensemble/nested_macro_f1"] == pytest.approx(b["ensemble"]["nested_macro_f1"])
    assert "stack/crossfit_macro_f1" in runs["st"]["summary"]
    assert "b.csv" in runs["b"]["artifacts"]["b-outputs"][1]


def test_wandb_without_credentials_is_refused_before_any_work(workdir, comp_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(workdir / "no-netrc"))
    with pytest.raises(UserError, match="no W&B credentials"):
        run(load_config(None, [f"data.data_dir={comp_dir}", "exp=w", "train.report_to=wandb"]))
    assert not (workdir / "checkpoints/w").exists() and not (workdir / "folds").exists()
    fake_member(comp_dir, "m1", seed=1)
    fake_member(comp_dir, "m2", seed=2)
    with pytest.raises(UserError, match="no W&B credentials"):
        blend(["m1", "m2"], "bw", [f"data.data_dir={comp_dir}", "train.report_to=wandb"])
    assert not (workdir / "checkpoints/bw").exists()
