"""Write every notebook in notebooks/ from one template and the table of models below (edit here, not the .ipynb).

    python notebooks/make_notebooks.py            # (re)write the notebooks
    python notebooks/make_notebooks.py --check    # exit 1 if a committed notebook differs from the template

A notebook is a parameters cell (`SMOKE`: CI swaps in a tiny random model and synthetic data), a setup cell
(Colab/Kaggle: clone, pip install, Drive), a settings cell, then calls into `src/`. No functions are defined in
notebooks; everything they run lives in `src/`, shared with `train.sh` and the CLI.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
REPO = "OWNER/REPO"  # GitHub owner/name of this repository: the Colab badge and the clone URL use it


@dataclass(frozen=True)
class Model:
    config: str  # configs/<config>.yaml (its leading comment is the notebook's description); notebook <config>.ipynb
    title: str
    pip: tuple[str, ...] = ()  # extra packages for this notebook
    gated: bool = False  # the hub asks for a licence and a login token (HF_TOKEN)


MODELS = [
    Model("roberta-base", "RoBERTa-base"),
    Model("distilbert-base-uncased", "DistilBERT"),
    Model("distilroberta-base", "DistilRoBERTa"),
    Model("gemma-2b", "Gemma-2B LoRA", gated=True),
    Model("llama-3.2-1b", "Llama-3.2-1B LoRA", gated=True),
    Model("stella-1.5b", "stella 1.5B LoRA"),
    Model("qwen2.5-1.5b", "Qwen2.5-1.5B LoRA"),
    Model("llama-3.2-3b-instruct", "Llama-3.2-3B-Instruct LoRA", gated=True),
    Model("qwen2.5-14b-instruct-qlora", "Qwen2.5-14B-Instruct QLoRA", pip=("bitsandbytes",)),
]


def config_comment(config: str) -> list[str]:
    """The leading `#` comment of configs/<config>.yaml (what the model is, GPU memory), as text lines."""
    lines = []
    for line in (HERE.parent / "configs" / f"{config}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return [" ".join(lines)] if lines else []


PARAMETERS = """\
SMOKE = False  # CI sets True: a tiny random model and synthetic data (src/smoke.py), every output under SMOKE_DIR
SMOKE_DIR = "smoke\""""

SETUP = """\
import os
import subprocess
import sys
from pathlib import Path

from IPython.display import Image, display

REPO_URL = "https://github.com/{repo}.git"
IN_COLAB, IN_KAGGLE = "google.colab" in sys.modules, Path("/kaggle/input").is_dir()
if not Path("src/pipeline.py").is_file() and Path("../src/pipeline.py").is_file():
    os.chdir("..")  # opened from notebooks/ in a clone
if not Path("src/pipeline.py").is_file():  # Colab / Kaggle: clone the repository (Kaggle: turn Internet on)
    repo = Path("/kaggle/working/repo" if IN_KAGGLE else "/content/repo")
    if not repo.is_dir():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(repo)], check=True)
    os.chdir(repo)
if IN_COLAB or IN_KAGGLE:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt"{pip}], check=True)
if IN_COLAB:
    from google.colab import drive

    drive.mount("/content/drive")  # the data and the checkpoints can live on Drive{hf}
sys.path.insert(0, os.getcwd())
print("repository:", os.getcwd())"""

HF_TOKEN = """
if IN_KAGGLE and "HF_TOKEN" not in os.environ:  # gated model: your Hugging Face token as the Kaggle secret HF_TOKEN
    from kaggle_secrets import UserSecretsClient

    os.environ["HF_TOKEN"] = UserSecretsClient().get_secret("HF_TOKEN")"""

SETTINGS = """\
CONFIG = "configs/{config}.yaml"
FOLDS = []  # folds to train in this session, e.g. [0, 1, 2]; [] = every fold (a rerun skips finished folds)
OVERRIDES = []  # any config field as "section.key=value", e.g. ["train.lr=2e-5", "train.epochs=4"]
DATA_DIR = ""  # the competition folder; "" = find it in data/, /kaggle/input/*/ or Google Drive
OUT_DIR = "/content/drive/MyDrive/multilabel-text" if IN_COLAB else ""  # checkpoints + submissions; "" = repo
KAGGLE_COMPETITION = ""  # set to upload the submission (kaggle.json, or KAGGLE_USERNAME + KAGGLE_KEY)"""

RESOLVE = """\
from src import smoke
from src.config import dump_config, load_config
from src.data import find_data_dir, load_competition
from src.fileio import write_text
from src.folds import ensure_folds, fold_label_counts
from src.rundir import RunDir

if OUT_DIR:
    OVERRIDES = [f"output.checkpoints_dir={OUT_DIR}/checkpoints", f"output.submissions_dir={OUT_DIR}/submissions",
                 *OVERRIDES]
if SMOKE:
    OVERRIDES = [*OVERRIDES, *smoke.setup(CONFIG, SMOKE_DIR)]
else:
    OVERRIDES = [f"data.data_dir={find_data_dir(DATA_DIR)}", *OVERRIDES]
cfg = load_config(CONFIG, [f"folds.run={FOLDS}", *OVERRIDES])
print(dump_config(cfg))"""

FOLDS = """\
comp = load_competition(cfg.data)
folds, fold_file = ensure_folds(cfg, comp)
rd = RunDir.of(cfg)
write_text(rd.config, dump_config(cfg))
print(f"{fold_file}: positives per label and fold")
fold_label_counts(folds, comp)"""

SUBMIT = """\
import shutil

if result.get("submission") and IN_KAGGLE:
    shutil.copy(result["submission"], "/kaggle/working/submission.csv")
if result.get("submission") and KAGGLE_COMPETITION and not SMOKE:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "kaggle"], check=True)
    subprocess.run(["kaggle", "competitions", "submit", "-c", KAGGLE_COMPETITION, "-f", result["submission"],
                    "-m", f"{cfg.exp} (notebook)"], check=True)
print(result.get("submission", "no submission: train every fold first"))"""

REPORT = """\
for png in sorted(rd.report.glob("*.png")):
    display(Image(png))"""


def badge(name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb)")


def header(name: str, title: str, lines: list[str]) -> str:
    return "\n".join([f"# {title}", "", badge(name), "", *lines, "",
                      "Run every cell (Colab: Runtime > Run all; Kaggle: GPU on, Internet on). Everything these "
                      "cells call lives in `src/`, the same code `train.sh` and the CLI run; this notebook holds "
                      "only settings and calls."])


def common(config: str, pip: tuple[str, ...] = (), gated: bool = False) -> list:
    extra = "".join(f', "{p}"' for p in pip)
    return [
        ("code", PARAMETERS, {"tags": ["parameters"]}),
        ("md", "## Setup"),
        ("code", SETUP.format(repo=REPO, pip=extra, hf=HF_TOKEN if gated else "")),
        ("md", "## Settings"),
        ("code", SETTINGS.format(config=config)),
        ("code", RESOLVE),
        ("md", "## Folds\nThe shared fold file (made once per dataset and seed; every model uses the same one)."),
        ("code", FOLDS),
    ]


def transformer_cells(m: Model) -> list:
    gated = ["", "A gated model: accept its licence on the Hugging Face hub, then give your token as the secret "
                 "`HF_TOKEN` (Colab: the key icon; Kaggle: Add-ons > Secrets)."] if m.gated else []
    return [
        ("md", header(m.config, m.title, [
            f"`configs/{m.config}.yaml`: one model per fold, a checkpoint at every evaluation.",
            *config_comment(m.config), *gated, "",
            "If the session dies, run the notebook again: finished folds are skipped and an unfinished fold resumes "
            "from its last checkpoint (on Colab the checkpoints go to Drive, `OUT_DIR`). To spread the folds over "
            "sessions, set `FOLDS`."])),
        *common(m.config, m.pip, m.gated),
        ("md", "## Train\nEach evaluation writes `checkpoints/<exp>/fold<k>/step<N>/` (weights or LoRA adapter, "
               "`metrics.json`, held-out probabilities)."),
        ("code", "from src.train import train_folds\n\ntrain_folds(cfg, comp, folds, rd)"),
        ("md", "## Checkpoints\nPer fold: val loss and macro-F1 (at 0.5 and at per-label tuned thresholds) of every "
               "checkpoint; `*` marks the one the rule (`select.rule`) picks."),
        ("code", "from src.checkpoints import select, show\n\ntables = show(rd, cfg)\n"
                 "display(Image(rd.report / \"checkpoints.png\"))"),
        ("md", "## Select\nOne checkpoint per fold by `select.rule`, saved in `selection.yaml`. To pick one by "
               "hand: `select(cfg, rd, manual={3: 1200})` (fold 3, step 1200)."),
        ("code", "from src.folds import folds_for_run\n\nselect(cfg, rd, folds=folds_for_run(cfg))"),
        ("md", "## Predict and report\nOOF from the selected checkpoints' held-out probabilities, test "
               "probabilities from each fold model (averaged), per-label thresholds tuned on OOF, the submission."),
        ("code", "from src.pipeline import finalize\nfrom src.predict import predict\n\n"
                 "predict(cfg, comp, folds, rd)\nresult = finalize(cfg, comp, folds)"),
        ("code", REPORT),
        ("md", "## Submit"),
        ("code", SUBMIT),
    ]


def tfidf_cells() -> list:
    return [
        ("md", header("tfidf", "TF-IDF baseline", [
            "Word 1-2 gram + char 2-5 gram TF-IDF -> one-vs-rest logistic regression per fold: `configs/tfidf.yaml`. "
            "CPU only, about 35 s for 10 folds."])),
        *common("tfidf"),
        ("md", "## Train, thresholds, submission\nEvery fold is fitted on its training rows; the OOF probabilities "
               "give per-label thresholds and the fold-averaged test probabilities the submission."),
        ("code", "from src.pipeline import run\n\nresult = run(cfg)"),
        ("code", REPORT),
        ("md", "## Submit"),
        ("code", SUBMIT),
    ]


def ensemble_cells() -> list:
    settings = """\
RUNS = ["roberta-base", "llama-3.2-1b", "tfidf"]  # finished runs (checkpoints/<exp>/ with oof.csv + test.csv)
OUT = "blend"  # the blend's name: checkpoints/blend/, submissions/blend.csv
METHOD = "prob"  # prob: average probabilities; rank: average per-label percentiles
OVERRIDES = []  # e.g. ["thresholds.min_one=true"]
DATA_DIR = ""  # the competition folder; "" = find it in data/, /kaggle/input/*/ or Google Drive
OUT_DIR = "/content/drive/MyDrive/multilabel-text" if IN_COLAB else ""  # where the runs' checkpoints/ are
KAGGLE_COMPETITION = ""  # set to upload the submission (kaggle.json, or KAGGLE_USERNAME + KAGGLE_KEY)"""
    resolve = """\
from src import smoke
from src.config import load_config
from src.data import find_data_dir
from src.pipeline import run

if OUT_DIR:
    OVERRIDES = [f"output.checkpoints_dir={OUT_DIR}/checkpoints", f"output.submissions_dir={OUT_DIR}/submissions",
                 *OVERRIDES]
if SMOKE:  # two quick members on the synthetic data
    OVERRIDES = [*OVERRIDES, *smoke.setup("configs/tfidf.yaml", SMOKE_DIR)]
    RUNS = ["tfidf", "tfidf-cnb"]
    run(load_config("configs/tfidf.yaml", [*OVERRIDES, "exp=tfidf"]))
    run(load_config("configs/tfidf.yaml", [*OVERRIDES, "exp=tfidf-cnb", "tfidf.classifier=cnb"]))
else:
    OVERRIDES = [f"data.data_dir={find_data_dir(DATA_DIR)}", *OVERRIDES]"""
    return [
        ("md", header("ensemble", "Ensemble", [
            "Blends finished runs (any model: their `oof.csv` and `test.csv` share one fold file): weights that "
            "maximize OOF macro-F1 after per-label thresholds, with a nested estimate (weights and thresholds "
            "fitted on the other folds) to show how optimistic that is. Train the member notebooks first; on "
            "Kaggle, attach their outputs and point `OUT_DIR` at the folder holding `checkpoints/`."])),
        ("code", PARAMETERS, {"tags": ["parameters"]}),
        ("md", "## Setup"),
        ("code", SETUP.format(repo=REPO, pip="", hf="")),
        ("md", "## Settings"),
        ("code", settings),
        ("code", resolve),
        ("md", "## Blend"),
        ("code", "from src.ensemble import blend\nfrom src.rundir import RunDir\n\n"
                 "result = blend(RUNS, OUT, OVERRIDES, METHOD)\n"
                 "cfg = load_config(None, [*OVERRIDES, f\"exp={OUT}\"])\nrd = RunDir.of(cfg)"),
        ("code", REPORT),
        ("md", "## Submit"),
        ("code", SUBMIT),
    ]


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}, "accelerator": "GPU"}
    for i, (kind, source, *meta) in enumerate(cells):
        new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = new(source, id=f"cell-{i:02d}")
        if meta:
            cell.metadata.update(meta[0])
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render() -> dict[str, str]:
    """{file name: notebook JSON} for every notebook."""
    books = {m.config: transformer_cells(m) for m in MODELS}
    books["tfidf"] = tfidf_cells()
    books["ensemble"] = ensemble_cells()
    return {f"{name}.ipynb": nbformat.writes(notebook(cells)) + "\n" for name, cells in books.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write notebooks/*.ipynb from the template.")
    p.add_argument("--check", action="store_true", help="exit 1 if a notebook differs from the template")
    a = p.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not a.check:
            path.write_text(text, encoding="utf-8")
    extra = sorted({p.name for p in HERE.glob("*.ipynb")} - set(render()))
    if a.check:
        for name in stale:
            print(f"{name} differs from the template: run python notebooks/make_notebooks.py")
        for name in extra:
            print(f"{name} is not made by the template: add it to MODELS or delete it")
        return 1 if stale or extra else 0
    print(f"wrote {len(stale)} notebook(s): {', '.join(stale) or 'all up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
