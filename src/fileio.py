"""File reading with clear errors, and atomic writes (temp file + rename) so nothing is half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from src.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, df: pd.DataFrame, float_format: str | None = None) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def read_csv(path: str | Path, what: str = "", **kwargs) -> pd.DataFrame:
    """Read a UTF-8 CSV; missing, empty, non-UTF-8 or malformed files raise a one-line UserError."""
    path = Path(path)
    name = what or str(path)
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"{name} is empty")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{name} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); re-save it as UTF-8"
        ) from None
    try:
        df = pd.read_csv(path, encoding="utf-8", keep_default_na=False, na_values=[""], **kwargs)
    except pd.errors.EmptyDataError:
        raise UserError(f"{name} is empty") from None
    except pd.errors.ParserError as e:
        raise UserError(f"{name} is not a valid CSV: {str(e).strip().splitlines()[-1]}") from None
    if df.empty:
        raise UserError(f"{name} has a header but no rows")
    return df
