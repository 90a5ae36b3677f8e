"""Guards around a run's folders: one run per exp at a time, writable outputs, no leftovers of killed writes.

    with run_lock(rd):                  # checkpoints/<exp>/.lock holds the pid, host and command of the holder
        prepare_outputs(rd, cfg, comp)  # not another dataset's folder, every output folder writable, temp files cleaned

The lock is taken over when its holder is gone: a dead pid on this machine, or (another machine, e.g. a preempted
Colab VM writing to Drive) a lock file not refreshed for `STALE_S` seconds; the holder refreshes it every minute.
It is re-entrant within a process, so `run` -> `finalize` takes it once.
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


def _create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    doc = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": " ".join(sys.argv)}
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc) + "\n")
    return True


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(path)
        except OSError:
            return


@contextmanager
def run_lock(rd: RunDir) -> Iterator[Path]:
    """Hold `checkpoints/<exp>/.lock` for the block; a live holder is a one-line error naming it."""
    path = (rd.root / LOCK).resolve() if rd.root.exists() else rd.root.absolute() / LOCK
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    new = not rd.root.exists()
    make_dir(rd.root)
    path = (rd.root / LOCK).resolve()
    for _ in range(3):
        try:
            if _create(path):
                break
        except OSError as e:
            raise UserError(f"cannot write the lock file {path}: {e.strerror}") from None
        holder = _holder(path)
        if holder is None:
            continue
        why = _stale(path, holder)
        if not why:
            raise UserError(f"{rd.root} is in use by another run (pid {holder.get('pid', '?')} on "
                            f"{holder.get('host', '?')} since {holder.get('started', '?')}: "
                            f"{holder.get('command', '?')}); wait for it to finish, or delete {path} if it is gone")
        print(f"taking over the lock of a run that is gone ({why}): {path}")
        path.unlink(missing_ok=True)
    else:
        raise UserError(f"could not take the lock {path}: another run keeps creating it")
    _held[path] = 1
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(path, stop), daemon=True).start()
    try:
        yield path
    finally:
        stop.set()
        del _held[path]
        if (_holder(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
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


def clean_leftovers(rd: RunDir, old_s: float = STALE_S) -> int:
    """Remove what killed writes left behind: every temp file/folder under the (locked) run folder, and this exp's
    temp files in the submissions folder. Returns how many were removed."""
    import shutil

    found = [p for p in rd.root.rglob(".*") if _leftover(p)] if rd.root.is_dir() else []
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
    """What a run folder is made from: the dataset (name, folder, train ids, labels) and its fold file."""
    from src.data import digest
    from src.folds import fold_path

    return {"dataset": comp.name, "data_dir": str(Path(cfg.data.data_dir).resolve()), "fold_file": fold_path(cfg).name,
            "train_rows": len(comp.train), "labels": list(comp.labels), "train_ids": digest(comp.train_ids)}


def _describe(d: dict) -> str:
    rows = f"{d['train_rows']} train rows, {len(d['labels'])} labels, " if "train_rows" in d else ""
    where = f", {d['data_dir']}" if "data_dir" in d else ""
    return f"'{d.get('dataset', '?')}' ({rows}fold file {d['fold_file']}{where})"


def saved_run_data(rd: RunDir) -> dict | None:
    """The data a run folder was made from: its run.json, else (an older kit's run) the fold file its config.yaml
    names; None for a new run folder."""
    from src.config import load_saved_sections
    from src.fileio import read_json
    from src.folds import fold_path

    if rd.data_record.is_file():
        doc = read_json(rd.data_record)
        if isinstance(doc, dict) and isinstance(doc.get("fold_file"), str):
            return doc
        raise UserError(f"{rd.data_record} is damaged (no fold_file): delete it, and the next run records it again")
    if rd.root.joinpath("config.yaml").is_file():
        saved = load_saved_sections(rd.root / "config.yaml", ["data", "folds"])
        return {"fold_file": fold_path(saved).name, "dataset": Path(fold_path(saved).name).stem.rsplit("_k", 1)[0]}
    return None


def check_run_data(cfg: Config, comp, rd: RunDir) -> None:
    """Refuse to reuse a run folder made from other data (other train ids or labels) or another fold file: runs of
    two datasets under one exp name would overwrite each other's files. The same data edited in place (same ids and
    labels) is the same run; its finished folds are checked against their fingerprints."""
    saved, now = saved_run_data(rd), run_data(cfg, comp)
    if saved is None:
        return
    differ = [k for k in ("fold_file", "labels", "train_ids") if k in saved and saved[k] != now[k]]
    if differ:
        raise UserError(f"{rd.root} holds a run made from {_describe(saved)}; this run uses {_describe(now)}: use "
                        f"another exp name (e.g. exp={cfg.exp}-{comp.name}), or delete {rd.root}")


def record_run_data(cfg: Config, comp, rd: RunDir) -> None:
    """Write run.json (what the run folder is made from) once its checks have passed."""
    from src.fileio import write_json

    write_json(rd.data_record, run_data(cfg, comp))


def prepare_outputs(rd: RunDir, cfg: Config, comp=None, extra: tuple[Path, ...] = ()) -> None:
    """Before any work: the run folder is not another dataset's (`check_run_data`, with `comp`), the run's output
    folders are writable, leftovers of killed writes are gone; then run.json records the run's data."""
    if comp is not None:
        check_run_data(cfg, comp, rd)
    folders = [rd.root, rd.out, *extra] + ([] if rd.partial else [rd.submissions_dir])
    for folder in dict.fromkeys(folders):
        check_writable(folder)
    files = [rd.config, rd.oof, rd.test, rd.thresholds, rd.metrics, rd.per_label, rd.selection]
    for f in files + ([] if rd.partial else [rd.submission]):
        if f.is_dir():
            raise UserError(f"{f} is a folder, where the run writes a file: move or remove it")
    clean_leftovers(rd)
    if comp is not None:
        record_run_data(cfg, comp, rd)
