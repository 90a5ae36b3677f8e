"""Guards around a run's folders: one run per exp at a time, writable outputs, no leftovers of killed writes.

    with run_lock(rd):                  # checkpoints/<exp>/.lock holds the pid, host and command of the holder
        prepare_outputs(rd, cfg, comp)  # not another dataset's folder, every output folder writable, temp files cleaned

The lock is taken over when its holder is gone: a dead pid on this machine, or (another machine, e.g. a preempted
Colab VM writing to Drive) a lock file not refreshed for `STALE_S` seconds; the holder refreshes it every minute.
It is re-entrant within a process, so `run` -> `finalize` takes it once. Training a subset of folds
(`python -m src.train --folds 0-2`) holds `.lock-fold<k>` per fold instead, so other folds can train in other
processes at once; a whole-run lock waits for none of them: it is refused while any fold lock is live.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from src.config import Config
from src.errors import UserError
from src.fileio import make_dir
from src.rundir import RunDir

LOCK = ".lock"
STALE_S = 600  # a lock file untouched this long belongs to a run that is gone
HEARTBEAT_S = 60
MUTEX_WAIT_S = 30.0  # fold locks are taken under the run lock; another process may hold it that long to take its own
_held: dict[Path, int] = {}  # lock path -> depth, for this process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _holder(path: Path) -> dict | None:
    """The lock's content, or None if it vanished; {} if it cannot be parsed (being written, or damaged)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _stale(path: Path, holder: dict) -> str:
    """Why the lock's holder is gone ("" if it may be running)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "removed"
    if age > STALE_S:
        return f"not refreshed for {age:.0f} s"
    if not holder:
        return "" if age < 10 else "unreadable lock file"
    pid = holder.get("pid")
    if holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return f"pid {pid} is not running"
    return ""


def _create(path: Path, folds: list[int] | None = None) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    doc = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": " ".join(sys.argv), **({"folds": list(folds)} if folds else {})}
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc) + "\n")
    return True


def _heartbeat(paths: list[Path], stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        for path in paths:
            try:
                os.utime(path)
            except OSError:
                pass


def _busy(rd: RunDir, path: Path, holder: dict) -> UserError:
    what = f" training its folds {', '.join(map(str, holder['folds']))}" if holder.get("folds") else ""
    return UserError(f"{rd.root} is in use by another run{what} (pid {holder.get('pid', '?')} on "
                     f"{holder.get('host', '?')} since {holder.get('started', '?')}: {holder.get('command', '?')}); "
                     f"wait for it to finish, or delete {path} if it is gone")


def _acquire(rd: RunDir, path: Path, folds: list[int] | None = None, wait_s: float = 0.0) -> None:
    """Create the lock file `path` (taking over one whose holder is gone); a live holder is a UserError, after
    waiting up to `wait_s` seconds for it to let go."""
    deadline = time.time() + wait_s
    tries = 0
    while True:
        try:
            if _create(path, folds):
                return
        except OSError as e:
            raise UserError(f"cannot write the lock file {path}: {e.strerror}") from None
        holder = _holder(path)
        if holder is None:
            tries += 1
        elif why := _stale(path, holder):
            print(f"taking over the lock of a run that is gone ({why}): {path}")
            path.unlink(missing_ok=True)
            tries += 1
        elif time.time() < deadline:
            time.sleep(0.2)
        else:
            raise _busy(rd, path, holder)
        if tries >= 3:
            raise UserError(f"could not take the lock {path}: another run keeps creating it")


def _live_fold_locks(rd: RunDir) -> list[tuple[Path, dict]]:
    """Fold locks (`.lock-fold<k>`) of other processes that are still running."""
    out = []
    for path in sorted(rd.root.glob(LOCK + "-fold*")):
        holder = _holder(path)
        if holder is not None and holder.get("pid") != os.getpid() and not _stale(path, holder):
            out.append((path, holder))
    return out


def check_idle(rd: RunDir) -> None:
    """Before reading a finished run's files: no other live process holds its lock or one of its fold locks (it may
    be rewriting them); a one-line error naming the holder otherwise."""
    if not rd.root.is_dir():
        return
    for path in [rd.root / LOCK, *sorted(rd.root.glob(LOCK + "-fold*"))]:
        holder = _holder(path)
        if holder is None or (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
            continue
        if not _stale(path, holder):
            raise _busy(rd, path, holder)


@contextmanager
def _holding(paths: list[Path]) -> Iterator[None]:
    """Keep freshly created lock files alive (heartbeat) for the block, then remove them."""
    for path in paths:
        _held[path] = 1
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(paths, stop), daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        for path in paths:
            del _held[path]
            if (_holder(path) or {}).get("pid") == os.getpid():
                path.unlink(missing_ok=True)


@contextmanager
def run_lock(rd: RunDir, folds: list[int] | None = None, _mutex: bool = False) -> Iterator[Path]:
    """Hold `checkpoints/<exp>/.lock` for the block (the whole run); a live holder is a one-line error naming it.

    With `folds`, hold `.lock-fold<k>` for each instead: processes training other folds of the same exp may run at
    once (`python -m src.train --folds 0-2` beside `--folds 3-4`), while a whole-run lock excludes them all."""
    root = rd.root.resolve() if rd.root.exists() else rd.root.absolute()
    paths = [root / LOCK] if folds is None else [root / f"{LOCK}-fold{k}" for k in folds]
    if all(p in _held for p in paths):
        for p in paths:
            _held[p] += 1
        try:
            yield paths[0]
        finally:
            for p in paths:
                _held[p] -= 1
        return
    new = not rd.root.exists()
    make_dir(rd.root)
    root = rd.root.resolve()
    paths = [root / p.name for p in paths]
    try:
        if folds is None:
            _acquire(rd, paths[0], wait_s=MUTEX_WAIT_S if _mutex else 0.0)
            if not _mutex and (busy := _live_fold_locks(rd)):
                paths[0].unlink(missing_ok=True)
                raise _busy(rd, *busy[0])
        else:
            with run_lock(rd, _mutex=True):  # fold locks are taken under the run lock: no race with a whole run
                taken = []
                try:
                    for p in paths:
                        _acquire(rd, p, folds)
                        taken.append(p)
                except BaseException:
                    for p in taken:
                        p.unlink(missing_ok=True)
                    raise
        with _holding(paths):
            yield paths[0]
    finally:
        if new:  # a run that failed before writing anything leaves no empty run folder behind
            try:
                rd.root.rmdir()
            except OSError:
                pass


def check_writable(folder: Path) -> None:
    """Create `folder` and write (and remove) a small probe file in it; a read-only or full disk is a UserError."""
    make_dir(folder)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe.", suffix=".tmp") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}; free space or fix its permissions, or point "
                        "output.checkpoints_dir / output.submissions_dir elsewhere") from None


def _leftover(p: Path) -> bool:
    """A temp file of an atomic write (`.name.XXXX.tmp`), a write probe, or a checkpoint folder being written."""
    return p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.startswith(".tmp-step"))


def clean_leftovers(rd: RunDir, old_s: float = STALE_S, folds: list[int] | None = None) -> int:
    """Remove what killed writes left behind: every temp file/folder under the (locked) run folder (with `folds`:
    under those folds' folders only, the rest may be another process's), and this exp's temp files in the
    submissions folder. Returns how many were removed."""
    import shutil

    tops = [rd.root] if folds is None else [rd.fold(k) for k in folds]
    found = [p for top in tops if top.is_dir() for p in top.rglob(".*") if _leftover(p)]
    if rd.submissions_dir.is_dir():
        found += [p for p in rd.submissions_dir.glob(f".{rd.submission.name}.*.tmp")]
        found += [p for p in rd.submissions_dir.glob(".write-probe.*.tmp") if time.time() - p.stat().st_mtime > old_s]
    size, n = 0, 0
    for p in sorted(found, key=lambda q: len(q.parts)):
        if not p.exists() and not p.is_symlink():
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                size += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                shutil.rmtree(p)
            else:
                size += p.stat().st_size
                p.unlink()
            n += 1
        except OSError:
            continue
    if n:
        print(f"removed {n} temp files/folders ({size / 1e6:.1f} MB) left by an interrupted run")
    return n


def run_data(cfg: Config, comp) -> dict:
    """What a run folder is made from: the dataset (name, folder, train ids, labels), its fold file, and digests of
    what its probabilities are made from (`made_from`: the raw train texts and labels, the test ids and texts)."""
    from src.data import digest, fold_path

    return {"dataset": comp.name, "data_dir": str(Path(cfg.data.data_dir).resolve()), "fold_file": fold_path(cfg).name,
            "train_rows": len(comp.train), "labels": list(comp.labels), "train_ids": digest(comp.train_ids),
            "id_col": comp.id_col, "text_col": comp.text_col, "made_from": made_from(comp)}


def made_from(comp) -> dict:
    """Digests of the data a run's OOF and test probabilities come from (the raw texts: members of one blend may
    normalize them differently)."""
    from src.data import digest

    return {"train texts": digest(comp.train[comp.text_col].tolist()), "train labels": digest(comp.Y.tolist()),
            "test texts": digest(comp.test[[comp.id_col, comp.text_col]].to_numpy().tolist())}


def check_made_from(rd: RunDir, comp, who: str, fix: str = "") -> None:
    """Refuse a finished run's probabilities when the data changed since they were made (same ids and labels, edited
    texts or label values): a submission, blend, stack or student would otherwise describe other data. A run of an
    older kit records no digests: nothing to compare."""
    saved = saved_run_data(rd)
    before = (saved or {}).get("made_from")
    if not isinstance(before, dict):
        return
    now = made_from(comp)
    differ = [key for key in now if key in before and before[key] != now[key]]
    if differ:
        raise UserError(f"{who}'s probabilities in {rd.root} were made from other data than {comp.data_dir} holds now "
                        f"({' and '.join(differ)} changed since): "
                        + (fix or "run it again on this data first"))


def _describe(d: dict) -> str:
    rows = f"{d['train_rows']} train rows, {len(d['labels'])} labels, " if "train_rows" in d else ""
    where = f", {d['data_dir']}" if "data_dir" in d else ""
    return f"'{d.get('dataset', '?')}' ({rows}fold file {d['fold_file']}{where})"


def saved_run_data(rd: RunDir) -> dict | None:
    """The data a run folder was made from: its run.json, else (an older kit's run) the fold file its config.yaml
    names; None for a new run folder."""
    from src.config import load_saved_sections
    from src.data import fold_path
    from src.fileio import read_json

    if rd.data_record.is_file():
        doc = read_json(rd.data_record)
        if isinstance(doc, dict) and isinstance(doc.get("fold_file"), str):
            return doc
        raise UserError(f"{rd.data_record} is damaged (no fold_file): delete it, and the next run records it again")
    if rd.root.joinpath("config.yaml").is_file():
        saved = load_saved_sections(rd.root / "config.yaml", ["data", "folds"])
        return {"fold_file": fold_path(saved).name, "dataset": Path(fold_path(saved).name).stem.rsplit("_k", 1)[0]}
    return None


def run_labels(rd: RunDir) -> list[str]:
    """A finished run's label columns, as its run.json recorded them."""
    doc = saved_run_data(rd)
    if not doc or not isinstance(doc.get("labels"), list):
        raise UserError(f"{rd.data_record} is missing or names no labels: is {rd.root} a finished run?")
    return [str(x) for x in doc["labels"]]


def check_run_data(cfg: Config, comp, rd: RunDir) -> None:
    """Refuse to reuse a run folder made from other data (other train ids or labels) or another fold file: runs of
    two datasets under one exp name would overwrite each other's files. The same data edited in place (same ids and
    labels) is the same run; its finished folds are checked against their fingerprints."""
    saved, now = saved_run_data(rd), run_data(cfg, comp)
    if saved is None:
        return
    differ = [k for k in ("fold_file", "labels", "train_ids") if k in saved and saved[k] != now[k]]
    if differ:
        name = f"{cfg.exp}-{comp.name}" if comp.name not in cfg.exp else f"{cfg.exp}-2"
        raise UserError(f"{rd.root} holds a run made from {_describe(saved)}; this run uses {_describe(now)}, which "
                        f"differs in {_differences(saved, now, differ)}: use another exp name (e.g. exp={name}), or "
                        f"delete {rd.root}")


def _differences(saved: dict, now: dict, keys: list[str]) -> str:
    """What differs between two run.json records, in words."""
    out = []
    for key in keys:
        before, after = saved[key], now[key]
        if key == "fold_file":
            out.append(f"its fold file ({before} -> {after})")
        elif key == "labels" and sorted(before) == sorted(after):
            out.append(f"the order of its label columns ({', '.join(before)} -> {', '.join(after)})")
        elif key == "labels":
            gone, new = [x for x in before if x not in after], [x for x in after if x not in before]
            out.append("its labels (" + "; ".join(([f"gone: {', '.join(gone)}"] if gone else [])
                                                  + ([f"new: {', '.join(new)}"] if new else [])) + ")")
        else:
            rows = saved.get("train_rows")
            out.append("its train ids (" + ("as many rows, other ids: renamed?" if rows == now["train_rows"]
                                             else f"{rows} -> {now['train_rows']} rows") + ")")
    return " and ".join(out)


def record_run_data(cfg: Config, comp, rd: RunDir) -> None:
    """Write run.json (what the run folder is made from) once its checks have passed."""
    from src.fileio import write_json

    write_json(rd.data_record, run_data(cfg, comp))


def prepare_outputs(rd: RunDir, cfg: Config, comp=None, extra: tuple[Path, ...] = (),
                    folds: list[int] | None = None) -> None:
    """Before any work: the run folder is not another dataset's (`check_run_data`, with `comp`), the run's output
    folders are writable, leftovers of killed writes are gone (with `folds`: in those folds' folders); then run.json
    records the run's data."""
    if comp is not None:
        check_run_data(cfg, comp, rd)
    folders = [rd.root, rd.out, *extra] + ([] if rd.partial else [rd.submissions_dir])
    for folder in dict.fromkeys(folders):
        check_writable(folder)
    files = [rd.config, rd.oof, rd.test, rd.test_folds, rd.thresholds, rd.metrics, rd.per_label, rd.selection]
    for f in files + ([] if rd.partial else [rd.submission]):
        if f.is_dir():
            raise UserError(f"{f} is a folder, where the run writes a file: move or remove it")
    clean_leftovers(rd, folds=folds)
    if comp is not None:
        record_run_data(cfg, comp, rd)
