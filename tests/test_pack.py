"""Kaggle with Internet off: a finished run packed, then predicted from the read-only pack into another folder."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_transformer import make_tiny

from src.__main__ import main as cli_main
from src.config import load_config
from src.errors import UserError
from src.pack import pack, predict_packed
from src.pipeline import run

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def snapshot(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def read_only(root):
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def run_inference_notebook(pack_dir, exp, data_dir, out_dir):
    """notebooks/kaggle-inference.ipynb executed with its parameters set; the wheel install is a dry run (the demo
    wheel is no real package)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks/kaggle-inference.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"PACK, EXP, DATA_DIR, OUT_DIR = {str(pack_dir)!r}, {exp!r}, {str(data_dir)!r}, {str(out_dir)!r}\n"
        "import subprocess\n_run = subprocess.run\n"
        "subprocess.run = lambda cmd, **kw: _run([*cmd[:3], 'download', '--help'] if 'install' in cmd else cmd, **kw)"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(out_dir)}}).execute()
    return nb


def tiny_run(comp_dir, tiny_root, exp="tr", *extra):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", f"exp={exp}", "model_type=transformer", "folds.n_folds=3",
                             f"model.name_or_path={make_tiny('bert', tiny_root)}", "train.max_steps=4",
                             "train.eval_every=2", "train.batch_size=16", "train.lr=5e-3", "model.max_length=24",
                             "output.plots=false", *extra])
    return run(cfg)


def test_a_packed_run_predicts_from_a_read_only_pack(workdir, comp_dir, tiny_root, tmp_path, capsys):
    tiny_run(comp_dir, tiny_root)
    run(load_config(None, [f"data.data_dir={comp_dir}", "exp=tf", "folds.n_folds=3", "tfidf.min_df=1",
                           "output.plots=false"]))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"PK")
    cli_main(["pack", "tr", "tf", "--out", str(tmp_path / "pack"), "--wheels", str(wheels)])
    packed = tmp_path / "pack"
    manifest = json.loads((packed / "pack.json").read_text())
    assert set(manifest["runs"]) == {"tr", "tf"} and manifest["wheels"] == ["demo-1.0-py3-none-any.whl"]
    step = yaml.safe_load((workdir / "checkpoints/tr/selection.yaml").read_text())["folds"][0]["step"]
    assert sorted(p.name for p in (packed / "checkpoints/tr/fold0").iterdir()) == ["done.json", f"step{step}"]
    assert sorted(p.name for p in (packed / "checkpoints/tf/fold0").iterdir()) == ["model.skops"]
    assert not list(packed.rglob("resume.pt")) and (packed / "src/pipeline.py").is_file()
    assert json.loads((packed / "dataset-metadata.json").read_text())["title"] == "pack"
    read_only(packed)
    before = snapshot(packed)
    out = tmp_path / "working"
    for exp in ("tr", "tf"):  # the competition's own test.csv: each run's submission again
        result = predict_packed(packed, exp, comp_dir, out)
        assert snapshot(packed) == before  # nothing written beside the checkpoints, or anywhere in the pack
        assert result["complete"] and (out / "submission.csv").read_bytes() == (
            workdir / f"submissions/{exp}.csv").read_bytes()
    working = tmp_path / "kaggle-working"  # the inference notebook, as Kaggle runs it (Internet off)
    working.mkdir()
    nb = run_inference_notebook(packed, "tr", comp_dir, working)
    assert snapshot(packed) == before
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"code: {packed / 'src'}" in printed and "wheels installed: ['demo-1.0-py3-none-any.whl']" in printed
    assert (working / "submission.csv").read_bytes() == (workdir / "submissions/tr.csv").read_bytes()
    with pytest.raises(UserError, match=r"is not a packed run \(runs in .*: tr, tf\)"):
        predict_packed(packed, "nope", comp_dir, out)


def other_test_set(comp_dir: Path, root: Path) -> Path:
    """The hidden test set of a code competition: new ids, rows reordered and some dropped, some texts changed."""
    import shutil

    folder = root / "hidden"
    shutil.copytree(comp_dir, folder)
    test = pd.read_csv(comp_dir / "test.csv", dtype=str, keep_default_na=False)
    test = test.iloc[::-1].iloc[5:].reset_index(drop=True)  # reordered, 5 rows dropped
    test["ID"] = [f"hidden-{i:04d}" for i in range(len(test))]
    test.loc[::3, "Tweet"] = test.loc[::3, "Tweet"] + " joyy angery"  # some texts changed
    test.to_csv(folder / "test.csv", index=False)
    sample = pd.read_csv(comp_dir / "sample_submission.csv", dtype=str).iloc[: len(test)].copy()
    sample["ID"] = test["ID"].iloc[::-1].tolist()  # the sample in its own order
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder


def test_a_code_competition_end_to_end_a_packed_blend_predicts_a_hidden_test_set(workdir, comp_dir, tiny_root,
                                                                                  tmp_path):
    """A blend of a tiny transformer, a TF-IDF run and a probe, packed (members inside), the pack read-only: the
    Kaggle inference notebook predicts a different test set; its decisions equal `predict --exp` on that file, and
    `predict --exp` on the competition's own test.csv gives the blend's submission."""
    tiny_run(comp_dir, tiny_root)
    common = [f"data.data_dir={comp_dir}", "folds.n_folds=3", "output.plots=false"]
    run(load_config(None, [*common, "exp=tf", "tfidf.min_df=1"]))
    run(load_config(None, [*common, "exp=pr", "model_type=probe", f"model.name_or_path={make_tiny('bert', tiny_root)}",
                           "model.max_length=24", f"probe.cache_dir={workdir / 'features'}"]))
    from src.ensemble import main as ensemble_main

    ensemble_main(["tr", "tf", "pr", "--out", "bl", "--trials", "20"])
    cli_main(["pack", "bl", "--out", str(tmp_path / "pack")])
    packed = tmp_path / "pack"
    assert set(json.loads((packed / "pack.json").read_text())["runs"]) == {"bl", "tr", "tf", "pr"}
    read_only(packed)
    before = snapshot(packed)

    own = tmp_path / "own.csv"  # the competition's own test set: the blend's submission, row for row
    cli_main(["predict", "--exp", "bl", "--input", str(comp_dir / "test.csv"), "--out", str(own)])
    sub = pd.read_csv(workdir / "submissions/bl.csv", dtype={"ID": str}).set_index("ID")
    mine = pd.read_csv(own, dtype={"ID": str}).set_index("ID").loc[sub.index]
    pd.testing.assert_frame_equal(mine[sub.columns], sub)

    hidden = other_test_set(comp_dir, tmp_path)
    working = tmp_path / "kaggle-working"
    working.mkdir()
    run_inference_notebook(packed, "bl", hidden, working)
    assert snapshot(packed) == before
    kaggle = pd.read_csv(working / "submission.csv", dtype={"ID": str})
    assert kaggle["ID"].tolist() == pd.read_csv(hidden / "sample_submission.csv", dtype=str)["ID"].tolist()
    direct = tmp_path / "direct.csv"
    cli_main(["predict", "--exp", "bl", "--input", str(hidden / "test.csv"), "--out", str(direct)])
    ref = pd.read_csv(direct, dtype={"ID": str}).set_index("ID").loc[kaggle["ID"]].reset_index()
    pd.testing.assert_frame_equal(kaggle, ref[kaggle.columns])
    from_pack = tmp_path / "from_pack.csv"
    cli_main(["predict", "--pack", str(packed), "--input", str(hidden / "test.csv"), "--out", str(from_pack),
              "--probs"])
    probs = pd.read_csv(from_pack, dtype={"ID": str})
    assert probs["ID"].tolist() == pd.read_csv(hidden / "test.csv", dtype=str)["ID"].tolist()  # the input's order
    assert ((probs.iloc[:, 1:] > 0) & (probs.iloc[:, 1:] < 1)).all().all()
    assert snapshot(packed) == before


def test_pack_refuses_unfinished_runs_and_a_used_folder(workdir, comp_dir, tiny_root, tmp_path):
    tiny_run(comp_dir, tiny_root, "part", "folds.run=[0]")
    (tmp_path / "used").mkdir()
    (tmp_path / "used/x").write_text("x")
    with pytest.raises(UserError, match="is not empty"):
        pack(["part"], tmp_path / "used")
    assert os.listdir(tmp_path / "used") == ["x"]
    with pytest.raises(UserError, match=r"does not exist: is 'nope' a run here"):
        pack(["nope"], tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_a_packed_lora_run_reads_its_base_model_from_where_it_is_attached(workdir, comp_dir, tiny_root, tmp_path,
                                                                         monkeypatch):
    import shutil

    base = tmp_path / "llama"
    shutil.copytree(make_tiny("llama", tiny_root), base)
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=lo", "model_type=transformer", "folds.n_folds=3",
                             f"model.name_or_path={base}", "model.method=lora", "train.max_steps=2",
                             "train.eval_every=2", "train.batch_size=16", "model.max_length=24", "output.plots=false"])
    run(cfg)
    pack(["lo"], tmp_path / "pack")
    read_only(tmp_path / "pack")
    shutil.move(base, tmp_path / "kaggle-input-llama")  # the base model as another machine has it
    with pytest.raises(UserError, match="model folder not found"):
        predict_packed(tmp_path / "pack", "lo", comp_dir, tmp_path / "w1")
    result = predict_packed(tmp_path / "pack", "lo", comp_dir, tmp_path / "w2", base_model=str(tmp_path /
                                                                                              "kaggle-input-llama"))
    assert result["complete"]
    assert (tmp_path / "w2/submission.csv").read_bytes() == (workdir / "submissions/lo.csv").read_bytes()


def test_a_run_packs_from_any_folder_and_a_missing_fold_file_writes_nothing(workdir, comp_dir, tmp_path,
                                                                            monkeypatch):
    run(load_config(None, [f"data.data_dir={comp_dir}", "exp=tf", "folds.n_folds=3", "tfidf.min_df=1",
                           "output.plots=false"]))
    saved = yaml.safe_load((workdir / "checkpoints/tf/config.yaml").read_text())
    assert saved["folds"]["dir"] == str(workdir / "folds")  # where the run's folds were, from any folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ck = f"output.checkpoints_dir={workdir / 'checkpoints'}"
    assert pack(["tf"], "pk", [ck])["fold_file"] == "data_k3_s42.csv"
    (workdir / "folds/data_k3_s42.csv").unlink()
    with pytest.raises(UserError, match=r"fold file .*data_k3_s42.csv is missing"):
        pack(["tf"], "pk2", [ck])
    assert not (elsewhere / "pk2").exists()
