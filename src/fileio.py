"""File reading with clear errors, and atomic writes (temp file + rename) so nothing is half-written.

Every CSV is checked as raw text before pandas reads it: comma-separated, a header with unique, non-empty names,
and every row with as many fields as the header (pandas would otherwise shift columns or invent an index).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from src.errors import UserError

OTHER_SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'"}  # separators people save CSVs with by mistake
UNNAMED = re.compile(r"Unnamed: \d+(_level_\d+)?")  # what pandas calls a column with no name
csv.field_size_limit(2**31 - 1)  # long texts (the default limit is 128 KiB per field)


def _os_error(action: str, path: Path | str, e: OSError) -> UserError:
    reason = e.strerror or str(e) or type(e).__name__
    return UserError(f"cannot {action} {path}: {reason} (check that the folder is writable and the disk has space)")


def make_dir(path: str | Path) -> Path:
    """Create folder `path` with its parents; a file in the way, or an OS error, is a UserError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise UserError(f"{blocker} is a file, where a folder is needed: move it, or point the setting elsewhere") \
            from None
    except OSError as e:
        raise _os_error("create the folder", path, e) from None
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds.

    An OSError creating the folder, the temp file, writing it (in the block) or renaming it becomes a UserError
    naming `path` and the OS's reason; the temp file is removed whatever happens."""
    path = Path(path)
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _os_error("write", path, e) from None
    try:
        try:
            yield Path(tmp)
        except OSError as e:
            if e.filename not in (None, tmp, str(tmp)):  # not about the file being written: not ours to rename
                raise
            raise _os_error("write", path, e) from None
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
            os.replace(tmp, path)
        except OSError as e:
            raise _os_error("write", path, e) from None
    finally:
        try:
            if os.path.exists(tmp):
                os.unlink(tmp)
        except OSError:
            pass


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` atomically; a file that already holds exactly `text` is left as it is (its time too)."""
    try:
        if Path(path).read_bytes() == text.encode("utf-8"):
            return Path(path)
    except OSError:
        pass
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, df: pd.DataFrame, float_format: str | None = None) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def read_utf8(path: str | Path, what: str = "file") -> str:
    """A file's UTF-8 text (possibly empty); a missing, unreadable or non-UTF-8 file is a UserError naming it."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}; "
                        "truncated or corrupted?): re-save it as UTF-8") from None


def read_json(path: str | Path):
    """The JSON document in `path`; a missing, unreadable or invalid (truncated, corrupted) file is a UserError."""
    path = Path(path)
    raw = _read_bytes(path)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f": {e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise UserError(f"{path} is not valid JSON (truncated or corrupted?){where}") from None


def read_text(path: str | Path, what: str = "") -> str:
    """A non-empty UTF-8 text file (a leading BOM dropped); missing, empty or non-UTF-8 files raise a UserError."""
    path = Path(path)
    name = what or str(path)
    raw = _read_bytes(path)
    if not raw.strip():
        raise UserError(f"{name} is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(
            f"{name} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); re-save it as UTF-8"
        ) from None
    if not text.strip():
        raise UserError(f"{name} is empty")
    return text


def csv_rows(text: str, name: str, sep: str = ",") -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of each non-blank record of CSV `text`, as pandas splits them."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    last = 0
    try:
        for fields in reader:
            first, last = last + 1, reader.line_num
            if fields:
                yield first, last, fields
    except csv.Error as e:
        raise UserError(f"{name} is not a valid CSV (line {reader.line_num}): {e}") from None


def _check_separator(header: list[str], name: str) -> None:
    if len(header) == 1:
        seen = [desc for sep, desc in OTHER_SEPARATORS.items() if sep in header[0]]
        if seen:
            raise UserError(f"{name} looks {seen[0]}-separated (its header is {header[0]!r}): "
                            "save it as a comma-separated CSV")


def check_header(header: list[str], name: str) -> None:
    """Raise a UserError unless the raw header names are all non-empty, not pandas' 'Unnamed: N', and unique."""
    for i, col in enumerate(header):
        hint = {0: " (a saved row index? re-save it without one)", len(header) - 1: " (a trailing comma?)"}.get(i, "")
        if not col.strip():
            raise UserError(f"{name}: column {i + 1} of the header has no name{hint}; name it or drop the column")
        if UNNAMED.fullmatch(col):
            raise UserError(f"{name}: column {i + 1} of the header is {col!r}, pandas' name for a column without one"
                            f"{hint}; name it or drop the column")
    seen: dict[str, int] = {}
    for i, col in enumerate(header):
        if col in seen:
            raise UserError(f"{name} has the column '{col}' twice (columns {seen[col] + 1} and {i + 1}): "
                            "rename or drop one")
        seen[col] = i


def read_header(path: str | Path, what: str = "", sep: str = ",") -> list[str]:
    """The first row of a CSV as raw strings (nothing renamed or converted), after the file-level checks."""
    name = what or str(path)
    for _, _, fields in csv_rows(read_text(path, what), name, sep):
        if sep == ",":
            _check_separator(fields, name)
        return fields
    raise UserError(f"{name} is empty")


def check_csv_text(text: str, name: str, sep: str = ",", header: bool = True) -> None:
    """Raise a UserError unless every row of CSV `text` has as many fields as its first row (and, with `header`,
    that row is a header of unique non-empty names in a comma-separated file)."""
    rows = csv_rows(text, name, sep)
    head = next(rows, None)
    if head is None:
        raise UserError(f"{name} is empty")
    width = len(head[2])
    if header:
        if sep == ",":
            _check_separator(head[2], name)
        check_header(head[2], name)
    bad, end = [], head
    for end in rows:
        if len(end[2]) != width:
            bad.append((end[0], end[1], len(end[2])))
    if end[1] > end[0] and text.count('"') % 2 and end[1] >= text.rstrip("\r\n").count("\n") + 1:
        raise UserError(f"{name}: a quoted field opens on line {end[0]} and never closes (an unbalanced quote \"): "
                        f"lines {end[0]}-{end[1]} read as one row; close or remove the quote")
    if not bad:
        return
    first, last, n = bad[0]
    also = f" (also line{'s' if len(bad) > 2 else ''} {', '.join(str(b[0]) for b in bad[1:4])}" \
           f"{f' and {len(bad) - 4} more' if len(bad) > 4 else ''})" if len(bad) > 1 else ""
    if last > first:
        hint = f"a quoted field runs from line {first} to {last}: an unbalanced quote?"
    elif n > width:
        hint = "a trailing comma, or a comma in an unquoted text? (texts with commas must be quoted)"
    else:
        hint = "a missing value, or a line break in an unquoted text?"
    raise UserError(f"{name} line {first} has {n} fields, its {'header' if header else 'first row'} {width}{also}: "
                    f"{hint}")


def read_csv(path: str | Path, what: str = "", **kwargs) -> pd.DataFrame:
    """Read a UTF-8 comma-separated CSV with a header; missing, empty, non-UTF-8 or malformed files (another
    separator, unnamed or duplicate columns, rows with more or fewer fields than the header) raise a one-line
    UserError. Values are never used as the index."""
    path = Path(path)
    name = what or str(path)
    text = read_text(path, what)
    check_csv_text(text, name, kwargs.get("sep", ","), header=kwargs.get("header", "infer") is not None)
    try:
        df = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""], **{"index_col": False, **kwargs})
    except pd.errors.EmptyDataError:
        raise UserError(f"{name} is empty") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise UserError(f"{name} is not a valid CSV: {str(e).strip().splitlines()[-1]}") from None
    if df.empty:
        raise UserError(f"{name} has a header but no rows")
    return df
