"""Every bad-input case gives a one-line UserError and writes nothing."""

import pandas as pd
import pytest

from src.__main__ import main as cli_main
from src.config import DataConfig, load_config
from src.data import convert_goemotions, convert_semeval, load_competition
from src.errors import UserError


def load(d, **kw):
    return load_competition(DataConfig(data_dir=str(d), **kw))


def test_loads_and_infers_columns(comp_dir):
    comp = load(comp_dir)
    assert (comp.id_col, comp.text_col, comp.labels) == ("ID", "Tweet", ["anger", "joy", "fear", "trust"])
    assert comp.Y.shape == (200, 4) and comp.name == "data"


def test_id_and_text_lists_are_built_once(comp_dir):
    """Row-by-row indexing (`[comp.train_ids[i] for i in rows]`) must not rebuild the list per access: that was
    quadratic in rows (40 s of a 48k-row finalize)."""
    comp = load(comp_dir)
    for name in ("train_ids", "test_ids", "train_texts", "test_texts"):
        assert getattr(comp, name) is getattr(comp, name)
    assert comp.train_ids == comp.train["ID"].tolist() and comp.test_texts == comp.test["Tweet"].tolist()


def edit(d, name, fn):
    df = pd.read_csv(d / name, dtype=str, keep_default_na=False)
    fn(df).to_csv(d / name, index=False)


def setcell(d, name, col, row, value):
    edit(d, name, lambda df: df.assign(**{col: df[col].where(df.index != row, value)}))


CASES = {
    "missing file": (lambda d: (d / "test.csv").unlink(), "lacks test.csv"),
    "missing label column": (lambda d: edit(d, "train.csv", lambda df: df.drop(columns="joy")),
                             "lacks label columns"),
    "extra column": (lambda d: edit(d, "train.csv", lambda df: df.assign(calm="0")), "['calm']"),
    "non-binary label": (lambda d: setcell(d, "train.csv", "joy", 3, "2"),
                         "label 'joy' must be 0/1, got 2 for ids tr-00003"),
    "NaN label": (lambda d: setcell(d, "train.csv", "fear", 7, ""),
                  "label 'fear' must be 0/1, got NaN"),
    "empty text": (lambda d: setcell(d, "train.csv", "Tweet", 4, "  "),
                   "empty or missing text"),
    "NaN text in test": (lambda d: setcell(d, "test.csv", "Tweet", 1, ""),
                         "test.csv has empty or missing text"),
    "duplicate ids": (lambda d: setcell(d, "train.csv", "ID", 5, "tr-00006"),
                      "duplicate ids: tr-00006"),
    "test ids differ": (lambda d: edit(d, "sample_submission.csv", lambda df: df.iloc[1:]),
                        "test.csv ids differ from sample_submission.csv ids"),
    "non-UTF-8": (lambda d: (d / "train.csv").write_bytes((d / "train.csv").read_bytes().replace(b"joyy", b"j\xf6yy")),
                  "train.csv is not UTF-8"),
    "empty CSV": (lambda d: (d / "train.csv").write_text(""), "train.csv is empty"),
    "header only": (lambda d: (d / "test.csv").write_text("ID,Tweet\n"), "test.csv has a header but no rows"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(comp_dir, case):
    corrupt, message = CASES[case]
    corrupt(comp_dir)
    with pytest.raises(UserError) as e:
        load(comp_dir)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_configured_labels_must_match_sample(comp_dir):
    with pytest.raises(UserError, match="differ from sample_submission"):
        load(comp_dir, labels=["anger", "joy"])


@pytest.mark.parametrize("case", ["NaN label", "duplicate ids", "non-UTF-8"])
def test_cli_bad_input_writes_nothing(workdir, comp_dir, case, capsys):
    CASES[case][0](comp_dir)
    with pytest.raises(SystemExit) as e:
        cli_main(["run", f"data.data_dir={comp_dir}"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not any((workdir / d).exists() for d in ("folds", "checkpoints", "submissions"))


def test_convert_semeval(tmp_path):
    src = tmp_path / "orig"
    src.mkdir()
    head = "ID\tTweet\tanger\tjoy\n"
    (src / "2018-E-c-En-train.txt").write_text(head + '2017-En-1\t"quoted" start\t1\t0\n2017-En-2\tb, c\t0\t1\n')
    (src / "2018-E-c-En-dev.txt").write_text(head + "2018-En-9\tdev row\t1\t1\n")
    (src / "2018-E-c-En-test-texts.txt").write_text("ID\tTweet\n2018-En-5\tt1\n2018-En-6\tt2 \"x\n")
    convert_semeval(src, tmp_path / "out")
    comp = load(tmp_path / "out")
    assert comp.train_ids == ["2017-En-1", "2017-En-2", "2018-En-9"]
    assert comp.train_texts[0] == '"quoted" start' and comp.test_texts[1] == 't2 "x'
    assert comp.Y.tolist() == [[1, 0], [0, 1], [1, 1]] and comp.labels == ["anger", "joy"]


def test_convert_goemotions(tmp_path, capsys):
    src = tmp_path / "orig"
    src.mkdir()
    (src / "emotions.txt").write_text("admiration\namusement\nneutral")
    (src / "train.tsv").write_text('"Quoted, ""inner"" text"\t0,2\tid1\nplain\t1\tid2\n')
    (src / "dev.tsv").write_text("dev text\t2\tid3\n")
    (src / "test_texts.tsv").write_text("test one\tid4\n")
    convert_goemotions(src, tmp_path / "out")
    comp = load(tmp_path / "out")
    assert comp.train_texts[0] == 'Quoted, "inner" text'
    assert comp.Y.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]] and comp.test_ids == ["id4"]
    assert "train.csv 3 rows (= 2 train + 1 dev: the dev split is training data here" in capsys.readouterr().out


def test_config_overrides_and_unknown_keys(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model_type: tfidf\ntfidf:\n  C: 2\nfolds:\n  run: [1, 2]\n")
    cfg = load_config(p, ["tfidf.word_ngram=[1,3]", "thresholds.min_one=true", "folds.run=0,3"])
    assert cfg.exp == "x" and cfg.tfidf.C == 2.0 and cfg.tfidf.word_ngram == [1, 3]
    assert cfg.thresholds.min_one is True and cfg.folds.run == [0, 3]
    for bad in (["tfidf.CC=1"], ["nosection.a=1"], ["folds.n_folds=ten"], ["C"]):
        with pytest.raises(UserError):
            load_config(p, bad)
    p.write_text("tfidf:\n  bogus: 1\n")
    with pytest.raises(UserError, match="unknown config key 'tfidf.bogus'"):
        load_config(p)


def test_yaml_booleans_in_string_fields(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("train:\n  precision: no\n")
    assert load_config(p).train.precision == "no"
    assert load_config(p, ["train.precision=no"]).train.precision == "no"
