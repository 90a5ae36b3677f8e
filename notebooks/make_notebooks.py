"""Write every notebook in notebooks/ from one template per model family (edit here, not the .ipynb).

    python notebooks/make_notebooks.py                        # (re)write the notebooks: one per configs/*.yaml
    python notebooks/make_notebooks.py --repo you/your-fork   # the GitHub repo of the clone URL and Colab badge
    python notebooks/make_notebooks.py --check                # exit 1 if a notebook is missing or differs

The repository (owner/name) comes from --repo, else $NOTEBOOK_REPO, else `git remote get-url origin` (a GitHub
URL), else the one the committed notebooks name; `--check` compares with the committed one unless told otherwise.
Without one the notebooks get `REPO_URL = ""` and no Colab badge, and stop outside a clone until REPO_URL is set.

A notebook is a parameters cell (`SMOKE`: CI swaps in a tiny random model and synthetic data), a setup cell
(clone when not in a clone, Colab/Kaggle: pip install, Drive), a settings cell, then calls into `src/`. The cells
follow the config's `model_type`: transformer (train, checkpoints, select, predict) or tfidf / probe / llm /
llm_finetune (`run(cfg)`). No functions are defined in notebooks; everything they run lives in `src/`, shared with
`train.sh` and the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
REPO_NAME = re.compile(r"[\w.-]+/[\w.-]+")
GITHUB_URL = re.compile(r"(?:https?://(?:[^@/]+@)?github\.com/|git@github\.com:|ssh://git@github\.com(?::\d+)?/)"
                        r"([\w.-]+)/([\w.-]+?)(?:\.git)?/?")


@dataclass(frozen=True)
class Note:
    title: str
    pip: tuple[str, ...] = ()  # extra packages for this notebook
    gated: bool = False  # the hub asks for a licence and a login token (HF_TOKEN)


# configs/<stem>.yaml -> its notebook's title and extras; a config not listed gets its stem as the title
NOTES = {
    "roberta-base": Note("RoBERTa-base"),
    "distilbert-base-uncased": Note("DistilBERT"),
    "distilbert-last2": Note("DistilBERT, last 2 layers trained"),
    "distilroberta-base": Note("DistilRoBERTa"),
    "minilm-l6": Note("MiniLM-L6"),
    "mpnet-base": Note("MPNet-base"),
    "mpnet-base-fast": Note("MPNet-base, fast GPU recipe"),
    "mpnet-base-bs128": Note("MPNet-base, batch 128"),
    "gemma-2b": Note("Gemma-2B LoRA", gated=True),
    "llama-3.2-1b": Note("Llama-3.2-1B LoRA", gated=True),
    "stella-1.5b": Note("stella 1.5B LoRA"),
    "qwen2.5-1.5b": Note("Qwen2.5-1.5B LoRA"),
    "qwen2.5-coder-0.5b": Note("Qwen2.5-Coder-0.5B LoRA"),
    "smollm2-135m": Note("SmolLM2-135M LoRA"),
    "smollm2-135m-cpu": Note("SmolLM2-135M LoRA on a CPU"),
    "qwen2.5-coder-0.5b-cpu": Note("Qwen2.5-Coder-0.5B LoRA on a CPU"),
    "llama-3.2-3b-instruct": Note("Llama-3.2-3B-Instruct LoRA", gated=True),
    "qwen2.5-14b-instruct-qlora": Note("Qwen2.5-14B-Instruct QLoRA", pip=("bitsandbytes",)),
    "tfidf": Note("TF-IDF baseline"),
    "tfidf_cnb": Note("TF-IDF + complement naive Bayes"),
    "probe_minilm": Note("Linear probe on MiniLM-L6 features"),
    "probe_mpnet": Note("Linear probe on MPNet features"),
    "llm_zeroshot_multi": Note("Zero-shot LLM scoring, one multi-label prompt"),
    "llm_zeroshot_unary": Note("Zero-shot LLM scoring, a yes/no prompt per label"),
    "llm_finetune_smollm2": Note("SmolLM2-135M fine-tuned to answer the labels"),
}

# model_type -> what a run of it does (the notebook's first line after the title)
FAMILY = {
    "transformer": "one model per fold, a checkpoint at every evaluation.",
    "tfidf": "TF-IDF features -> a linear classifier per fold, on the CPU.",
    "probe": "frozen features of a pretrained model (computed once, cached) -> a small classifier per fold.",
    "llm": "label probabilities read from a causal LM prompted with each text; no training.",
    "llm_finetune": "a LoRA adapter per fold teaches a causal LM to answer with the label list; the label "
                    "probabilities are read from it.",
}
GPU_FAMILIES = {"transformer", "llm", "llm_finetune"}  # their notebooks ask Colab for a GPU runtime


@dataclass(frozen=True)
class Model:
    config: str  # configs/<config>.yaml (its leading comment is the notebook's description); notebook <config>.ipynb
    model_type: str
    name_or_path: str
    note: Note


def models() -> list[Model]:
    """One entry per configs/*.yaml, by name."""
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out.append(Model(path.stem, raw.get("model_type", "tfidf"), (raw.get("model") or {}).get("name_or_path", ""),
                         NOTES.get(path.stem, Note(path.stem))))
    return out


def config_comment(config: str) -> list[str]:
    """The leading `#` comment of configs/<config>.yaml (what the model is, GPU memory), as text lines."""
    lines = []
    for line in (CONFIGS / f"{config}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return [" ".join(lines)] if lines else []


def github_repo(url: str) -> str:
    """owner/name of a GitHub https or ssh URL; "" for anything else."""
    m = GITHUB_URL.fullmatch(url.strip())
    return f"{m[1]}/{m[2]}" if m else ""


def git_repo() -> str:
    """owner/name of this clone's `origin` remote when it is on GitHub, else ""."""
    try:
        out = subprocess.run(["git", "-C", str(HERE), "remote", "get-url", "origin"], capture_output=True, text=True)
    except OSError:
        return ""
    return github_repo(out.stdout) if out.returncode == 0 else ""


def committed_repo() -> str:
    """The repo the notebooks in notebooks/ were written for (their metadata), "" if none."""
    for path in sorted(HERE.glob("*.ipynb")):
        try:
            repo = json.loads(path.read_text(encoding="utf-8"))["metadata"]["make_notebooks"]["repo"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(repo, str):
            return repo
    return ""


PARAMETERS = """\
SMOKE = False  # CI sets True: a tiny random model and synthetic data (src/smoke.py), every output under SMOKE_DIR
SMOKE_DIR = "smoke\""""

SETUP = """\
import os
import subprocess
import sys
from pathlib import Path

from IPython.display import Image, display

# your fork's clone URL (e.g. https://github.com/<you>/<repo>.git): cloned when this notebook is not in a clone
REPO_URL = "{repo_url}"
CLONE_DIR = ""  # where to clone it; "" = /content/repo (Colab), /kaggle/working/repo (Kaggle), ./repo elsewhere
IN_COLAB, IN_KAGGLE = "google.colab" in sys.modules, Path("/kaggle/input").is_dir()
if not Path("src/pipeline.py").is_file() and Path("../src/pipeline.py").is_file():
    os.chdir("..")  # opened from notebooks/ in a clone
if not Path("src/pipeline.py").is_file():  # not in a clone: clone the repository (Kaggle: turn Internet on)
    if not REPO_URL:
        raise RuntimeError("not in a clone of the repository: set REPO_URL to your fork's clone URL, e.g. "
                           "https://github.com/<you>/<repo>.git")
    repo = Path(CLONE_DIR or ("/kaggle/working/repo" if IN_KAGGLE else "/content/repo" if IN_COLAB else "repo"))
    if not (repo / "src" / "pipeline.py").is_file():
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
OVERRIDES = []  # any config field as "section.key=value", e.g. ["train.lr=2e-5"]; a new model.name_or_path gets
#                 its own exp (<config>-<model>) unless you add "exp=..."
DATA_DIR = ""  # the competition folder; "" = find it in data/, /kaggle/input/*/ or Google Drive
OUT_DIR = "/content/drive/MyDrive/multilabel-text" if IN_COLAB else ""  # checkpoints + submissions; "" = repo
KAGGLE_COMPETITION = ""  # set to upload the submission (kaggle.json, or KAGGLE_USERNAME + KAGGLE_KEY)"""

RESOLVE = """\
from src.notebook import resolve, summary

cfg = resolve(CONFIG, FOLDS, OVERRIDES, DATA_DIR, OUT_DIR, SMOKE, SMOKE_DIR)
print(summary(cfg, CONFIG))"""

FOLDS = """\
from src.data import fold_path
from src.folds import fold_label_counts
from src.pipeline import setup_run

comp, folds, rd = setup_run(cfg)
print(f"{fold_path(cfg)}: positives per label and fold")
fold_label_counts(folds, comp)"""

SUBMIT = """\
import shutil

if result.get("submission") and IN_KAGGLE:
    shutil.copy(result["submission"], "/kaggle/working/submission.csv")
if result.get("submission") and KAGGLE_COMPETITION and not SMOKE:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "kaggle"], check=True)
    subprocess.run(["kaggle", "competitions", "submit", "-c", KAGGLE_COMPETITION, "-f", result["submission"],
                    "-m", f"{cfg.exp} (notebook)"], check=True)
print(result.get("submission", "no submission: a partial run (some folds, or a subset of LLM rows)"))"""

REPORT = """\
for png in sorted(rd.report.glob("*.png")):
    if png.name != "checkpoints.png":  # shown under Checkpoints
        display(Image(png))"""

# model_type -> the markdown above `run(cfg)` in a notebook of that family
RUN_TEXT = {
    "tfidf": "Every fold is fitted on its training rows; the OOF probabilities give per-label thresholds and the "
             "fold-averaged test probabilities the submission.",
    "probe": "The frozen model's features of every text are computed once (cached under `probe.cache_dir`), then a "
             "probe per fold; OOF probabilities give per-label thresholds, the fold-averaged test probabilities the "
             "submission.",
    "llm": "Every train row is scored with the prompt of its fold (few-shot examples come from the other folds), "
           "then per-label thresholds on OOF and the submission. `llm.max_train_rows` scores a subset: metrics, "
           "no submission.",
    "llm_finetune": "A LoRA adapter per fold (a finished fold is reused), its held-out and test rows read out, "
                    "then per-label thresholds on OOF and the submission.",
}


def badge(name: str, repo: str) -> list[str]:
    """The Colab badge of notebooks/<name>.ipynb (as markdown lines), none without a repo."""
    if not repo:
        return []
    return [f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}.ipynb)", ""]


def header(name: str, title: str, lines: list[str], repo: str, gpu: bool = True) -> str:
    where = "Colab: Runtime > Run all; Kaggle: GPU on, Internet on" if gpu else \
        "Colab: Runtime > Run all; Kaggle: Internet on; a CPU is enough"
    return "\n".join([f"# {title}", "", *badge(name, repo), *lines, "",
                      f"Run every cell ({where}). Outside a clone of the repository, set `REPO_URL` in the setup "
                      "cell first. Everything these cells call lives in `src/`, the same code `train.sh` and the "
                      "CLI run; this notebook holds only settings and calls."])


def setup_cell(repo: str, pip: tuple[str, ...] = (), gated: bool = False) -> tuple:
    url = f"https://github.com/{repo}.git" if repo else ""
    return ("code", SETUP.format(repo_url=url, pip="".join(f', "{p}"' for p in pip), hf=HF_TOKEN if gated else ""))


def common(m: Model, repo: str) -> list:
    return [
        ("code", PARAMETERS, {"tags": ["parameters"]}),
        ("md", "## Setup"),
        setup_cell(repo, m.note.pip, m.note.gated),
        ("md", "## Settings"),
        ("code", SETTINGS.format(config=m.config)),
        ("code", RESOLVE),
        ("md", "## Folds\nThe shared fold file (made once per dataset and seed; every model uses the same one)."),
        ("code", FOLDS),
    ]


def intro(m: Model) -> list[str]:
    """The notebook's description: the family, the config's comment, a gated model's note."""
    lines = [f"`configs/{m.config}.yaml`: {FAMILY[m.model_type]}", *config_comment(m.config)]
    if m.note.gated:
        lines += ["", "A gated model: accept its licence on the Hugging Face hub, then give your token as the secret "
                      "`HF_TOKEN` (Colab: the key icon; Kaggle: Add-ons > Secrets)."]
    return lines


def transformer_cells(m: Model, repo: str) -> list:
    return [
        ("md", header(m.config, m.note.title, [
            *intro(m), "",
            "If the session dies, run the notebook again: finished folds are skipped and an unfinished fold resumes "
            "from its last checkpoint (on Colab the checkpoints go to Drive, `OUT_DIR`). To spread the folds over "
            "sessions, set `FOLDS`."], repo)),
        *common(m, repo),
        ("md", "## Train\nEach evaluation writes `checkpoints/<exp>/fold<k>/step<N>/` (weights or LoRA adapter, "
               "`metrics.json`, held-out probabilities)."),
        ("code", "from src.train import train_run\n\ntrain_run(cfg, comp, folds, rd)"),
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


def run_cells(m: Model, repo: str) -> list:
    """A family that `src.pipeline.run` runs whole (tfidf, probe, llm, llm_finetune): run, report, submit."""
    return [
        ("md", header(m.config, m.note.title, intro(m), repo, gpu=m.model_type in GPU_FAMILIES)),
        *common(m, repo),
        ("md", f"## Run\n{RUN_TEXT[m.model_type]}"),
        ("code", "from src.pipeline import run\n\nresult = run(cfg)"),
        ("code", REPORT),
        ("md", "## Submit"),
        ("code", SUBMIT),
    ]


def ensemble_cells(repo: str) -> list:
    settings = """\
RUNS = ["tfidf", "tfidf_cnb", "probe_minilm", "minilm-l6"]  # runs a CPU can make; replace with your finished runs
OUT = "blend"  # the blend's name: checkpoints/blend/, submissions/blend.csv
METHOD = "prob"  # prob: average probabilities; rank: average per-label percentiles
OVERRIDES = []  # e.g. ["thresholds.min_one=true"]
DATA_DIR = ""  # the competition folder; "" = find it in data/, /kaggle/input/*/ or Google Drive
OUT_DIR = "/content/drive/MyDrive/multilabel-text" if IN_COLAB else ""  # where the runs' checkpoints/ are
KAGGLE_COMPETITION = ""  # set to upload the submission (kaggle.json, or KAGGLE_USERNAME + KAGGLE_KEY)"""
    resolve = """\
from src.notebook import blend_setup

RUNS, OVERRIDES = blend_setup(RUNS, OVERRIDES, DATA_DIR, OUT_DIR, SMOKE, SMOKE_DIR)  # SMOKE: two quick members"""
    return [
        ("md", header("ensemble", "Ensemble", [
            "Blends finished runs (any model: their `oof.csv` and `test.csv` share one fold file): weights that "
            "maximize OOF macro-F1 after per-label thresholds, with a nested estimate (weights and thresholds "
            "fitted on the other folds) to show how optimistic that is. Train the member notebooks first; on "
            "Kaggle, attach their outputs and point `OUT_DIR` at the folder holding `checkpoints/`."], repo,
            gpu=False)),
        ("code", PARAMETERS, {"tags": ["parameters"]}),
        ("md", "## Setup"),
        setup_cell(repo),
        ("md", "## Settings"),
        ("code", settings),
        ("code", resolve),
        ("md", "## Blend"),
        ("code", "from src.config import load_config\nfrom src.ensemble import blend\nfrom src.rundir import RunDir\n\n"
                 "result = blend(RUNS, OUT, OVERRIDES, METHOD)\n"
                 "cfg = load_config(None, [*OVERRIDES, f\"exp={OUT}\"])\nrd = RunDir.of(cfg)"),
        ("code", REPORT),
        ("md", "## Submit"),
        ("code", SUBMIT),
    ]


def kaggle_inference_cells() -> list:
    """The Internet-off Kaggle notebook: predict from a pack (python -m src pack) attached as a dataset."""
    params = """\
PACK = ""  # the pack's folder; "" = the one folder under /kaggle/input holding pack.json
EXP = ""  # the packed run to predict; "" = the pack's only run
DATA_DIR = ""  # the competition folder; "" = find it under /kaggle/input
BASE_MODEL = ""  # LoRA, probe, LLM runs: the base model's folder, attached as a dataset (or set MODELS_DIR)
MODELS_DIR = ""  # a folder of local model copies named by hub id (org--name or name), e.g. /kaggle/input/models
OUT_DIR = "/kaggle/working\""""
    setup = """\
import sys
from pathlib import Path

if not PACK:  # src/ is not importable before the pack is found: a plain search here
    found = sorted(str(p.parent) for p in Path("/kaggle/input").glob("*/pack.json"))
    if len(found) != 1:
        raise RuntimeError(f"set PACK to the attached pack's folder (folders with pack.json: {found or 'none'})")
    PACK = found[0]
sys.path.insert(0, PACK)  # the code that trained the run, from the pack

import os

import src
from src.pack import install_wheels, predict_packed

if MODELS_DIR:
    os.environ["MODELS_DIR"] = MODELS_DIR  # the runs' hub ids are read from there (src/hub.py)
print("code:", Path(src.__file__).parent, "| wheels installed:", install_wheels(PACK) or "none")"""
    predict = """\
from src.data import find_data_dir

result = predict_packed(PACK, EXP, find_data_dir(DATA_DIR), OUT_DIR, BASE_MODEL)
print(result["kaggle_submission"])"""
    return [
        ("md", "\n".join([
            "# Kaggle inference (Internet off)", "",
            "Predicts the competition's test set, whatever it holds (a code competition swaps it when scoring), "
            "from any run packed on Colab or a pod (a transformer, TF-IDF, probe, LLM run, a blend or a stack "
            "with its members), with no Internet: the fold models are read where they lie under `/kaggle/input` "
            "(nothing is written there), the thresholds tuned on the run's OOF are applied, and "
            "`/kaggle/working/submission.csv` is written.", "",
            "1. Where the run was trained: `python -m src pack <exp> --out packs/<name>` (add `--wheels DIR` for "
            "packages the Kaggle image lacks), then `kaggle datasets create -p packs/<name>`.",
            "2. Here: Add Input > your pack and the competition (and, for a LoRA run, its base model); turn "
            "Internet off, the GPU on; Run all."])),
        ("code", params, {"tags": ["parameters"]}),
        ("md", "## Setup\nThe code comes from the pack, so it is the code that trained the run."),
        ("code", setup),
        ("md", "## Predict\nTest probabilities from every fold model (averaged; a blend or stack combines its "
               "members'), the run's per-label thresholds and rules, the submission."),
        ("code", predict),
    ]


def notebook(cells: list, repo: str, gpu: bool) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}, **({"accelerator": "GPU"} if gpu else {}),
                   "make_notebooks": {"repo": repo}}
    for i, (kind, source, *meta) in enumerate(cells):
        new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = new(source, id=f"cell-{i:02d}")
        if meta:
            cell.metadata.update(meta[0])
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(repo: str = "") -> dict[str, str]:
    """{file name: notebook JSON}: one notebook per configs/*.yaml (cells by its model_type) and ensemble.ipynb;
    `repo` (GitHub owner/name) gives the clone URL and the Colab badge."""
    books = {}
    for m in models():
        if m.model_type not in FAMILY:
            raise SystemExit(f"configs/{m.config}.yaml: no notebook template for model_type {m.model_type!r}")
        cells = transformer_cells(m, repo) if m.model_type == "transformer" else run_cells(m, repo)
        books[m.config] = notebook(cells, repo, m.model_type in GPU_FAMILIES)
    books["ensemble"] = notebook(ensemble_cells(repo), repo, gpu=False)
    books["kaggle-inference"] = notebook(kaggle_inference_cells(), repo, gpu=True)
    return {f"{name}.ipynb": nbformat.writes(nb) + "\n" for name, nb in books.items()}


def repo_name(value: str) -> str:
    """`--repo` / $NOTEBOOK_REPO: a GitHub owner/name (a GitHub URL is reduced to it)."""
    repo = github_repo(value) or value.strip()
    if not REPO_NAME.fullmatch(repo):
        raise argparse.ArgumentTypeError(f"{value!r} is not a GitHub owner/name (e.g. you/multilabel-text)")
    return repo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write notebooks/*.ipynb from the template.")
    p.add_argument("--check", action="store_true", help="exit 1 if a notebook is missing or differs from the template")
    p.add_argument("--repo", type=repo_name, help="GitHub owner/name for the clone URL and the Colab badge (default: "
                                                  "$NOTEBOOK_REPO, else git remote origin, else the notebooks' own)")
    a = p.parse_args(argv)
    repo = a.repo
    if not repo and os.environ.get("NOTEBOOK_REPO"):
        try:
            repo = repo_name(os.environ["NOTEBOOK_REPO"])
        except argparse.ArgumentTypeError as e:
            p.error(f"NOTEBOOK_REPO: {e}")
    repo = repo or (committed_repo() if a.check else git_repo() or committed_repo())
    books = render(repo)
    missing, stale = [], []
    for name, text in books.items():
        path = HERE / name
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        (stale if path.is_file() else missing).append(name)
        if not a.check:
            path.write_text(text, encoding="utf-8")
    extra = sorted({p.name for p in HERE.glob("*.ipynb")} - set(books))
    if a.check:
        for name in missing:
            print(f"{name} is missing (configs/{name.removesuffix('.ipynb')}.yaml has no notebook): "
                  "run python notebooks/make_notebooks.py")
        for name in stale:
            print(f"{name} differs from the template: run python notebooks/make_notebooks.py")
        for name in extra:
            print(f"{name} is not made by the template: add its config to configs/ or delete it")
        return 1 if missing or stale or extra else 0
    written = missing + stale
    print(f"wrote {len(written)} notebook(s) for repo {repo or '(none: REPO_URL empty)'}: "
          f"{', '.join(written) or 'all up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
