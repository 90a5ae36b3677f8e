"""Malformed competition folders and file faults (issue 13): one-line UserErrors naming the file, exact ids and texts,
no collisions with the kit's own column names, atomic writes that fail cleanly."""

import csv
import errno
import io
import os
import pathlib

import pytest

from src.__main__ import main as cli_main
from src.config import DataConfig, load_config
from src.data import RESERVED_COLUMNS, load_competition
from src.errors import UserError
from src.fileio import atomic_path, make_dir, read_csv, read_json, write_json, write_text


def load(d, **kw):
    return load_competition(DataConfig(data_dir=str(d), **kw))


def rows(d, name):
    with open(d / name, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def put(d, name, table):
    """Write `table` (header + rows of strings) as a plain comma CSV."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(table)
    (d / name).write_text(buf.getvalue(), encoding="utf-8")


def retext(d, name, fn):
    (d / name).write_text(fn((d / name).read_text(encoding="utf-8")), encoding="utf-8")


def resep(sep):
    return lambda text: text.replace(",", sep)


def lines(fn):
    """Apply `fn(i, line)` to every line (0 = header)."""
    return lambda text: "".join(fn(i, line) + "\n" for i, line in enumerate(text.splitlines()))


def with_header(name, header):
    return lambda d: retext(d, name, lambda t: header + "\n" + t.split("\n", 1)[1])


def drop_header(name):
    return lambda d: retext(d, name, lambda t: t.split("\n", 1)[1])


def relabel(label):
    """Rename the label 'joy' in train.csv and sample_submission.csv."""
    heads = {"train.csv": "ID,Tweet,anger,{},fear,trust", "sample_submission.csv": "ID,anger,{},fear,trust"}
    return lambda d: [with_header(f, h.format(label))(d) for f, h in heads.items()]


def close_quote_after_text(s):
    """`id,text",labels`: a train line whose text ends an earlier line's open quote."""
    ident, text, labels = s.split(",", 2)
    return f'{ident},{text}",{labels}'


def error(d, **kw) -> str:
    with pytest.raises(UserError) as e:
        load(d, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


CASES = {
    # 1. separators: name the file and the separator seen, ask for a comma CSV
    "train ;": (lambda d: retext(d, "train.csv", resep(";")), ["train.csv looks ';'-separated", "comma-separated"]),
    "test tab": (lambda d: retext(d, "test.csv", resep("\t")), ["test.csv looks tab-separated", "comma-separated"]),
    "sample ;": (lambda d: retext(d, "sample_submission.csv", resep(";")),
                 ["sample_submission.csv looks ';'-separated"]),
    "sample tab": (lambda d: retext(d, "sample_submission.csv", resep("\t")),
                   ["sample_submission.csv looks tab-separated"]),
    # 2. rows with more (or fewer) fields than the header
    "trailing commas in train": (lambda d: retext(d, "train.csv", lines(lambda i, s: s if i == 0 else s + ",")),
                                 ["train.csv line 2 has 7 fields, its header 6", "also lines 3, 4, 5 and 196 more",
                                  "trailing comma"]),
    "trailing commas in test": (lambda d: retext(d, "test.csv", lines(lambda i, s: s if i == 0 else s + ",")),
                                ["test.csv line 2 has 3 fields, its header 2"]),
    "one extra field in test": (lambda d: retext(d, "test.csv", lines(lambda i, s: s + ",x" if i == 9 else s)),
                                ["test.csv line 10 has 3 fields, its header 2:"]),
    "trailing commas in sample": (lambda d: retext(d, "sample_submission.csv",
                                                   lines(lambda i, s: s if i == 0 else s + ",")),
                                  ["sample_submission.csv line 2 has 6 fields, its header 5"]),
    "a field short in train": (lambda d: retext(d, "train.csv", lines(lambda i, s: s.rsplit(",", 1)[0] if i == 7
                                                                      else s)),
                               ["train.csv line 8 has 5 fields, its header 6"]),
    "header and rows with trailing commas": (lambda d: retext(d, "train.csv", lines(lambda i, s: s + ",")),
                                             ["train.csv: column 7 of the header has no name (a trailing comma?)"]),
    "unbalanced quote to the end": (lambda d: retext(d, "train.csv", lines(
        lambda i, s: s.replace(",", ',"', 1) if i == 5 else s)), ["train.csv: a quoted field opens on line 6 and "
                                                                  "never closes (an unbalanced quote \")"]),
    # 3. headerless files
    "headerless sample": (drop_header("sample_submission.csv"),
                          ["sample_submission.csv seems to have no header row", "'te-00000,0,0,0,0'"]),
    "headerless test": (drop_header("test.csv"), ["test.csv seems to have no header row", "te-00000"]),
    "headerless train": (drop_header("train.csv"), ["train.csv seems to have no header row",
                                                    "ID,Tweet,anger,joy,fear,trust"]),
    # 4. duplicate column names
    "label twice in train": (with_header("train.csv", "ID,Tweet,anger,joy,fear,anger"),
                             ["train.csv has the column 'anger' twice (columns 3 and 6)"]),
    "label twice in sample": (with_header("sample_submission.csv", "ID,anger,joy,anger,trust"),
                              ["sample_submission.csv has the column 'anger' twice"]),
    "BOM and the id twice": (lambda d: retext(d, "test.csv", lambda t: "\ufeffID,ID" + t[len("ID,Tweet"):]),
                             ["test.csv has the column 'ID' twice (columns 1 and 2)"]),
    # 6. names that collide with the kit's own columns, or are not names at all
    "label 'fold'": (relabel("fold"), ["label 'fold' of sample_submission.csv is a name the kit uses"]),
    "label 'id'": (relabel("id"), ["label 'id' of sample_submission.csv"]),
    "label '_row'": (relabel("_row"), ["label '_row'"]),
    "label with a leading _": (relabel("_joy"), ["label '_joy'", "a leading '_'"]),
    "label is the id column": (relabel("ID"), ["sample_submission.csv has the column 'ID' twice (columns 1 and 3)"]),
    "label is the text column": (with_header("sample_submission.csv", "ID,anger,joy,Tweet,trust"),
                                 ["'Tweet' is both the text column and a label"]),
    "empty label name": (relabel(""), ["sample_submission.csv: column 3 of the header has no name"]),
    "label 'Unnamed: 2'": (relabel("Unnamed: 2"), ["sample_submission.csv: column 3 of the header is 'Unnamed: 2'"]),
    "blank label name": (with_header("sample_submission.csv", "ID,anger,  ,fear,trust"),
                         ["sample_submission.csv: column 3 of the header has no name"]),
    "saved index column": (lambda d: retext(d, "test.csv", lines(lambda i, s: ("" if i == 0 else str(i)) + "," + s)),
                           ["test.csv: column 1 of the header has no name (a saved row index?"]),
    "index column read and saved by pandas": (with_header("train.csv", "Unnamed: 0,Tweet,anger,joy,fear,trust"),
                                              ["train.csv: column 1 of the header is 'Unnamed: 0'",
                                               "a saved row index?"]),
    # other ways a folder loads wrongly
    "ids with trailing spaces in test": (lambda d: retext(d, "test.csv", lines(
        lambda i, s: s if i == 0 else s.replace(",", " ,", 1))), ["differ only in leading/trailing spaces",
                                                                  "'te-00000 '"]),
    "quote merging train rows": (lambda d: retext(d, "train.csv", lines(
        lambda i, s: s.replace(",", ',"', 1) if i == 5 else close_quote_after_text(s) if i == 8 else s)),
                                 ["train.csv: the text of id tr-00004 holds what look like whole rows",
                                  "unbalanced quote"]),
    "quote merging train rows into too many fields": (lambda d: retext(d, "train.csv", lines(
        lambda i, s: s.replace(",", ',"', 1) if i == 5 else s.replace(",", '",', 1) if i == 8 else s)),
                                                      ["train.csv line 6 has 7 fields, its header 6: a quoted field "
                                                       "runs from line 6 to 9: an unbalanced quote?"]),
    "quote merging test rows": (lambda d: retext(d, "test.csv", lines(
        lambda i, s: s.replace(",", ',"', 1) if i == 5 else s + '"' if i == 8 else s)),
                                ["only in the sample", "an unbalanced quote there merges rows"]),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_folder(comp_dir, case):
    corrupt, parts = CASES[case]
    corrupt(comp_dir)
    msg = error(comp_dir)
    for part in parts:
        assert part in msg, msg


def test_id_col_must_be_the_samples_first_column(comp_dir):
    put(comp_dir, "sample_submission.csv", [[r[1], r[0], *r[2:]] for r in rows(comp_dir, "sample_submission.csv")])
    assert "data.id_col 'ID' must be the first column of sample_submission.csv" in error(comp_dir, id_col="ID")


def test_text_col_cannot_be_the_id(comp_dir):
    assert "data.text_col 'ID' is the id column" in error(comp_dir, text_col="ID")


def test_reserved_columns_exported():
    assert {"id", "fold", "_row"} <= RESERVED_COLUMNS


def test_boolean_labels_still_read(comp_dir):
    table = rows(comp_dir, "train.csv")
    as_bool = {"0": "False", "1": "True"}
    put(comp_dir, "train.csv", [table[0]] + [r[:2] + [as_bool[v] for v in r[2:]] for r in table[1:]])
    assert load(comp_dir).Y.sum() == sum(int(v) for r in table[1:] for v in r[2:])


ODD = ["1.50", "007", "nan", "NA", "null", "True", "  spaced  ", "#hashtag", "1e5", "NaN", "-0", "None", "1,5",
       'say "hi"', "FALSE"]


def test_all_number_like_texts_stay_text(comp_dir):
    """A text column whose every value looks like a number or boolean is still read as the exact strings."""
    texts = ["1.50", "007", "1e5", "-0", "12", "3.0"]
    table = rows(comp_dir, "test.csv")
    put(comp_dir, "test.csv", [table[0]] + [[r[0], texts[i % len(texts)]] for i, r in enumerate(table[1:])])
    comp = load(comp_dir)
    assert comp.test_texts == [texts[i % len(texts)] for i in range(len(table) - 1)]
    assert all(type(t) is str for t in comp.test_texts)


def test_odd_ids_and_texts_end_to_end(workdir, comp_dir):
    """Ids and texts that look like numbers, NA markers, booleans or carry spaces come through byte-exact, and the
    submission's ids are the sample's ids, byte for byte."""
    train, test, sample = (rows(comp_dir, f) for f in ("train.csv", "test.csv", "sample_submission.csv"))
    odd_ids = ["007", "1.0", "NaN", " 7 ", "null", "NA", "True", "1e5", "-0", "nan "]
    for i, ident in enumerate(odd_ids):
        train[1 + i][0] = ident
        test[1 + i][0] = sample[1 + i][0] = "t" + ident if ident.strip() == ident else ident + "t"
        train[20 + i][1] = train[20 + i][1] + " " + ODD[i]  # keep the label keywords, add an odd tail
        test[1 + i][1] = ODD[i]
    train[40][1] = ODD[10]
    for name, table in (("train.csv", train), ("test.csv", test), ("sample_submission.csv", sample)):
        put(comp_dir, name, table)
    comp = load(comp_dir)
    assert comp.train_ids == [r[0] for r in train[1:]] and comp.test_ids == [r[0] for r in test[1:]]
    assert comp.train_texts == [r[1] for r in train[1:]] and comp.test_texts == [r[1] for r in test[1:]]
    assert comp.sample[comp.id_col].tolist() == [r[0] for r in sample[1:]]

    from src.pipeline import run

    run(load_config(None, [f"data.data_dir={comp_dir}", "exp=odd", "folds.n_folds=2", "tfidf.min_df=1",
                           "output.plots=false"]))
    raw_sub = (workdir / "submissions/odd.csv").read_bytes().splitlines()
    raw_sample = (comp_dir / "sample_submission.csv").read_bytes().splitlines()
    assert [line.split(b",")[0] for line in raw_sub] == [line.split(b",")[0] for line in raw_sample]
    assert [r[0] for r in rows(workdir / "submissions", "odd.csv")] == [r[0] for r in sample]


@pytest.mark.parametrize("case", ["train ;", "trailing commas in train", "headerless sample", "label twice in train",
                                  "label 'fold'"])
def test_cli_malformed_folder_is_one_line(workdir, comp_dir, case, capsys):
    CASES[case][0](comp_dir)
    with pytest.raises(SystemExit) as e:
        cli_main(["run", f"data.data_dir={comp_dir}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not any((workdir / d).exists() for d in ("folds", "checkpoints", "submissions"))


# read_csv on any file of the kit


def test_read_csv_never_uses_a_column_as_index(tmp_path):
    (tmp_path / "x.csv").write_text("id,p\na,1\nb,2\n")
    df = read_csv(tmp_path / "x.csv", dtype=str)
    assert df.columns.tolist() == ["id", "p"] and df["id"].tolist() == ["a", "b"]
    (tmp_path / "x.csv").write_text("id,p\na,1,\nb,2,\n")
    with pytest.raises(UserError, match="x.csv line 2 has 3 fields, its header 2"):
        read_csv(tmp_path / "x.csv", dtype=str)


def test_read_csv_line_numbers_count_quoted_line_breaks(tmp_path):
    (tmp_path / "x.csv").write_text('id,t\n1,"two\nlines"\n\n2,ok,extra\n')
    with pytest.raises(UserError, match="x.csv line 5 has 3 fields"):
        read_csv(tmp_path / "x.csv")


# atomic writes


def temp_files(d):
    return sorted(p.name for p in pathlib.Path(d).iterdir() if p.name.endswith(".tmp"))


def test_atomic_path_keeps_its_temp_name(tmp_path):
    with atomic_path(tmp_path / "out.csv") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.csv.") and tmp.name.endswith(".tmp")
        tmp.write_text("x")
    assert (tmp_path / "out.csv").read_text() == "x" and temp_files(tmp_path) == []


def test_full_disk_is_a_user_error(tmp_path, monkeypatch):
    write_text(tmp_path / "m.json", "old")

    def full(self, *a, **k):
        open(self, "w").write("part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(UserError) as e:
        write_json(tmp_path / "m.json", {"a": 1})
    assert str(e.value).startswith(f"cannot write {tmp_path / 'm.json'}: {os.strerror(errno.ENOSPC)}")
    monkeypatch.undo()
    assert (tmp_path / "m.json").read_text() == "old" and temp_files(tmp_path) == []


def test_failed_rename_is_a_user_error(tmp_path, monkeypatch):
    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(UserError, match=f"cannot write .*x.txt: {os.strerror(errno.EROFS)}"):
        write_text(tmp_path / "x.txt", "data")
    assert temp_files(tmp_path) == [] and not (tmp_path / "x.txt").exists()


def test_unwritable_folder_is_a_user_error(tmp_path, monkeypatch):
    import tempfile

    def denied(*a, dir=None, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dir)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(UserError, match=f"cannot write .*x.txt: {os.strerror(errno.EACCES)}"):
        write_text(tmp_path / "x.txt", "data")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_user_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match=f"cannot write {ro / 'x.txt'}: {os.strerror(errno.EACCES)}"):
            write_text(ro / "x.txt", "data")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_parent_that_cannot_be_made_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"file is a file, where a folder is needed"):
        write_text(tmp_path / "file" / "sub" / "x.txt", "data")


def test_other_os_errors_in_the_block_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text((tmp_path / "nowhere").read_text())
    assert temp_files(tmp_path) == []


# read_json


@pytest.mark.parametrize("content", [b'{"steps": 12, "f1"', b"", b"\xff\xfe{}", b'{"a": 1}}'])
def test_bad_json_is_a_user_error(tmp_path, content):
    (tmp_path / "metrics.json").write_bytes(content)
    with pytest.raises(UserError) as e:
        read_json(tmp_path / "metrics.json")
    assert f"{tmp_path / 'metrics.json'} is not valid JSON (truncated or corrupted?)" in str(e.value)
    assert "\n" not in str(e.value)


def test_read_json_reads_valid_json(tmp_path):
    write_json(tmp_path / "d.json", {"steps": 3})
    assert read_json(tmp_path / "d.json") == {"steps": 3}
    with pytest.raises(UserError, match="missing file"):
        read_json(tmp_path / "none.json")


def test_a_quote_left_open_in_the_last_column_names_its_line(comp_dir):
    retext(comp_dir, "test.csv", lines(lambda i, s: s.replace(",", ',"', 1) if i == 6 else s))
    assert error(comp_dir) == ("test.csv: a quoted field opens on line 7 and never closes (an "
                               "unbalanced quote \"): lines 7-61 read as one row; close or remove the quote")


@pytest.mark.parametrize("name", ["a/b", "..", "a\\b"])
def test_a_data_name_with_folder_parts_is_refused(comp_dir, name):
    assert error(comp_dir, name=name).startswith(f"data.name={name!r} must be a plain name")
    assert load(comp_dir, name="x #y").name == "x #y"


@pytest.mark.parametrize("argv", [["frobnicate"], ["run", "--bogus"], ["run", "--config"], ["validate", "a.csv"],
                                  ["ensemble", "a", "b"], ["checkpoints", "select"]])
def test_every_command_line_mistake_ends_in_one_error_line(workdir, argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    assert "--help" in err[-1] or err[-1].startswith("error: unknown command 'frobnicate'")


def test_a_file_where_a_folder_is_needed_is_named(tmp_path):
    (tmp_path / "subs").write_text("x")
    for target in (tmp_path / "subs", tmp_path / "subs/a/b"):
        with pytest.raises(UserError, match=rf"^{tmp_path / 'subs'} is a file, where a folder is needed"):
            make_dir(target)
        with pytest.raises(UserError, match=rf"^{tmp_path / 'subs'} is a file, where a folder is needed"):
            write_text(target / "x.csv", "a")
    assert make_dir(tmp_path / "new/deeper").is_dir()


def test_a_permission_error_anywhere_is_one_line(capsys):
    from src.errors import cli

    @cli
    def main(argv):
        raise PermissionError(13, "Permission denied", "data/train.csv")

    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: permission denied: data/train.csv: fix its permissions, or point the "
                                       "setting elsewhere\n")
