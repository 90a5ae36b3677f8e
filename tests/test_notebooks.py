"""The notebooks: made from one template (no drift), no functions defined in them, and each one executed top to
bottom on a tiny random model and synthetic data (`SMOKE = True`), ending in a valid submission."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
sys.path.insert(0, str(NB_DIR))

import make_notebooks  # noqa: E402

from src.data import find_data_dir  # noqa: E402
from src.errors import UserError  # noqa: E402
from src.submission import validate  # noqa: E402

NOTEBOOKS = sorted(make_notebooks.render())


def code_cells(name: str) -> list[str]:
    nb = nbformat.read(NB_DIR / name, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_committed_notebooks_match_the_template():
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == NOTEBOOKS, "run python notebooks/make_notebooks.py"
    for name, text in make_notebooks.render().items():
        assert (NB_DIR / name).read_text(encoding="utf-8") == text, f"{name} drifted: run make_notebooks.py"
    assert make_notebooks.main(["--check"]) == 0


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_defines_no_functions(name):
    for source in code_cells(name):
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"{name} defines {type(node).__name__}: move it into src/")


def test_every_model_notebook_has_its_config():
    missing = [m.config for m in make_notebooks.MODELS if not (ROOT / "configs" / f"{m.config}.yaml").is_file()]
    assert not missing, f"notebooks name configs that do not exist: {missing}"


def test_find_data_dir(tmp_path, capsys):
    from synth import make_competition

    (tmp_path / "kaggle" / "other-dataset").mkdir(parents=True)
    comp = make_competition(tmp_path / "kaggle" / "emotion" / "data")
    places = (str(tmp_path / "nowhere"), str(tmp_path / "kaggle" / "*"), str(tmp_path / "kaggle" / "*" / "*"))
    assert find_data_dir("", places) == comp
    assert str(comp) in capsys.readouterr().out
    assert find_data_dir(str(comp), ()) == comp
    with pytest.raises(UserError, match="lacks train.csv"):
        find_data_dir(str(tmp_path / "kaggle" / "other-dataset"), places)
    with pytest.raises(UserError, match="no competition folder"):
        find_data_dir("", places[:1])


def execute(name: str, smoke_dir: Path) -> float:
    """Run a notebook with SMOKE = True (a cell injected after the parameters cell); return the wall time."""
    from nbclient import NotebookClient

    nb = nbformat.read(NB_DIR / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"SMOKE = True\nSMOKE_DIR = {str(smoke_dir)!r}"))
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}).execute()
    return time.perf_counter() - t0


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_a_tiny_model(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models: one thread is faster on a busy 2-core machine
    wall = execute(name, tmp_path)
    print(f"\n{name}: executed in {wall:.1f} s")
    subs = list((tmp_path / "submissions").glob("*.csv"))
    exp = {"tfidf.ipynb": "tfidf", "ensemble.ipynb": "blend"}.get(name, name.removesuffix(".ipynb"))
    assert tmp_path / "submissions" / f"{exp}.csv" in subs, f"no submission for {exp}: {subs}"
    sample = pd.read_csv(tmp_path / "data" / "sample_submission.csv", dtype={"ID": str})
    validate(pd.read_csv(tmp_path / "submissions" / f"{exp}.csv", dtype={"ID": str}), sample)
    if name not in ("tfidf.ipynb", "ensemble.ipynb"):  # every fold really trained, one checkpoint selected each
        run = tmp_path / "checkpoints" / exp
        assert all((run / f"fold{k}" / "done.json").is_file() for k in (0, 1))
        selection = yaml.safe_load((run / "selection.yaml").read_text())["folds"]
        assert sorted(selection) == [0, 1]
        assert all((run / f"fold{k}" / f"step{e['step']}" / "test_probs.npy").is_file() for k, e in selection.items())
