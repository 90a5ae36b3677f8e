"""`python -m src runs`: one table of every run folder (real TF-IDF runs, a partial run, a blend, damaged and
unfinished folders), sorted best first within each metric, written as CSV; refusals are one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from src.config import load_config
from src.ensemble import blend
from src.pipeline import run
from src.runs import COLUMNS, main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real runs in one folder: a, c (macro_f1), j (jaccard), p (fold 1 of 5), blend (a + c), plus a damaged copy
    of a, an unfinished folder and a folder that is no run."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    from synth import make_competition

    comp_dir = make_competition(root / "data")
    base = [f"data.data_dir={comp_dir}", "folds.n_folds=5", "tfidf.min_df=1", "tfidf.n_jobs=1", "output.plots=false"]
    for extra in (["exp=a"], ["exp=c", "tfidf.C=0.1"], ["exp=j", "data.metric=jaccard"], ["exp=p", "folds.run=[1]"]):
        run(load_config(None, [*base, *extra]))
    blend(["a", "c"], "blend", [f"data.data_dir={comp_dir}", "output.plots=false"], trials=5)
    ck = root / "checkpoints"
    shutil.copytree(ck / "a", ck / "broken")
    (ck / "broken" / "config.yaml").write_text("exp: [unclosed\n")
    (ck / "broken" / "metrics.json").write_text('{"exp": "broken", "oof": ')
    (ck / "evil" / "fold0").mkdir(parents=True)
    (ck / "evil" / "config.yaml").write_text("!!python/object/apply:os.system ['touch pwned']\n")
    (ck / "todo" / "fold0").mkdir(parents=True)
    (ck / "todo" / "fold0" / "done.json").write_text(json.dumps({"fold": 0, "elapsed_s": 12.5}))
    (ck / "todo" / "config.yaml").write_text("model_type: transformer\nmodel: {name_or_path: org/tiny, method: lora}\n"
                                             "data: {data_dir: /x/semeval, metric: micro_f1}\nfolds: {n_folds: 3}\n")
    (ck / "_features").mkdir()
    yield root
    mp.undo()


def metrics_of(root, exp: str, partial: bool = False) -> dict:
    return json.loads((root / "checkpoints" / exp / ("partial" if partial else "") / "metrics.json").read_text())


def table(root, *args: str) -> pd.DataFrame:
    return main(["--checkpoints-dir", str(root / "checkpoints"), *args]).set_index("exp")


def test_every_run_folder_is_one_row_with_its_metrics_json_figures(runs, capsys):
    t = table(runs)
    out = capsys.readouterr().out
    assert list(t.reset_index().columns) == COLUMNS and sorted(t.index) == ["a", "blend", "broken", "c", "evil", "j",
                                                                            "p", "todo"]
    for exp in ("a", "c", "j", "blend"):
        m = metrics_of(runs, exp)
        row = t.loc[exp]
        assert row["metric"] == m["metric"] and row["oof"] == m["oof"][m["metric"]] and row["status"] == "complete"
        assert row["wall_s"] == m["wall_s"] and row["submission"] == m["submission"] and row["folds"] == "5/5"
        assert row["dataset"] == "data" and row["note"] == "" and row["date"][:4].isdigit()
    assert t.loc["a", "honest"] == metrics_of(runs, "a")["oof_crossfit"]["macro_f1"]
    assert t.loc["j", "metric"] == "jaccard"
    assert t.loc["j", "honest"] == metrics_of(runs, "j")["oof_crossfit"]["jaccard"]
    b = metrics_of(runs, "blend")["ensemble"]
    assert t.loc["blend", "honest"] == b["nested_macro_f1"]  # weights nested too, not only the thresholds
    assert (t.loc["blend", "type"], t.loc["blend", "model"], t.loc["blend", "method"]) == ("ensemble", "a+c", "prob")
    assert (t.loc["a", "type"], t.loc["a", "model"], t.loc["a", "method"]) == ("tfidf", "tfidf", "logreg")
    p = metrics_of(runs, "p", partial=True)
    assert (t.loc["p", "status"], t.loc["p", "folds"], t.loc["p", "submission"]) == ("partial", "1/5", "")
    assert t.loc["p", "oof"] == p["oof"]["macro_f1"] and np.isnan(t.loc["p", "honest"])  # one fold: no honest figure
    for exp in ("a", "blend", "todo", "broken"):
        assert exp in out


def test_damaged_and_unfinished_folders_show_with_a_note_and_nothing_runs(runs):
    t = table(runs)
    assert t.loc["broken", "status"] == "damaged" and np.isnan(t.loc["broken", "oof"])
    assert "config.yaml unreadable" in t.loc["broken", "note"] and "metrics.json unreadable" in t.loc["broken", "note"]
    assert t.loc["broken", "dataset"] == "data"  # its run.json still read
    assert t.loc["evil", "status"] == "damaged" and "config.yaml unreadable" in t.loc["evil", "note"]
    assert not (runs / "pwned").exists()
    todo = t.loc["todo"]
    assert (todo["status"], todo["folds"], todo["metric"], todo["train_s"]) == ("unfinished", "1/3", "micro_f1", 12.5)
    assert np.isnan(todo["wall_s"])  # no command finished it yet
    assert (todo["model"], todo["method"], todo["dataset"], todo["note"]) == ("org/tiny", "lora", "semeval", "")
    assert "_features" not in t.index


def test_peak_memory_is_the_highest_of_the_run_s_process_and_its_folds(runs, tmp_path):
    t = table(runs)
    for exp in ("a", "c", "j", "blend"):  # real runs: the process that trained and finalized recorded its peak
        peak = metrics_of(runs, exp)["peak_memory"]
        assert t.loc[exp, "ram_gb"] == peak["ram_gb"] > 0.05 and peak["gpu_gb"] is None
        assert np.isnan(t.loc[exp, "gpu_gb"])
    run = tmp_path / "checkpoints" / "gpu"  # folds trained in processes of their own (GPU figures), one older fold
    for k, peak in enumerate(({"ram_gb": 3.5, "gpu_gb": 11.25}, {"ram_gb": 5.25, "gpu_gb": 9.0}, None)):
        (run / f"fold{k}").mkdir(parents=True)
        (run / f"fold{k}" / "done.json").write_text(json.dumps({"fold": k, "elapsed_s": 10, "peak_memory": peak}))
    row = main(["--checkpoints-dir", str(tmp_path / "checkpoints")]).set_index("exp").loc["gpu"]
    assert (row["ram_gb"], row["gpu_gb"], row["train_s"]) == (5.25, 11.25, 30) and np.isnan(row["wall_s"])


def test_default_sort_groups_by_metric_best_honest_first(runs):
    t = main(["--checkpoints-dir", str(runs / "checkpoints")])
    groups = t["metric"].tolist()
    assert groups[:6] == ["macro_f1"] * 6 and groups[6:] == ["jaccard", "micro_f1"]  # most runs first
    macro = t[t["metric"] == "macro_f1"]
    honest = macro["honest"].dropna().tolist()
    assert honest == sorted(honest, reverse=True) and macro["honest"].isna().tolist() == [False] * 3 + [True] * 3
    assert macro["exp"].tolist()[3] == "p"  # no honest figure: after, by oof
    rev = main(["--checkpoints-dir", str(runs / "checkpoints"), "--reverse"])
    assert rev[rev["metric"] == "macro_f1"]["honest"].dropna().tolist() == honest[::-1]
    by_exp = main(["--checkpoints-dir", str(runs / "checkpoints"), "--sort", "exp"])
    assert by_exp["exp"].tolist() == sorted(by_exp["exp"])


def test_log_loss_runs_rank_lowest_first(workdir, capsys):
    for exp, value in (("hi", 0.5), ("lo", 0.2), ("mid", 0.3), ("f1", 0.9)):
        metric = "macro_f1" if exp == "f1" else "log_loss"
        (workdir / "checkpoints" / exp).mkdir(parents=True)
        (workdir / "checkpoints" / exp / "metrics.json").write_text(json.dumps(
            {"exp": exp, "metric": metric, "complete": True, "folds": [0, 1], "oof": {metric: value},
             "oof_crossfit": {metric: value}}))
    t = main([])
    assert t["exp"].tolist() == ["lo", "mid", "hi", "f1"]
    assert t["folds"].tolist() == ["2/?"] * 4
    assert main(["--filter", "*i*"])["exp"].tolist() == ["mid", "hi"] and main(["--filter", "f"])["exp"].tolist() == [
        "f1"]
    capsys.readouterr()
    assert main(["--filter", "zzz"]).empty
    assert "no run of the 4" in capsys.readouterr().out


def test_csv_round_trip(runs, tmp_path):
    t = main(["--checkpoints-dir", str(runs / "checkpoints"), "--csv", str(tmp_path / "runs.csv")])
    numbers = ["oof", "honest", "wall_s", "train_s", "ram_gb", "gpu_gb"]
    back = pd.read_csv(tmp_path / "runs.csv", keep_default_na=False, na_values={c: [""] for c in numbers})
    assert list(back.columns) == COLUMNS
    pd.testing.assert_frame_equal(back[numbers], t[numbers])
    text = [c for c in COLUMNS if c not in numbers]
    assert (back[text].astype(str) == t[text].astype(str)).all().all()


def test_refusals_and_an_empty_folder_are_one_line(workdir, capsys):
    main([])
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "no run folders in checkpoints" in out and "bash train.sh" in out
    with pytest.raises(SystemExit) as e:
        main(["--sort", "speed"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "'speed'" in err and "honest" in err


def test_the_src_entry_point_knows_runs(workdir, capsys):
    from src.__main__ import main as entry

    entry(["runs"])
    assert "no run folders" in capsys.readouterr().out
