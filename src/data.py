"""A competition folder (train.csv, test.csv, sample_submission.csv): load, validate, convert originals.

Labels are the columns of sample_submission.csv after its id column, unless the config names them.
Converters turn the original SemEval-2018 E-c and GoEmotions files into such a folder:

    python -m src.data semeval ../shared/data/semeval2018_ec data/semeval
    python -m src.data goemotions ../shared/data/goemotions data/goemotions
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import DataConfig
from src.errors import UserError, cli
from src.fileio import read_csv, write_csv

FILES = ("train.csv", "test.csv", "sample_submission.csv")


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

    @property
    def Y(self) -> np.ndarray:
        return self.train[self.labels].to_numpy(dtype=np.int64)

    @property
    def train_ids(self) -> list[str]:
        return self.train[self.id_col].tolist()

    @property
    def test_ids(self) -> list[str]:
        return self.test[self.id_col].tolist()

    @property
    def train_texts(self) -> list[str]:
        return self.train[self.text_col].tolist()

    @property
    def test_texts(self) -> list[str]:
        return self.test[self.text_col].tolist()


def dataset_name(cfg: DataConfig) -> str:
    """The dataset's name in fold file names: `data.name`, else the data folder's name."""
    return cfg.name or Path(cfg.data_dir).resolve().name


def missing_data_message(data_dir: Path) -> str:
    return (
        f"data folder '{data_dir}' lacks {', '.join(f for f in FILES if not (data_dir / f).is_file())}. "
        f"Get the competition files with `kaggle competitions download -c <competition> -p {data_dir} && "
        f"unzip -o {data_dir}/*.zip -d {data_dir}`, or build them from the original SemEval-2018 E-c files "
        f"with `python -m src.data semeval <folder with 2018-E-c-En-*.txt> {data_dir}`, "
        f"or point at another folder with DATA_DIR=... / data.data_dir=..."
    )


# where find_data_dir looks, in order: the repo's data/, Kaggle's attached inputs, Colab's Google Drive
DATA_PLACES = ("data", "data/*", "/kaggle/input/*", "/kaggle/input/*/*", "/kaggle/input/*/*/*",
               "/content/drive/MyDrive/data", "/content/drive/MyDrive/*", "/content/drive/MyDrive/*/*", "/content/data")


def find_data_dir(given: str | Path = "", places: tuple[str, ...] = DATA_PLACES) -> Path:
    """The competition folder: `given` if set (checked), else the first folder in `places` (glob patterns)
    holding train.csv, test.csv and sample_submission.csv."""
    import glob

    if str(given):
        if not all((Path(given) / f).is_file() for f in FILES):
            raise UserError(missing_data_message(Path(given)))
        return Path(given)
    for pattern in places:
        for d in sorted(glob.glob(pattern)):
            if all((Path(d) / f).is_file() for f in FILES):
                print(f"data folder: {d}")
                return Path(d)
    raise UserError(f"no competition folder (train.csv, test.csv, sample_submission.csv) in {', '.join(places)}: "
                    "attach the competition data (Kaggle: Add Input; Colab: copy it to Drive or data/) or set "
                    "DATA_DIR (notebooks) or data.data_dir=...")


def _first_ids(ids, n: int = 3) -> str:
    ids = list(ids)
    more = f" (+{len(ids) - n} more)" if len(ids) > n else ""
    return ", ".join(map(str, ids[:n])) + more


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


def _check_labels(df: pd.DataFrame, id_col: str, labels: list[str], name: str) -> pd.DataFrame:
    out = df.copy()
    for lab in labels:
        vals = pd.to_numeric(df[lab], errors="coerce")
        bad = vals.isna() | ~vals.isin([0, 1])
        if bad.any():
            shown = sorted({"NaN" if pd.isna(v) else str(v) for v in df.loc[bad, lab]})[:3]
            raise UserError(
                f"{name} label '{lab}' must be 0/1, got {', '.join(shown)} for ids {_first_ids(df.loc[bad, id_col])}"
            )
        out[lab] = vals.astype(np.int64)
    return out


def load_competition(cfg: DataConfig) -> Competition:
    """Load and validate a competition folder; any problem is a one-line UserError."""
    data_dir = Path(cfg.data_dir)
    if not all((data_dir / f).is_file() for f in FILES):
        raise UserError(missing_data_message(data_dir))
    sample = read_csv(data_dir / "sample_submission.csv", "sample_submission.csv", dtype=str)
    id_col = cfg.id_col or sample.columns[0]
    if id_col not in sample.columns:
        raise UserError(f"sample_submission.csv has no id column '{id_col}'")
    labels = [c for c in sample.columns if c != id_col]
    if cfg.labels and list(cfg.labels) != labels:
        raise UserError(f"data.labels {list(cfg.labels)} differ from sample_submission.csv's columns {labels}")
    if not labels:
        raise UserError("sample_submission.csv has no label columns")
    _check_ids(sample, id_col, "sample_submission.csv")

    test = read_csv(data_dir / "test.csv", "test.csv", dtype={id_col: str})
    if id_col not in test.columns:
        raise UserError(f"test.csv has no id column '{id_col}'")
    text_col = cfg.text_col
    if not text_col:
        others = [c for c in test.columns if c != id_col]
        if len(others) != 1:
            raise UserError(f"cannot tell the text column of test.csv among {others}: set data.text_col")
        text_col = others[0]
    if text_col not in test.columns:
        raise UserError(f"test.csv has no text column '{text_col}'")
    test = test.astype({text_col: object})
    _check_ids(test, id_col, "test.csv")
    _check_texts(test, id_col, text_col, "test.csv")
    test_ids, sample_ids = set(test[id_col]), set(sample[id_col])
    if test_ids != sample_ids:
        raise UserError(
            f"test.csv ids differ from sample_submission.csv ids: {len(test_ids - sample_ids)} only in test "
            f"({_first_ids(sorted(test_ids - sample_ids))}), {len(sample_ids - test_ids)} only in the sample"
        )

    train = read_csv(data_dir / "train.csv", "train.csv", dtype={id_col: str, text_col: object})
    for col in (id_col, text_col):
        if col not in train.columns:
            raise UserError(f"train.csv has no column '{col}'")
    missing = [lab for lab in labels if lab not in train.columns]
    if missing:
        raise UserError(f"train.csv lacks label columns of sample_submission.csv: {missing}")
    extra = [c for c in train.columns if c not in (id_col, text_col, *labels)]
    if extra:
        raise UserError(
            f"train.csv has columns that are not id, text or a sample_submission.csv label: {extra}; drop them"
        )
    _check_ids(train, id_col, "train.csv")
    _check_texts(train, id_col, text_col, "train.csv")
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
    )


def _write_folder(out: Path, train: pd.DataFrame, test: pd.DataFrame, id_col: str, labels: list[str]) -> None:
    sample = pd.DataFrame({id_col: test[id_col]})
    for lab in labels:
        sample[lab] = 0
    for name, df in zip(FILES, (train, test, sample)):
        write_csv(out / name, df)
    print(f"wrote {out}/: train {len(train)} rows, test {len(test)} rows, {len(labels)} labels")


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
    _write_folder(out, train, test[["ID", "Tweet"]], "ID", labels)


def convert_goemotions(src: str | Path, out: str | Path) -> None:
    """GoEmotions: train = train + dev, test = test texts; label ids become one 0/1 column per emotion."""
    src, out = Path(src), Path(out)
    emo = src / "emotions.txt"
    if not emo.is_file():
        raise UserError(f"missing file: {emo}")
    labels = emo.read_text(encoding="utf-8").split()
    names = ["text", "label_ids", "id"]
    train = pd.concat([_read_tsv(src / f"{s}.tsv", header=None, names=names) for s in ("train", "dev")])
    test = _read_tsv(src / "test_texts.tsv", header=None, names=["text", "id"])
    Y = np.zeros((len(train), len(labels)), dtype=np.int64)
    for i, ids in enumerate(train["label_ids"]):
        for j in ids.split(","):
            if not (j.strip().isdigit() and int(j) < len(labels)):
                raise UserError(f"{src}: row {i + 1} has label id {j!r}, not one of 0..{len(labels) - 1} "
                                "(GoEmotions lines are text<TAB>label ids<TAB>comment id)")
            Y[i, int(j)] = 1
    frame = pd.concat([train[["id", "text"]].reset_index(drop=True), pd.DataFrame(Y, columns=labels)], axis=1)
    _write_folder(out, frame, test[["id", "text"]], "id", labels)


@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m src.data", description=__doc__.split("\n")[0])
    p.add_argument("format", choices=["semeval", "goemotions"], help="format of the original files")
    p.add_argument("src", help="folder with the original files")
    p.add_argument("out", help="competition folder to write")
    a = p.parse_args(argv)
    {"semeval": convert_semeval, "goemotions": convert_goemotions}[a.format](a.src, a.out)


if __name__ == "__main__":
    main()
