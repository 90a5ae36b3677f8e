"""Kaggle with Internet off (code competitions swap the test set when the notebook is scored): pack finished runs into
a folder to upload as a Kaggle Dataset, then predict any test set from it in an inference-only notebook, reading the
pack where it lies (read-only `/kaggle/input/...`).

    python -m src pack EXP [EXP ...] --out packs/NAME [--wheels DIR] [key=value ...]   # on Colab / a pod
    kaggle datasets create -p packs/NAME                                                # upload it once
    notebooks/kaggle-inference.ipynb: add the pack and the competition as inputs, Internet off, run all
    python -m src predict --pack packs/NAME --input test.csv --out submission.csv      # the same from a shell

Any finished run packs (TF-IDF, probe, LLM scoring and fine-tuning, transformers, blends, stacks, seed averages): a
blend or stack brings its members (recursively). A pack holds `src/` (this code), `requirements.txt`, `wheels/`
(optional: packages the Kaggle image lacks), `folds/<fold file>`, and per run `checkpoints/<exp>/`: config.yaml,
run.json, selection.yaml, oof.csv, test.csv, thresholds.json, metrics.json, test_folds.npz, stackers.npz and what its
folds predict with (src/apply.py): a transformer's selected checkpoint per fold (weights or LoRA adapter, tokenizer),
a TF-IDF's or probe's fitted fold models (.skops), an LLM fine-tune's adapters. `pack.json` lists what is inside;
`dataset-metadata.json` is the kaggle CLI's. A run on a base model (LoRA, probes, LLM scoring) reads it from the hub
id or, offline, from a local copy under `MODELS_DIR` (src/hub.py: attach the model as a dataset).

`predict_packed` writes only under `out_dir` (default /kaggle/working): the submission for the competition folder's
test.csv (whatever its ids and texts), also as `<out_dir>/submission.csv`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from src import submission
from src.apply import COMPOSITES, Run, decide, open_pack, open_run, probs
from src.errors import ArgParser, UserError, cli
from src.fileio import write_json
from src.folds import folds_for_run
from src.metrics import THRESHOLD_FREE
from src.rundir import RunDir
from src.runguard import check_idle

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("config.yaml", "run.json", "selection.yaml", "oof.csv", "test.csv", "thresholds.json", "metrics.json",
             "test_folds.npz", "stackers.npz")
FOLD_FILES = {"tfidf": ("model.skops",), "probe": ("probe.skops",), "llm_finetune": ("adapter", "done.json")}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    else:
        shutil.copy2(src, dest)


def _with_members(runs: list[Run]) -> list[Run]:
    """The runs and, for blends and stacks, their members (recursively), each once."""
    from src.apply import member_runs

    out: dict[str, Run] = {}

    def add(run: Run) -> None:
        if run.rd.root.name not in out:
            out[run.rd.root.name] = run
            if run.cfg.model_type in COMPOSITES:
                for m in member_runs(run):
                    add(m)

    for run in runs:
        add(run)
    return list(out.values())


def fold_files(run: Run) -> list[Path]:
    """What each fold of `run` predicts with (relative to its run folder); a missing one is a UserError."""
    kind, rd = run.cfg.model_type, run.rd
    files = []
    if kind == "transformer":
        from src.checkpoints import read_selection

        selection = read_selection(rd)
        for k in folds_for_run(run.cfg):
            if k not in selection or not (rd.fold(k) / "done.json").is_file():
                raise UserError(f"{rd.root}: fold {k} is unfinished or unselected: finish the run first")
            step = rd.step(k, int(selection[k]["step"]))
            files += [rd.fold(k) / "done.json", *(f for f in step.iterdir() if f.name not in (
                "resume.pt", "test_probs.npy", "test_probs.json") and not f.name.startswith("."))]
    for k in folds_for_run(run.cfg) if kind in FOLD_FILES else []:
        files += [rd.fold(k) / name for name in FOLD_FILES[kind]]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise UserError(f"{rd.root} lacks {', '.join(missing[:3])}: a run made before runs kept their fold models; "
                        f"run it again (python -m src run ... exp={rd.root.name}) to pack it")
    return [f.relative_to(rd.root) for f in files]


def pack(exps: list[str], out: str | Path, overrides: list[str] | None = None, wheels: str | Path | None = None,
         slug: str = "") -> dict:
    """Write the pack folder `out` for the finished runs `exps` and their members (all on one fold file)."""
    from src.data import fold_path

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose a new --out folder")
    top = [open_run(exp, overrides) for exp in exps]  # every check before the first write
    runs = _with_members(top)
    plan = {}
    for run in runs:
        check_idle(run.rd)
        for name in ("config.yaml", "run.json", "oof.csv", "thresholds.json"):
            if not (run.rd.out / name).is_file():
                raise UserError(f"{run.rd.out / name} is missing: pack finished runs (python -m src run ...)")
        plan[run.rd.root.name] = fold_files(run)
    folds = {fold_path(r.cfg) for r in runs}
    missing = [str(f.absolute()) for f in folds if not f.is_file()]
    if missing or len({f.name for f in folds}) > 1:
        raise UserError(f"the runs' fold file {missing[0]} is missing: set folds.dir= to the folder that holds it"
                        if missing else f"the runs use different fold files ({', '.join(sorted(map(str, folds)))}): "
                                        "pack runs of one dataset and fold file")
    wheel_files = sorted(Path(wheels).glob("*.whl")) if wheels else []
    if wheels and not wheel_files:
        raise UserError(f"--wheels {wheels} holds no .whl files")
    return _write(out, top, runs, plan, sorted(folds)[0], wheel_files, slug)


def _write(out: Path, top: list[Run], runs: list[Run], plan: dict, fold_file: Path, wheel_files: list[Path],
           slug: str) -> dict:
    t0 = time.time()
    _copy(ROOT / "src", out / "src")
    _copy(ROOT / "requirements.txt", out / "requirements.txt")
    _copy(fold_file, out / "folds" / fold_file.name)
    for w in wheel_files:
        _copy(w, out / "wheels" / w.name)
    manifest = {"top": [r.rd.root.name for r in top], "runs": {}, "fold_file": fold_file.name,
                "wheels": [w.name for w in wheel_files], "made": time.strftime("%Y-%m-%d %H:%M:%S")}
    for run in runs:
        rd, dest = run.rd, out / "checkpoints" / run.rd.root.name
        for name in RUN_FILES:
            for where in {rd.root, rd.out}:
                if (where / name).is_file():
                    _copy(where / name, dest / (where / name).relative_to(rd.root))
        for rel in plan[rd.root.name]:
            _copy(rd.root / rel, dest / rel)
        manifest["runs"][rd.root.name] = {"model_type": run.cfg.model_type, "model": run.cfg.model.name_or_path,
                                          "covers": run.covers or "every fold", "bytes": _size(dest)}
    manifest["bytes"] = _size(out)
    write_json(out / "pack.json", manifest)
    slug = slug or out.name
    write_json(out / "dataset-metadata.json", {"title": slug, "id": f"{os.environ.get('KAGGLE_USERNAME', 'USER')}/"
                                                                    f"{slug}", "licenses": [{"name": "other"}]})
    names = ", ".join(manifest["top"]) + (f" (with members {', '.join(r.rd.root.name for r in runs[len(top):])})"
                                          if len(runs) > len(top) else "")
    print(f"packed {names} into {out} ({manifest['bytes'] / 1e6:.1f} MB, {time.time() - t0:.0f} s); upload it with: "
          f"kaggle datasets create -p {out} (set the id in {out / 'dataset-metadata.json'} first if KAGGLE_USERNAME "
          "was not set), then run notebooks/kaggle-inference.ipynb with it attached")
    return manifest


def install_wheels(pack_dir: str | Path) -> list[str]:
    """pip install the pack's wheels with no index (Internet off); returns the files installed."""
    wheels = sorted(Path(pack_dir, "wheels").glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        *map(str, wheels)], check=True)
    return [w.name for w in wheels]


def predict_packed(pack_dir: str | Path, exp: str, data_dir: str | Path, out_dir: str | Path = "/kaggle/working",
                   base_model: str = "", trust_remote_code: bool = False) -> dict:
    """The submission of packed run `exp` ("" = the pack's only run) for the test.csv of the competition in
    `data_dir` (any test set: new ids and texts), written under `out_dir` only (the pack is only read).
    `base_model`: the folder of the run's base model (LoRA, probes, LLM scoring), else its hub id or MODELS_DIR.
    Remote code (a model's own .py files) runs only with `trust_remote_code`, never because the pack says so."""
    from src.data import load_competition

    t0 = time.time()
    out_dir = Path(out_dir)
    run = open_pack(pack_dir, exp, cache_dir=out_dir / ".kit-cache")
    run.cfg.model.trust_remote_code = trust_remote_code
    if base_model:
        run.cfg.model.name_or_path = base_model  # the same base model, read from where it is attached
    run.cfg.data.data_dir = str(data_dir)
    comp = load_competition(run.cfg.data)
    if sorted(comp.labels) != sorted(run.labels):
        raise UserError(f"{data_dir} has the labels {comp.labels}; the packed run predicts {run.labels}")
    P = probs(run, comp.test[comp.text_col].fillna("").tolist())
    as_probs = run.cfg.data.metric in THRESHOLD_FREE and submission.holds_floats(comp.sample)
    values = (P if as_probs else decide(run, P))[:, [run.labels.index(lab) for lab in comp.labels]]
    sub = submission.build(comp.test_ids, values, comp.sample, probabilities=as_probs)
    rd = RunDir(out_dir / "checkpoints" / run.rd.root.name, out_dir / "submissions")
    submission.write(sub, comp.sample, rd.submission, as_probs)
    shutil.copy2(rd.submission, out_dir / "submission.csv")
    print(f"[{run.rd.root.name}] {len(comp.test)} test texts -> {out_dir / 'submission.csv'} "
          f"({time.time() - t0:.0f} s" + (f"; a partial run: {run.covers}" if run.covers else "") + ")")
    return {"exp": run.rd.root.name, "complete": not run.covers, "submission": str(rd.submission),
            "kaggle_submission": str(out_dir / "submission.csv"), "wall_s": round(time.time() - t0, 2)}


@cli
def main(argv: list[str] | None = None) -> dict:
    p = ArgParser(prog="python -m src pack", description="Pack finished runs for an offline Kaggle notebook.")
    p.add_argument("runs", nargs="+", help="run names under checkpoints/, then optional key=value overrides (e.g. "
                                           "output.checkpoints_dir=/content/drive/MyDrive/x/checkpoints)")
    p.add_argument("--out", required=True, help="the pack folder to write (new or empty)")
    p.add_argument("--wheels", default=None, help="a folder of .whl files the Kaggle image lacks (pip download ...)")
    p.add_argument("--slug", default="", help="the Kaggle dataset's name (default: the --out folder's name)")
    a = p.parse_intermixed_args(argv)
    names = [r for r in a.runs if "=" not in r]
    overrides = [r for r in a.runs if "=" in r]
    if not names:
        p.error("name at least one run")
    return pack(names, a.out, overrides, a.wheels, a.slug)


if __name__ == "__main__":
    main()
