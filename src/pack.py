"""Kaggle with Internet off: pack finished runs into a folder to upload as a Kaggle Dataset, then predict from it
in an inference-only notebook, reading the pack where it lies (read-only `/kaggle/input/...`).

    python -m src pack EXP [EXP ...] --out packs/NAME [--wheels DIR] [key=value ...]   # on Colab / a pod
    kaggle datasets create -p packs/NAME                                                # upload it once
    notebooks/kaggle-inference.ipynb: add the pack and the competition as inputs, Internet off, run all

A pack holds `src/` (this code), `requirements.txt`, `wheels/` (optional: packages the Kaggle image lacks),
`folds/<fold file>`, and per run `checkpoints/<exp>/`: config.yaml, run.json, selection.yaml, oof.csv, test.csv,
thresholds.json and each fold's done.json plus its selected checkpoint only (weights or LoRA adapter, tokenizer,
metrics.json, valid_probs.npy). `pack.json` lists what is inside; `dataset-metadata.json` is the kaggle CLI's.

`predict_packed` writes only under `out_dir` (default /kaggle/working): the run folder there links to the pack's
fold folders, test probabilities are recomputed from each fold's selected checkpoint (never cached beside it), and
the submission is written as `<out_dir>/submission.csv` too. A LoRA run needs its base model: `base_model=` the
folder of the same model attached as a dataset (the packed settings are checked as trained, then the base is read
from there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from src.checkpoints import read_selection
from src.config import load_config, load_run_config
from src.errors import ArgParser, UserError, cli
from src.fileio import read_json, write_json
from src.folds import fold_path, folds_for_run
from src.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("config.yaml", "run.json", "selection.yaml", "oof.csv", "test.csv", "thresholds.json", "metrics.json")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    else:
        shutil.copy2(src, dest)


def pack(exps: list[str], out: str | Path, overrides: list[str] | None = None, wheels: str | Path | None = None,
         slug: str = "") -> dict:
    """Write the pack folder `out` for the finished runs `exps` (all on one fold file); returns pack.json."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose a new --out folder")
    runs, fold_files = [], set()
    for exp in exps:  # every check before the first write
        cfg = load_run_config(exp, overrides)
        rd = RunDir.of(cfg)
        for name in ("config.yaml", "run.json", "oof.csv", "test.csv"):
            if not (rd.root / name).is_file():
                raise UserError(f"{rd.root / name} is missing: pack finished, complete runs (python -m src run ...)")
        folds = folds_for_run(cfg)
        steps = {}
        if cfg.model_type == "transformer":
            selection = read_selection(rd)
            missing = [k for k in folds if k not in selection or not (rd.fold(k) / "done.json").is_file()]
            if missing:
                raise UserError(f"{rd.root}: folds {missing} are unfinished or unselected: finish the run first")
            steps = {k: int(selection[k]["step"]) for k in folds}
            gone = [str(rd.step(k, s)) for k, s in steps.items() if not rd.step(k, s).is_dir()]
            if gone:
                raise UserError(f"selected checkpoints are missing: {', '.join(gone)}")
        if not fold_path(cfg).is_file():
            raise UserError(f"{fold_path(cfg).absolute()} (the fold file of {rd.root}) is missing: set folds.dir= "
                            "to the folder that holds it")
        fold_files.add(fold_path(cfg))
        runs.append((exp, cfg, rd, steps))
    if len(fold_files) > 1:
        raise UserError(f"the runs use different fold files ({', '.join(sorted(map(str, fold_files)))}): pack runs "
                        "of one dataset and fold file")
    wheel_files = sorted(Path(wheels).glob("*.whl")) if wheels else []
    if wheels and not wheel_files:
        raise UserError(f"--wheels {wheels} holds no .whl files")

    t0 = time.time()
    _copy(ROOT / "src", out / "src")
    _copy(ROOT / "requirements.txt", out / "requirements.txt")
    (fold_file,) = fold_files
    _copy(fold_file, out / "folds" / fold_file.name)
    for w in wheel_files:
        _copy(w, out / "wheels" / w.name)
    manifest = {"runs": {}, "fold_file": fold_file.name, "wheels": [w.name for w in wheel_files],
                "made": time.strftime("%Y-%m-%d %H:%M:%S")}
    for exp, cfg, rd, steps in runs:
        dest = out / "checkpoints" / exp
        for name in RUN_FILES:
            if (rd.root / name).is_file():
                _copy(rd.root / name, dest / name)
        for k, step in steps.items():
            _copy(rd.fold(k) / "done.json", dest / f"fold{k}" / "done.json")
            for f in rd.step(k, step).iterdir():
                if f.name not in ("resume.pt", "test_probs.npy", "test_probs.json") and not f.name.startswith("."):
                    _copy(f, dest / f"fold{k}" / f"step{step}" / f.name)
        manifest["runs"][exp] = {"model_type": cfg.model_type, "model": cfg.model.name_or_path,
                                 "method": cfg.model.method, "steps": steps, "bytes": _size(dest)}
    manifest["bytes"] = _size(out)
    write_json(out / "pack.json", manifest)
    slug = slug or out.name
    write_json(out / "dataset-metadata.json", {"title": slug, "id": f"{os.environ.get('KAGGLE_USERNAME', 'USER')}/"
                                                                    f"{slug}", "licenses": [{"name": "other"}]})
    print(f"packed {', '.join(exps)} into {out} ({manifest['bytes'] / 1e6:.1f} MB, {time.time() - t0:.0f} s); "
          f"upload it with: kaggle datasets create -p {out} (set the id in {out / 'dataset-metadata.json'} first if "
          "KAGGLE_USERNAME was not set), then run notebooks/kaggle-inference.ipynb with it attached")
    return manifest


def install_wheels(pack_dir: str | Path) -> list[str]:
    """pip install the pack's wheels with no index (Internet off); returns the files installed."""
    wheels = sorted(Path(pack_dir, "wheels").glob("*.whl"))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        *map(str, wheels)], check=True)
    return [w.name for w in wheels]


def link_run(source: Path, dest: Path) -> None:
    """A writable run folder `dest` whose fold folders are links to the read-only `source`'s; its small files are
    copies (finalize rewrites some)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        target = dest / f.name
        if f.is_dir() and f.name.startswith("fold"):
            if target.is_symlink() and target.resolve() == f.resolve():
                continue
            if target.exists() or target.is_symlink():
                raise UserError(f"{target} exists and is not a link to {f}: use an empty out_dir")
            target.symlink_to(f.resolve(), target_is_directory=True)
        elif f.is_file() and f.name in RUN_FILES:
            shutil.copy2(f, target)


def predict_packed(pack_dir: str | Path, exp: str, data_dir: str | Path, out_dir: str | Path = "/kaggle/working",
                   base_model: str = "") -> dict:
    """Test probabilities, thresholds and the submission of packed run `exp` ("" = the pack's only run) on the
    competition in `data_dir`, everything written under `out_dir` (the pack is only read). Returns its metrics."""
    from src.data import load_competition
    from src.folds import ensure_folds
    from src.pipeline import finalize
    from src.predict import predict, preflight
    from src.runguard import prepare_outputs, run_lock

    pack_dir, out_dir = Path(pack_dir), Path(out_dir)
    if not (pack_dir / "pack.json").is_file():
        raise UserError(f"{pack_dir} is not a pack (no pack.json): make one with python -m src pack")
    runs = sorted(p.name for p in (pack_dir / "checkpoints").glob("*") if p.is_dir())
    if not exp and len(runs) != 1:
        raise UserError(f"{pack_dir} holds {len(runs)} runs ({', '.join(runs)}): name the one to predict (EXP)")
    exp = exp or runs[0]
    source = pack_dir / "checkpoints" / exp
    if not (source / "config.yaml").is_file():
        raise UserError(f"{source} is not a packed run (runs in {pack_dir}: {', '.join(runs) or 'none'})")
    fold_file = read_json(pack_dir / "pack.json")["fold_file"]
    cfg = load_config(source / "config.yaml", [
        f"exp={exp}", f"data.data_dir={data_dir}", f"data.name={fold_file.rsplit('_k', 1)[0]}",
        f"folds.dir={pack_dir / 'folds'}", f"output.checkpoints_dir={out_dir / 'checkpoints'}",
        f"output.submissions_dir={out_dir / 'submissions'}", "output.plots=false"])
    if fold_path(cfg).name != fold_file:
        raise UserError(f"{source}: its settings name the fold file {fold_path(cfg).name}, the pack holds {fold_file}")
    t0 = time.time()
    comp = load_competition(cfg.data)
    folds, _ = ensure_folds(cfg, comp, verbose=False)  # the pack's fold file: read, never written
    rd = RunDir.of(cfg)
    link_run(source, rd.root)
    if cfg.model_type == "transformer":
        preflight(cfg, comp, folds, rd, predict_only=True)  # checked as trained
        if base_model:
            cfg.model.name_or_path = base_model  # the same base model, read from where it is attached
        with run_lock(rd):
            prepare_outputs(rd, cfg, comp)
            predict(cfg, comp, folds, rd, cache=False)
            result = finalize(cfg, comp, folds, wall_s=time.time() - t0)
    else:  # a run without checkpoints (TF-IDF, probe, LLM scoring): its packed OOF and test probabilities
        result = finalize(cfg, comp, folds, wall_s=time.time() - t0)
    if result.get("submission"):
        shutil.copy2(result["submission"], out_dir / "submission.csv")
        result["kaggle_submission"] = str(out_dir / "submission.csv")
        print(f"[{exp}] {out_dir / 'submission.csv'}")
    return result


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
