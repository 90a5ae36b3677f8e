"""Kaggle with Internet off: a finished run packed, then predicted from the read-only pack into another folder."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
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
    original = tiny_run(comp_dir, tiny_root)
    run(load_config(None, [f"data.data_dir={comp_dir}", "exp=tf", "folds.n_folds=3", "tfidf.min_df=1",
                           "output.plots=false"]))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"PK")
    cli_main(["pack", "tr", "tf", "--out", str(tmp_path / "pack"), "--wheels", str(wheels)])
    packed = tmp_path / "pack"
    manifest = json.loads((packed / "pack.json").read_text())
    assert set(manifest["runs"]) == {"tr", "tf"} and manifest["wheels"] == ["demo-1.0-py3-none-any.whl"]
    steps = manifest["runs"]["tr"]["steps"]
    assert sorted(p.name for p in (packed / "checkpoints/tr/fold0").iterdir()) == ["done.json", f"step{steps['0']}"]
    assert not list(packed.rglob("resume.pt")) and (packed / "src/pipeline.py").is_file()
    assert json.loads((packed / "dataset-metadata.json").read_text())["title"] == "pack"
    read_only(packed)
    before = snapshot(packed)
    out = tmp_path / "working"
    out.mkdir()
    result = predict_packed(packed, "tr", comp_dir, out)
    assert snapshot(packed) == before  # nothing written beside the checkpoints, or anywhere in the pack
    sub = pd.read_csv(out / "submission.csv", dtype={"ID": str})
    sample = pd.read_csv(comp_dir / "sample_submission.csv", dtype={"ID": str})
    assert list(sub.columns) == list(sample.columns) and sub["ID"].tolist() == sample["ID"].tolist()
    np.testing.assert_allclose(pd.read_csv(out / "checkpoints/tr/test.csv").iloc[:, 1:].to_numpy(),
                               pd.read_csv(workdir / "checkpoints/tr/test.csv").iloc[:, 1:].to_numpy(), atol=2e-5)
    assert result["oof"]["macro_f1"] == pytest.approx(original["oof"]["macro_f1"])
    assert predict_packed(packed, "tf", comp_dir, out)["complete"]  # a TF-IDF run: its packed probabilities
    working = tmp_path / "kaggle-working"  # the inference notebook, as Kaggle runs it (Internet off)
    working.mkdir()
    nb = run_inference_notebook(packed, "tr", comp_dir, working)
    assert snapshot(packed) == before
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"code: {packed / 'src'}" in printed and "wheels installed: ['demo-1.0-py3-none-any.whl']" in printed
    pd.testing.assert_frame_equal(pd.read_csv(working / "checkpoints/tr/test.csv"),
                                  pd.read_csv(out / "checkpoints/tr/test.csv"))
    assert (working / "submission.csv").is_file()
    with pytest.raises(UserError, match=r"is not a packed run \(runs in .*: tf, tr\)"):
        predict_packed(packed, "nope", comp_dir, out)


def test_pack_refuses_unfinished_runs_and_a_used_folder(workdir, comp_dir, tiny_root, tmp_path):
    tiny_run(comp_dir, tiny_root, "part", "folds.run=[0]")
    with pytest.raises(UserError, match=r"checkpoints/part holds only a partial run .*: run every fold first"):
        pack(["part"], tmp_path / "p")
    (tmp_path / "used").mkdir()
    (tmp_path / "used/x").write_text("x")
    with pytest.raises(UserError, match="is not empty"):
        pack(["part"], tmp_path / "used")
    assert not (tmp_path / "p").exists() and os.listdir(tmp_path / "used") == ["x"]


def test_a_packed_lora_run_reads_its_base_model_from_where_it_is_attached(workdir, comp_dir, tiny_root, tmp_path):
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
    assert (tmp_path / "w2/submission.csv").is_file() and result["complete"]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "w2/checkpoints/lo/test.csv").iloc[:, 1:].to_numpy(),
                               pd.read_csv(workdir / "checkpoints/lo/test.csv").iloc[:, 1:].to_numpy(), atol=2e-5)


def test_a_run_packs_from_any_folder_and_a_missing_fold_file_writes_nothing(workdir, comp_dir, tmp_path,
                                                                            monkeypatch):
    import yaml

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
    with pytest.raises(UserError, match=r"data_k3_s42.csv \(the fold file of .*checkpoints/tf\) is missing"):
        pack(["tf"], "pk2", [ck])
    assert not (elsewhere / "pk2").exists()
