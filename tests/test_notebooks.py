"""The notebooks: one per config, made from one template per model family (no drift), no functions defined in them,
and executed top to bottom on a tiny random model and synthetic data (`SMOKE = True`), ending in a valid
submission: every notebook of the first ten models, tfidf and ensemble, plus one per newer family (probe, llm,
llm_finetune). The others share their family's cells; their settings resolve and pass the pre-run checks."""

from __future__ import annotations

import ast
import shutil
import subprocess
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
FAMILY = {f"{m.config}.ipynb": m.model_type for m in make_notebooks.models()} | {"ensemble.ipynb": "ensemble",
                                                                               "kaggle-inference.ipynb": "pack"}
EXECUTED = {"roberta-base.ipynb", "distilbert-base-uncased.ipynb", "distilroberta-base.ipynb", "gemma-2b.ipynb",
            "llama-3.2-1b.ipynb", "stella-1.5b.ipynb", "qwen2.5-1.5b.ipynb", "llama-3.2-3b-instruct.ipynb",
            "qwen2.5-14b-instruct-qlora.ipynb", "tfidf.ipynb", "ensemble.ipynb",
            "probe_minilm.ipynb", "llm_zeroshot_multi.ipynb", "llm_finetune_smollm2.ipynb"}


def code_cells(name: str) -> list[str]:
    nb = nbformat.read(NB_DIR / name, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_committed_notebooks_match_the_template(monkeypatch):
    monkeypatch.delenv("NOTEBOOK_REPO", raising=False)
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == NOTEBOOKS, "run python notebooks/make_notebooks.py"
    for name, text in make_notebooks.render(make_notebooks.committed_repo()).items():
        assert (NB_DIR / name).read_text(encoding="utf-8") == text, f"{name} drifted: run make_notebooks.py"
    assert make_notebooks.main(["--check"]) == 0


def test_every_config_has_a_notebook_of_its_family():
    configs = {p.stem: yaml.safe_load(p.read_text())["model_type"] for p in (ROOT / "configs").glob("*.yaml")}
    assert {n.removesuffix(".ipynb") for n in NOTEBOOKS} == {*configs, "ensemble", "kaggle-inference"}
    for stem, model_type in configs.items():
        cells = "\n".join(code_cells(f"{stem}.ipynb"))
        assert f'CONFIG = "configs/{stem}.yaml"' in cells
        assert ("train_run(cfg, comp, folds, rd)" in cells) == (model_type == "transformer")
        assert ("result = run(cfg)" in cells) == (model_type != "transformer")
    assert {FAMILY[n] for n in EXECUTED} == {*configs.values(), "ensemble"}, "execute one notebook per family"
    gpu = {n for n in NOTEBOOKS if "accelerator" in nbformat.read(NB_DIR / n, as_version=4).metadata}
    assert gpu == {n for n, f in FAMILY.items() if f in ("transformer", "llm", "llm_finetune", "pack")}
    # kaggle-inference.ipynb is executed against a read-only pack in tests/test_pack.py


def copy_kit(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """configs/ and notebooks/ copied under tmp_path, make_notebooks pointed at them."""
    configs, books = tmp_path / "configs", tmp_path / "notebooks"
    shutil.copytree(ROOT / "configs", configs)
    books.mkdir()
    for p in NB_DIR.glob("*.ipynb"):
        shutil.copy(p, books)
    monkeypatch.setattr(make_notebooks, "CONFIGS", configs)
    monkeypatch.setattr(make_notebooks, "HERE", books)
    monkeypatch.delenv("NOTEBOOK_REPO", raising=False)
    return configs, books


def test_check_flags_a_config_without_a_notebook(tmp_path, monkeypatch, capsys):
    configs, books = copy_kit(tmp_path, monkeypatch)
    shutil.copy(configs / "tfidf.yaml", configs / "tfidf_new.yaml")
    assert make_notebooks.main(["--check"]) == 1
    assert "tfidf_new.ipynb is missing (configs/tfidf_new.yaml has no notebook)" in capsys.readouterr().out
    assert make_notebooks.main([]) == 0 and (books / "tfidf_new.ipynb").is_file()
    assert make_notebooks.main(["--check"]) == 0


@pytest.mark.parametrize("url", ["https://github.com/me/kit.git", "https://github.com/me/kit", "https://github.com/me/kit/",
                                 "https://x-token:abc@github.com/me/kit.git", "git@github.com:me/kit.git",
                                 "ssh://git@github.com/me/kit.git", "git@github.com:me/kit\n"])
def test_github_repo_of_a_remote_url(url):
    assert make_notebooks.github_repo(url) == "me/kit"


@pytest.mark.parametrize("url", ["https://gitlab.com/me/kit.git", "/srv/git/kit", "https://github.com/me", ""])
def test_a_remote_off_github_gives_no_repo(url):
    assert make_notebooks.github_repo(url) == ""


def test_the_repo_gives_the_clone_url_and_the_badge(tmp_path, monkeypatch):
    _, books = copy_kit(tmp_path, monkeypatch)
    known, unknown = make_notebooks.render("me/kit")["roberta-base.ipynb"], make_notebooks.render("")
    assert '"REPO_URL = \\"https://github.com/me/kit.git\\"\\n"' in known
    assert "(https://colab.research.google.com/github/me/kit/blob/main/notebooks/roberta-base.ipynb)" in known
    for name, text in unknown.items():  # kaggle-inference.ipynb clones nothing: its code comes from the pack
        assert ('"REPO_URL = \\"\\"\\n"' in text) == (name != "kaggle-inference.ipynb")
        assert "colab-badge" not in text and "OWNER/REPO" not in text
    assert make_notebooks.main(["--repo", "https://github.com/me/kit.git"]) == 0
    assert make_notebooks.committed_repo() == "me/kit"
    assert make_notebooks.main(["--check"]) == 0  # checked against the repo the notebooks were written for
    monkeypatch.setenv("NOTEBOOK_REPO", "you/fork")
    assert make_notebooks.main(["--check"]) == 1
    assert make_notebooks.main([]) == 0 and make_notebooks.committed_repo() == "you/fork"
    monkeypatch.setenv("NOTEBOOK_REPO", "not a repo")
    with pytest.raises(SystemExit):
        make_notebooks.main([])


def test_the_repo_comes_from_git_origin(tmp_path, monkeypatch):
    _, books = copy_kit(tmp_path, monkeypatch)
    git = ["git", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    assert make_notebooks.git_repo() == ""  # no origin
    subprocess.run([*git, "remote", "add", "origin", "git@github.com:someone/multilabel-text.git"], check=True)
    assert make_notebooks.git_repo() == "someone/multilabel-text"
    assert make_notebooks.main([]) == 0
    assert 'REPO_URL = \\"https://github.com/someone/multilabel-text.git\\"' in (books / "tfidf.ipynb").read_text()
    subprocess.run([*git, "remote", "remove", "origin"], check=True)
    assert make_notebooks.main([]) == 0 and make_notebooks.committed_repo() == "someone/multilabel-text"  # kept


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_defines_no_functions(name):
    for source in code_cells(name):
        for node in ast.walk(ast.parse(source)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"{name} defines {type(node).__name__}: move it into src/")


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


def execute(name: str, smoke_dir: Path) -> tuple[float, nbformat.NotebookNode]:
    """Run a notebook with SMOKE = True (a cell injected after the parameters cell); return the wall time."""
    from nbclient import NotebookClient

    nb = nbformat.read(NB_DIR / name, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"SMOKE = True\nSMOKE_DIR = {str(smoke_dir)!r}"))
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}).execute()
    return time.perf_counter() - t0, nb


def shown_images(nb) -> list[str]:
    """The PNGs an executed notebook displays, in order (base64)."""
    return [o["data"]["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("name", sorted(EXECUTED))
def test_notebook_runs_on_a_tiny_model(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models: one thread is faster on a busy 2-core machine
    wall, nb = execute(name, tmp_path)
    print(f"\n{name}: executed in {wall:.1f} s")
    images = shown_images(nb)
    assert images and len(set(images)) == len(images), "a plot shown twice"  # checkpoints.png was, under Report
    subs = list((tmp_path / "submissions").glob("*.csv"))
    exp = "blend" if name == "ensemble.ipynb" else name.removesuffix(".ipynb")
    assert tmp_path / "submissions" / f"{exp}.csv" in subs, f"no submission for {exp}: {subs}"
    sample = pd.read_csv(tmp_path / "data" / "sample_submission.csv", dtype={"ID": str})
    validate(pd.read_csv(tmp_path / "submissions" / f"{exp}.csv", dtype={"ID": str}), sample)
    run = tmp_path / "checkpoints" / exp
    if FAMILY[name] in ("transformer", "llm_finetune"):  # every fold really trained
        assert all((run / f"fold{k}" / "done.json").is_file() for k in (0, 1))
    if FAMILY[name] == "transformer":  # one checkpoint selected per fold
        selection = yaml.safe_load((run / "selection.yaml").read_text())["folds"]
        assert sorted(selection) == [0, 1]
        assert all((run / f"fold{k}" / f"step{e['step']}" / "test_probs.npy").is_file() for k, e in selection.items())


def settings(name: str, smoke_dir: Path, **values) -> dict:
    """The namespace after a notebook's settings and resolve cells ran (SMOKE on, not on Colab), `values` set
    between them."""
    cells = code_cells(name)
    at = next(i for i, c in enumerate(cells) if c.startswith("CONFIG = ") or c.startswith("RUNS = "))
    ns = {"IN_COLAB": False, "SMOKE": True, "SMOKE_DIR": str(smoke_dir)}
    exec(cells[at], ns)
    ns.update(values)
    exec(cells[at + 1], ns)
    return ns


@pytest.mark.parametrize("name", sorted(set(NOTEBOOKS) - EXECUTED - {"kaggle-inference.ipynb"}))
def test_unexecuted_notebook_settings_resolve(name, tmp_path, monkeypatch):
    """The cells of its family's executed notebook (but the config and setup extras); its settings resolve to a
    config whose checks pass, with a tiny model of its architecture."""
    from src.config import load_config
    from src.pipeline import check_config

    monkeypatch.chdir(ROOT)
    ref = min(n for n in EXECUTED if FAMILY[n] == FAMILY[name])
    body = [c.replace(name.removesuffix(".ipynb"), "<config>") for c in code_cells(name) if "REPO_URL" not in c]
    ref_body = [c.replace(ref.removesuffix(".ipynb"), "<config>") for c in code_cells(ref) if "REPO_URL" not in c]
    assert body == ref_body
    cfg = settings(name, tmp_path)["cfg"]
    assert cfg.exp == name.removesuffix(".ipynb") and cfg.model_type == FAMILY[name]
    assert cfg.model_type == load_config(f"configs/{cfg.exp}.yaml").model_type
    check_config(cfg)
    if cfg.model_type != "tfidf":
        assert (tmp_path / "models").is_dir() and str(tmp_path) in cfg.model.name_or_path
