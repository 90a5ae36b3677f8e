"""A competition folder (train.csv, test.csv, sample_submission.csv): load, validate, convert originals.

Labels are the columns of sample_submission.csv after its id column, unless the config names them.
Converters turn the original SemEval-2018 E-c and GoEmotions files into such a folder:

    python -m src.data semeval ../shared/data/semeval2018_ec data/semeval
    python -m src.data goemotions ../shared/data/goemotions data/goemotions
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import DataConfig
from src.errors import ArgParser, UserError, cli
from src.fileio import check_header, csv_rows, read_csv, read_header, read_text, write_csv
from src.text import normalize

FILES = ("train.csv", "test.csv", "sample_submission.csv")


def digest(values) -> str:
    """A short digest of a list of values (ids, texts, label rows), as JSON: no text can fake a separator."""
    return hashlib.sha1(json.dumps(values, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class Competition:
    name: str
    data_dir: Path
    id_col: str
    text_col: str
    labels: list[str]
    train: pd.DataFrame  # id, text, one 0/1 column per label
    test: pd.DataFrame  # id, text
    sample: pd.DataFrame  # id, one column per label
    normalize: str = "none"  # how train_texts / test_texts are normalized (src/text.py); the frames keep the raw text

    @property
    def Y(self) -> np.ndarray:
        return self.train[self.labels].to_numpy(dtype=np.int64)

    # Built once: callers index them row by row (`[comp.train_ids[i] for i in rows]`), which a property that
    # rebuilt the list on every access made quadratic in rows (40 s of a GoEmotions finalize).
    @cached_property
    def train_ids(self) -> list[str]:
        return self.train[self.id_col].tolist()

    @cached_property
    def test_ids(self) -> list[str]:
        return self.test[self.id_col].tolist()

    @cached_property
    def train_texts(self) -> list[str]:
        return normalize(self.train[self.text_col].tolist(), self.normalize)

    @cached_property
    def test_texts(self) -> list[str]:
        return normalize(self.test[self.text_col].tolist(), self.normalize)


def dataset_name(cfg: DataConfig) -> str:
    """The dataset's name in fold file names: `data.name` (one file name, no folder parts), else the data folder's
    name."""
    if cfg.name and (any(c in cfg.name for c in "/\\\0") or cfg.name.strip() in (".", "..")):
        raise UserError(f"data.name={cfg.name!r} must be a plain name without / or \\ (it names the fold file "
                        "folds/<name>_k<K>_s<seed>.csv)")
    return cfg.name or Path(cfg.data_dir).resolve().name


def fold_path(cfg) -> Path:
    """The fold file of a config: `folds/<dataset>_k<K>_s<seed>.csv` (one per dataset, K and seed)."""
    return Path(cfg.folds.dir) / f"{dataset_name(cfg.data)}_k{cfg.folds.n_folds}_s{cfg.folds.seed}.csv"


def missing_data_message(data_dir: Path) -> str:
    return (
        f"data folder '{data_dir}' ({Path(data_dir).absolute()}) lacks "
        f"{', '.join(f for f in FILES if not (data_dir / f).is_file())}. "
        f"Get the competition files with `kaggle competitions download -c <competition> -p {data_dir} && "
        f"unzip -o {data_dir}/*.zip -d {data_dir}`, or build them from the original SemEval-2018 E-c files "
        f"with `python -m src.data semeval <folder with 2018-E-c-En-*.txt> {data_dir}`, "
        f"or point at another folder with DATA_DIR=... / data.data_dir=..."
    )


# where find_data_dir looks, in order: the repo's data/, Kaggle's attached inputs, Colab's Google Drive
DATA_PLACES = ("data", "data/*", "/kaggle/input/*", "/kaggle/input/*/*", "/kaggle/input/*/*/*",
               "/content/drive/MyDrive/data", "/content/drive/MyDrive/*", "/content/drive/MyDrive/*/*", "/content/data")


def find_data_dir(given: str | Path = "", places: tuple[str, ...] = DATA_PLACES) -> Path:
    """The competition folder: `given` if set (checked), else the one folder among `places` (glob patterns) holding
    train.csv, test.csv and sample_submission.csv; none, or several (e.g. data/semeval and data/goemotions made by
    the converters), is an error asking for DATA_DIR."""
    import glob

    if str(given):
        if not all((Path(given) / f).is_file() for f in FILES):
            raise UserError(missing_data_message(Path(given)))
        return Path(given)
    found: dict[Path, str] = {}  # resolved folder -> the path as found (a folder matched by two patterns counts once)
    for pattern in places:
        for d in sorted(glob.glob(pattern)):
            if all((Path(d) / f).is_file() for f in FILES):
                found.setdefault(Path(d).resolve(), d)
    if len(found) > 1:
        raise UserError(f"{len(found)} competition folders found: {', '.join(found.values())}; set DATA_DIR "
                        "(notebooks) or data.data_dir=... to the one to use")
    if not found:
        raise UserError(f"no competition folder (train.csv, test.csv, sample_submission.csv) in {', '.join(places)}: "
                        "attach the competition data (Kaggle: Add Input; Colab: copy it to Drive or data/) or set "
                        "DATA_DIR (notebooks) or data.data_dir=...")
    (d,) = found.values()
    print(f"data folder: {d}")
    return Path(d)


# columns the kit adds to its own files (oof.csv, test.csv: id, fold, then one column per label) or uses internally;
# a label may be none of these, nor start with RESERVED_PREFIX
RESERVED_COLUMNS = frozenset({"id", "fold", "_row"})
RESERVED_PREFIX = "_"
TRUE_FALSE = {"True": 1, "TRUE": 1, "true": 1, "False": 0, "FALSE": 0, "false": 0}  # as pandas reads booleans
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _first_ids(ids, n: int = 3) -> str:
    """The first `n` ids, quoted when spaces matter, with escapes (ascii) when they hold characters that print alike
    in other Unicode forms (NFC / NFD: 'é' and 'e' + a combining accent)."""
    ids = list(ids)
    more = f" (+{len(ids) - n} more)" if len(ids) > n else ""
    shown = [str(i) for i in ids[:n]]
    if any(not i.isascii() for i in shown):
        show = ascii
    elif any(i != i.strip() for i in shown):
        show = repr
    else:
        show = str
    return ", ".join(map(show, shown)) + more


def _is_number(cell: str) -> bool:
    return bool(_NUMBER.fullmatch(cell.strip()))


def _read(data_dir: Path, name: str) -> pd.DataFrame:
    """One file of the folder, every column as its exact text (labels are converted after checking)."""
    return read_csv(data_dir / name, name, dtype=str)


def _first_column(data_dir: Path, name: str) -> set[str]:
    return {fields[0] for _, _, fields in csv_rows(read_text(data_dir / name, name), name)}


def _headerless(name: str, header: list[str], why: str, fix: str) -> UserError:
    line = ",".join(header)
    line = line if len(line) <= 60 else line[:57] + "..."
    return UserError(f"{name} seems to have no header row: its first line {line!r} {why}; add the header line ({fix})")


def _sample_columns(cfg: DataConfig, heads: dict[str, list[str]]) -> tuple[str, list[str]]:
    """The id column and labels from sample_submission.csv's header, checked before the file is read."""
    head, test_head = heads["sample_submission.csv"], heads["test.csv"]
    values = head[1:]
    if values and all(map(_is_number, values)) and (len(set(values)) < len(values) or head[0] not in test_head):
        raise _headerless("sample_submission.csv", head, "looks like data (an id and label values)",
                          "the id column's name, then the label names of train.csv")
    check_header(head, "sample_submission.csv")
    id_col = cfg.id_col or head[0]
    if id_col not in head:
        raise UserError(f"sample_submission.csv has no id column '{id_col}' (data.id_col); its columns: {head}")
    if id_col != head[0]:
        raise UserError(f"data.id_col '{id_col}' must be the first column of sample_submission.csv (a submission keeps "
                        f"the sample's columns in order), not '{head[0]}'")
    labels = head[1:]
    if cfg.labels and list(cfg.labels) != labels:
        raise UserError(f"data.labels {list(cfg.labels)} differ from sample_submission.csv's columns {labels}")
    if not labels:
        raise UserError(f"sample_submission.csv has no label columns (only '{id_col}'): it needs the id column, then "
                        "one column per label")
    for lab in labels:
        if lab in RESERVED_COLUMNS or lab.startswith(RESERVED_PREFIX):
            raise UserError(f"label '{lab}' of sample_submission.csv is a name the kit uses in its own files "
                            f"({', '.join(sorted(RESERVED_COLUMNS))} or a leading '{RESERVED_PREFIX}'): rename the "
                            "column in train.csv and sample_submission.csv")
    return id_col, labels


def _test_columns(cfg: DataConfig, data_dir: Path, heads: dict[str, list[str]], id_col: str,
                  labels: list[str], sample_ids: set[str]) -> str:
    """The text column, from test.csv's header (checked against the sample's id column and labels)."""
    head = heads["test.csv"]
    if id_col not in head:
        if head[0] in sample_ids:
            raise _headerless("test.csv", head, f"starts with the id '{head[0]}' of sample_submission.csv",
                              f"{id_col},<text column>")
        if not cfg.id_col and id_col in _first_column(data_dir, "test.csv"):
            raise _headerless("sample_submission.csv", heads["sample_submission.csv"],
                              f"starts with the id '{id_col}' of test.csv", "the id column's name, then the labels")
        raise UserError(f"test.csv has no id column '{id_col}' (the first column of sample_submission.csv); "
                        f"its columns: {head}")
    check_header(head, "test.csv")
    text_col = cfg.text_col
    if not text_col:
        others = [c for c in head if c != id_col]
        if len(others) != 1:
            raise UserError(f"cannot tell the text column of test.csv among {others}: set data.text_col")
        text_col = others[0]
    if text_col == id_col:
        raise UserError(f"data.text_col '{text_col}' is the id column: name the column that holds the texts")
    if text_col not in head:
        raise UserError(f"test.csv has no text column '{text_col}'; its columns: {head}")
    if text_col in labels:
        raise UserError(f"'{text_col}' is both the text column and a label column of sample_submission.csv")
    return text_col


def _check_train_header(head: list[str], id_col: str, text_col: str, labels: list[str]) -> None:
    if id_col not in head and text_col not in head and any(map(_is_number, head[1:])):
        raise _headerless("train.csv", head, "looks like data", f"{id_col},{text_col},{','.join(labels)}")
    check_header(head, "train.csv")
    for col in (id_col, text_col):
        if col not in head:
            raise UserError(f"train.csv has no column '{col}'; its columns: {head}")
    missing = [lab for lab in labels if lab not in head]
    if missing:
        raise UserError(f"train.csv lacks label columns of sample_submission.csv: {missing}")
    extra = [c for c in head if c not in (id_col, text_col, *labels)]
    if extra:
        raise UserError(
            f"train.csv has columns that are not id, text or a sample_submission.csv label: {extra}; drop them"
        )


def _check_ids(df: pd.DataFrame, id_col: str, name: str) -> None:
    if df[id_col].isna().any():
        raise UserError(f"{name} has empty ids in column '{id_col}'")
    dup = df[id_col][df[id_col].duplicated()]
    if len(dup):
        raise UserError(f"{name} has duplicate ids: {_first_ids(dup.unique())}")


def _check_texts(df: pd.DataFrame, id_col: str, text_col: str, name: str) -> None:
    bad = df[text_col].isna() | (df[text_col].astype(str).str.strip() == "")
    if bad.any():
        raise UserError(f"{name} has empty or missing text in '{text_col}' for ids {_first_ids(df.loc[bad, id_col])}")


def _check_test_ids(test: pd.DataFrame, id_col: str, text_col: str, sample_ids: set[str]) -> None:
    test_ids = set(test[id_col])
    if test_ids == sample_ids:
        return
    only_test, only_sample = sorted(test_ids - sample_ids), sorted(sample_ids - test_ids)
    hint, missing = "", set(only_sample)
    if {i.strip() for i in test_ids} == {i.strip() for i in sample_ids}:
        hint = "; they differ only in leading/trailing spaces"
    elif {unicodedata.normalize("NFC", i) for i in test_ids} == {unicodedata.normalize("NFC", i) for i in sample_ids}:
        hint = ("; they differ only in Unicode form (composed vs decomposed accents, shown escaped): save both files "
                "in one form (NFC)")
    elif any(line.split(",")[0] in missing for t in test[text_col] if "\n" in t for line in t.splitlines()[1:]):
        hint = "; some of the sample's ids are inside test.csv texts: an unbalanced quote there merges rows"
    raise UserError(
        f"test.csv ids differ from sample_submission.csv ids: {len(only_test)} only in test "
        f"({_first_ids(only_test)}), {len(only_sample)} only in the sample ({_first_ids(only_sample)}){hint}"
    )


def _check_merged_rows(df: pd.DataFrame, id_col: str, text_col: str, labels: list[str]) -> None:
    """A text spanning lines that hold whole train rows (text, then 0/1 labels): an unbalanced quote merged them."""
    width, tail = len(df.columns), len(labels)
    for ident, text in zip(df[id_col], df[text_col]):
        if "\n" not in text:
            continue
        for i, line in enumerate(text.splitlines()):
            fields = next(csv.reader([line]), [])
            if len(fields) == width - (i == 0) and all(f.strip() in ("0", "1") for f in fields[-tail:]):
                raise UserError(f"train.csv: the text of id {ident} holds what look like whole rows ({line[:40]!r}): "
                                "an unbalanced quote in it merges the rows that follow; fix the quote")


def _check_labels(df: pd.DataFrame, id_col: str, labels: list[str], name: str) -> pd.DataFrame:
    out = df.copy()
    for lab in labels:
        vals = pd.to_numeric(df[lab].replace(TRUE_FALSE), errors="coerce")
        bad = vals.isna() | ~vals.isin([0, 1])
        if bad.any():
            shown = sorted({"NaN" if pd.isna(v) else str(v) for v in df.loc[bad, lab]})[:3]
            raise UserError(
                f"{name} label '{lab}' must be 0/1, got {', '.join(shown)} for ids {_first_ids(df.loc[bad, id_col])}"
            )
        out[lab] = vals.astype(np.int64)
    return out


def load_competition(cfg: DataConfig) -> Competition:
    """Load and validate a competition folder; any problem is a one-line UserError.

    Ids and texts are kept as their exact strings (no number, NA or boolean parsing, no stripping)."""
    data_dir = Path(cfg.data_dir)
    if not all((data_dir / f).is_file() for f in FILES):
        raise UserError(missing_data_message(data_dir))
    heads = {f: read_header(data_dir / f, f) for f in FILES}
    id_col, labels = _sample_columns(cfg, heads)
    sample = _read(data_dir, "sample_submission.csv")
    _check_ids(sample, id_col, "sample_submission.csv")
    sample_ids = set(sample[id_col])

    text_col = _test_columns(cfg, data_dir, heads, id_col, labels, sample_ids)
    test = _read(data_dir, "test.csv")
    _check_ids(test, id_col, "test.csv")
    _check_texts(test, id_col, text_col, "test.csv")
    _check_test_ids(test, id_col, text_col, sample_ids)

    _check_train_header(heads["train.csv"], id_col, text_col, labels)
    train = _read(data_dir, "train.csv")
    _check_ids(train, id_col, "train.csv")
    _check_texts(train, id_col, text_col, "train.csv")
    _check_merged_rows(train, id_col, text_col, labels)
    train = _check_labels(train, id_col, labels, "train.csv")
    return Competition(
        name=dataset_name(cfg),
        data_dir=data_dir,
        id_col=id_col,
        text_col=text_col,
        labels=labels,
        train=train[[id_col, text_col, *labels]].reset_index(drop=True),
        test=test[[id_col, text_col]].reset_index(drop=True),
        sample=sample,
        normalize=cfg.normalize,
    )


def _write_folder(out: Path, train: pd.DataFrame, test: pd.DataFrame, id_col: str, labels: list[str],
                  parts: dict[str, int]) -> None:
    """The competition folder; `parts`: rows of each original split that went into train.csv."""
    sample = pd.DataFrame({id_col: test[id_col]})
    for lab in labels:
        sample[lab] = 0
    for name, df in zip(FILES, (train, test, sample)):
        write_csv(out / name, df)
    print(f"wrote {out}/: train.csv {len(train)} rows (= {' + '.join(f'{n} {s}' for s, n in parts.items())}: the "
          f"dev split is training data here, every model is scored out-of-fold), test.csv {len(test)} rows, "
          f"{len(labels)} labels")


def _read_tsv(path: Path, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8", **kwargs)


def convert_semeval(src: str | Path, out: str | Path) -> None:
    """SemEval-2018 E-c English: train = train + dev (in that order), test = test texts."""
    src, out = Path(src), Path(out)
    parts = [_read_tsv(src / f"2018-E-c-En-{s}.txt", quoting=csv.QUOTE_NONE) for s in ("train", "dev")]
    train = pd.concat(parts, ignore_index=True)
    test = _read_tsv(src / "2018-E-c-En-test-texts.txt", quoting=csv.QUOTE_NONE)
    for name, df in (("train/dev", train), ("test-texts", test)):
        if not {"ID", "Tweet"} <= set(df.columns):
            raise UserError(f"{src}: the {name} files lack the ID and Tweet columns of SemEval-2018 E-c")
    labels = [c for c in train.columns if c not in ("ID", "Tweet")]
    _write_folder(out, train, test[["ID", "Tweet"]], "ID", labels, {s: len(x) for s, x in zip(("train", "dev"), parts)})


def convert_goemotions(src: str | Path, out: str | Path) -> None:
    """GoEmotions: train = train + dev, test = test texts; label ids become one 0/1 column per emotion."""
    src, out = Path(src), Path(out)
    emo = src / "emotions.txt"
    if not emo.is_file():
        raise UserError(f"missing file: {emo}")
    labels = emo.read_text(encoding="utf-8").split()
    names = ["text", "label_ids", "id"]
    parts = {s: _read_tsv(src / f"{s}.tsv", header=None, names=names) for s in ("train", "dev")}
    train = pd.concat(parts.values())
    test = _read_tsv(src / "test_texts.tsv", header=None, names=["text", "id"])
    Y = np.zeros((len(train), len(labels)), dtype=np.int64)
    for i, ids in enumerate(train["label_ids"]):
        for j in ids.split(","):
            if not (j.strip().isdigit() and int(j) < len(labels)):
                raise UserError(f"{src}: row {i + 1} has label id {j!r}, not one of 0..{len(labels) - 1} "
                                "(GoEmotions lines are text<TAB>label ids<TAB>comment id)")
            Y[i, int(j)] = 1
    frame = pd.concat([train[["id", "text"]].reset_index(drop=True), pd.DataFrame(Y, columns=labels)], axis=1)
    _write_folder(out, frame, test[["id", "text"]], "id", labels, {s: len(x) for s, x in parts.items()})


@cli
def main(argv: list[str] | None = None) -> None:
    p = ArgParser(prog="python -m src.data", description=__doc__.split("\n")[0])
    p.add_argument("format", choices=["semeval", "goemotions"], help="format of the original files")
    p.add_argument("src", help="folder with the original files")
    p.add_argument("out", help="competition folder to write")
    a = p.parse_args(argv)
    {"semeval": convert_semeval, "goemotions": convert_goemotions}[a.format](a.src, a.out)


if __name__ == "__main__":
    main()
