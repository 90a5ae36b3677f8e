"""A notebook's first cells: the setup cell outside a clone (REPO_URL unset: one clear error; set: clone, chdir),
the settings that `src/notebook.py` resolves (data folder, OUT_DIR, an exp named after a switched model, smoke runs
of every family) and the short summary printed in place of the whole config; `find_data_dir`'s choice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from synth import make_competition
from test_notebooks import ROOT, code_cells, settings

from src.config import load_config
from src.data import find_data_dir
from src.errors import UserError
from src.notebook import blend_setup, changes, model_exp, resolve, smoke_overrides, summary

NO_REPO = ("RuntimeError: not in a clone of the repository: set REPO_URL to your fork's clone URL, e.g. "
           "https://github.com/<you>/<repo>.git")


def setup_cell(repo_url: str = "", clone_dir: str = "", name: str = "roberta-base.ipynb") -> str:
    """The notebook's setup cell with its REPO_URL and CLONE_DIR settings replaced."""
    (source,) = [c for c in code_cells(name) if "\nREPO_URL = " in c]
    for key, value in (("REPO_URL", repo_url), ("CLONE_DIR", clone_dir)):
        source, n = re.subn(rf"^{key} = .*$", f"{key} = {value!r}", source, flags=re.M)
        assert n == 1, f"{name}: no {key} setting in the setup cell"
    return source


def run_cell(source: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", source], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A local git repository that looks like the kit (src/pipeline.py, requirements.txt)."""
    repo = tmp_path_factory.mktemp("origin")
    (repo / "src").mkdir()
    (repo / "src" / "pipeline.py").write_text("")
    (repo / "requirements.txt").write_text("")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "kit"]):
        subprocess.run([*git, *args], check=True)
    return repo


def test_outside_a_clone_without_repo_url_the_setup_stops_with_one_line(tmp_path):
    done = run_cell(setup_cell(""), tmp_path)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == NO_REPO
    assert list(tmp_path.iterdir()) == []  # nothing cloned, nothing written


@pytest.mark.parametrize("name", ["roberta-base.ipynb", "gemma-2b.ipynb", "tfidf.ipynb", "ensemble.ipynb"])
def test_outside_a_clone_the_setup_clones_repo_url_and_enters_it(name, origin, tmp_path):
    clone = tmp_path / "clones" / "kit"
    for _ in range(2):  # the second run finds the clone and reuses it
        done = run_cell(setup_cell(origin.as_uri(), str(clone), name), tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == f"repository: {clone}"
    assert (clone / "src" / "pipeline.py").is_file() and (clone / ".git").is_dir()


def test_the_default_clone_dir_is_repo_in_the_working_folder(origin, tmp_path):
    done = run_cell(setup_cell(origin.as_uri()), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"repository: {tmp_path / 'repo'}"


def test_in_notebooks_of_a_clone_the_setup_enters_the_clone():
    done = run_cell(setup_cell(""), ROOT / "notebooks")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"repository: {ROOT}"


@pytest.mark.parametrize(("overrides", "exp"), [
    (["model.name_or_path=roberta-large"], "roberta-base-roberta-large"),
    (["model.name_or_path=FacebookAI/roberta-large/"], "roberta-base-roberta-large"),
    (["model.name_or_path=~/models/my model"], "roberta-base-my-model"),
    (["model.name_or_path=roberta-large", "exp=mine"], ""),
    (["model.name_or_path=roberta-large", "model.name_or_path=roberta-base"], ""),  # the last one counts
    (["train.lr=1e-5"], ""),
])
def test_model_exp(overrides, exp):
    assert model_exp(ROOT / "configs" / "roberta-base.yaml", overrides) == exp


def test_resolve_names_the_run_after_a_switched_model(tmp_path):
    comp = make_competition(tmp_path / "comp")
    config = ROOT / "configs" / "roberta-base.yaml"
    cfg = resolve(config, [0, 2], ["model.name_or_path=roberta-large"], comp, tmp_path / "out")
    assert cfg.exp == "roberta-base-roberta-large" and cfg.model.name_or_path == "roberta-large"
    assert cfg.folds.run == [0, 2] and cfg.data.data_dir == str(comp)
    assert cfg.output.checkpoints_dir == f"{tmp_path / 'out'}/checkpoints"
    assert cfg.output.submissions_dir == f"{tmp_path / 'out'}/submissions"
    assert resolve(config, [], ["model.name_or_path=roberta-large", "exp=big"], comp).exp == "big"
    plain = resolve(config, [], [], comp)
    assert plain.exp == "roberta-base" and plain.output.checkpoints_dir == "checkpoints"


def test_a_smoke_run_keeps_the_name_of_the_model_asked_for(tmp_path):
    cfg = resolve(ROOT / "configs" / "roberta-base.yaml", [], ["model.name_or_path=roberta-large"],
                  smoke_run=True, smoke_dir=tmp_path)
    assert cfg.exp == "roberta-base-roberta-large"
    assert cfg.model.name_or_path == str(tmp_path / "models" / "roberta")  # the tiny stand-in
    assert cfg.data.data_dir == str(tmp_path / "data") and cfg.folds.n_folds == 2


def test_summary_is_short_and_lists_the_changes(tmp_path):
    comp = make_competition(tmp_path / "comp")
    config = ROOT / "configs" / "roberta-base.yaml"
    cfg = resolve(config, [1], ["train.lr=1e-5", "model.name_or_path=roberta-large"], comp)
    text = summary(cfg, config)
    assert text.splitlines() == [
        "exp          roberta-base-roberta-large",
        "model_type   transformer",
        "model        roberta-large",
        f"data         {comp}",
        "folds        [1] of 10",
        "checkpoints  checkpoints/roberta-base-roberta-large/partial",
        "submission   none: partial run (folds [1] of 10)",
        "changed      train.lr: 2e-05 -> 1e-05",
    ]
    assert set(changes(cfg, config)) == {"exp", "model.name_or_path", "data.data_dir", "folds.run", "train.lr"}
    tfidf = resolve(ROOT / "configs" / "tfidf.yaml", [], [], comp)
    assert summary(tfidf, ROOT / "configs" / "tfidf.yaml").splitlines()[2:] == [
        f"data         {comp}", "folds        all 10", "checkpoints  checkpoints/tfidf",
        "submission   submissions/tfidf.csv"]


def test_the_settings_cells_switch_the_exp_and_print_a_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    ns = settings("roberta-base.ipynb", tmp_path, OVERRIDES=["model.name_or_path=roberta-large", "train.lr=1e-5"])
    assert ns["cfg"].exp == "roberta-base-roberta-large"
    out = capsys.readouterr().out
    assert out.startswith("exp          roberta-base-roberta-large\n") and "train.lr: 2e-05 -> 1e-05" in out
    assert len(out.splitlines()) < 40 and "tfidf:" not in out  # not the whole config


@pytest.mark.parametrize(("config", "arch"), [("probe_mpnet", "mpnet"), ("llm_zeroshot_unary", "llama"),
                                              ("llm_finetune_smollm2", "llama"), ("tfidf_cnb", None)])
def test_smoke_overrides_for_every_family(config, arch, tmp_path):
    path = ROOT / "configs" / f"{config}.yaml"
    cfg = load_config(path, smoke_overrides(path, tmp_path))
    assert cfg.data.data_dir == str(tmp_path / "data") and cfg.folds.n_folds == 2
    assert cfg.output.checkpoints_dir == str(tmp_path / "checkpoints")
    if arch:
        assert cfg.model.name_or_path == str(tmp_path / "models" / arch)
        assert (tmp_path / "models" / arch / "config.json").is_file()
        assert cfg.probe.cache_dir.startswith(str(tmp_path))


def test_blend_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    comp = make_competition(tmp_path / "comp")
    runs, overrides = blend_setup(["a", "b"], ["thresholds.min_one=true"], comp, "out")
    assert runs == ["a", "b"]
    assert overrides == [f"data.data_dir={comp}", "output.checkpoints_dir=out/checkpoints",
                         "output.submissions_dir=out/submissions", "thresholds.min_one=true"]


def competition_tree(root: Path, *names: str) -> tuple[str, ...]:
    for name in names:
        make_competition(root / name, n_train=20, n_test=5)
    return str(root / "data"), str(root / "data" / "*"), str(root / "kaggle" / "*")


def test_find_data_dir_refuses_several_candidates(tmp_path):
    places = competition_tree(tmp_path, "data/semeval", "data/goemotions", "kaggle/comp")
    with pytest.raises(UserError) as e:
        find_data_dir("", places)
    message = str(e.value)
    assert message.startswith("3 competition folders found: ") and "set DATA_DIR" in message and "\n" not in message
    for name in ("data/goemotions", "data/semeval", "kaggle/comp"):
        assert str(tmp_path / name) in message
    assert find_data_dir(str(tmp_path / "data" / "semeval"), places) == tmp_path / "data" / "semeval"


def test_find_data_dir_takes_the_one_candidate(tmp_path, capsys):
    places = competition_tree(tmp_path, "data/goemotions")
    (tmp_path / "data" / "notes").mkdir()
    assert find_data_dir("", places) == tmp_path / "data" / "goemotions"
    assert capsys.readouterr().out == f"data folder: {tmp_path / 'data' / 'goemotions'}\n"
    # one folder matched by two patterns is one candidate
    assert find_data_dir("", (*places, str(tmp_path / "data" / "goe*"))) == tmp_path / "data" / "goemotions"


def test_find_data_dir_without_candidates(tmp_path):
    places = competition_tree(tmp_path)
    with pytest.raises(UserError, match=r"^no competition folder \(train.csv, test.csv, sample_submission.csv\)"):
        find_data_dir("", places)
