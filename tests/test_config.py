"""Config values from the command line: strings taken literally, every number range-checked, list shapes checked,
an explicit empty fold selection refused on the command line, and `exp` a plain name (issue 13)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from src.config import LIST_RULES, RANGES, Config, check_cli_overrides, load_config, load_saved_sections
from src.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(overrides: list[str], *parts: str) -> str:
    """The UserError of load_config(None, overrides): one line holding every one of `parts`."""
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    message = str(e.value)
    assert "\n" not in message and all(p in message for p in parts), message
    return message


@pytest.mark.parametrize("value", ["/d/comp #v2", "/d/my comp", "a: b", "[x", "{x", "'quoted'", '"dq"', "yes", "no",
                                   "null", "~", "1.10", "0x10", " spaced ", "", "x=y", "&anchor", "*alias", "!tag x",
                                   "- item", "% pct", "@at", "`tick`", "a, b"])
@pytest.mark.parametrize("key", ["data.data_dir", "data.name", "model.name_or_path", "probe.cache_dir",
                                 "output.submissions_dir", "llm.system"])
def test_string_overrides_are_taken_literally(key, value):
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [f"{key}={value}"]), section), name) == value


def test_literal_strings_keep_meaningful_spaces_and_words():
    cfg = load_config(None, ["llm.separator=; ", "train.precision=no", "tfidf.class_weight=none", "llm.none_answer="])
    assert (cfg.llm.separator, cfg.train.precision, cfg.tfidf.class_weight, cfg.llm.none_answer) == ("; ", "no",
                                                                                                     "none", "")


@pytest.mark.parametrize("value, expected", [
    ("[yes, null, 'a, b', 1.0, ~]", ["yes", "null", "a, b", "1.0", "~"]),
    ('[" Yes", yes]', [" Yes", "yes"]),
    ("[a, b]", ["a", "b"]),
    ("a, b,,c", ["a", "b", "c"]),
    ("yes", ["yes"]),
    ("", []),
    ("[]", []),
])
def test_string_list_overrides_hold_literal_strings(value, expected):
    assert load_config(None, [f"llm.yes_words={value}"]).llm.yes_words == expected


@pytest.mark.parametrize("value", ["[x", "[[a], b]", "[{a: 1}]", "[*alias]"])
def test_bad_string_lists_are_one_line_errors(value):
    one_line_error([f"data.labels={value}"], "data.labels", value)


def test_other_fields_still_parse_yaml():
    cfg = load_config(None, ["folds.run=[0, 1, 2]", "tfidf.C=3", "tfidf.word_ngram=[1,3]", "output.plots=false",
                             "extra.opts={a: 1, b: [x]}", "tfidf.grid_word_ngram=[[1, 1], [1, 3]]"])
    assert cfg.folds.run == [0, 1, 2] and cfg.tfidf.C == 3.0 and cfg.tfidf.word_ngram == [1, 3]
    assert cfg.output.plots is False and cfg.extra == {"opts": {"a": 1, "b": ["x"]}}
    assert cfg.tfidf.grid_word_ngram == [[1, 1], [1, 3]]
    assert load_config(None, ["folds.run=[0,3]"]).folds.run == load_config(None, ["folds.run=0,3"]).folds.run == [0, 3]
    assert load_config(None, ["folds.run=[]"]).folds.run == []  # the Python API (notebooks): every fold


@pytest.mark.parametrize("item", ["tfidf.C=[1,", "folds.run=[0,", "extra.x={a", "train.lr=[1e-3", "folds.run=,"])
def test_yaml_syntax_errors_name_the_key_and_value(item):
    key, value = item.split("=", 1)
    one_line_error([item], key, value)


@pytest.mark.parametrize("item, rule", [
    ("train.lr=1e30", "(0, 1]"), ("train.lr=0", "(0, 1]"), ("train.lr=-1e-3", "(0, 1]"),
    ("tfidf.n_jobs=0", ">= 1 or -1"), ("tfidf.n_jobs=-2", ">= 1 or -1"), ("probe.n_jobs=0", ">= 1 or -1"),
    ("tfidf.min_df=0", ">= 1"), ("tfidf.C=0", "> 0"), ("tfidf.max_features=0", ">= 1"), ("tfidf.grid_cv=1", ">= 2"),
    ("folds.n_folds=1", ">= 2"), ("folds.seed=-1", "[0,"), ("train.seed=-3", "[0,"),
    ("thresholds.fixed=1.5", "[0, 1]"), ("thresholds.fixed=-0.1", "[0, 1]"), ("select.tolerance=-0.1", "[0, 1]"),
    ("lora.r=0", ">= 1"), ("lora.alpha=0", ">= 1"), ("lora.dropout=1", "[0, 1)"),
    ("train.batch_size=0", ">= 1"), ("train.eval_batch_size=0", ">= 1"), ("train.grad_accum=0", ">= 1"),
    ("train.epochs=-1", "in [0, 10000]"), ("train.max_steps=-5", "in [0, 100000000]"), ("train.head_lr=2", "[0, 1]"),
    ("train.weight_decay=-0.01", "[0, 1]"), ("train.warmup_ratio=1.5", "[0, 1]"), ("train.layer_lr_decay=0", "(0, 1]"),
    ("train.max_grad_norm=-1", ">= 0"), ("train.focal_gamma=-1", ">= 0"), ("train.asl_clip=1", "[0, 1)"),
    ("train.label_smoothing=1", "[0, 1)"), ("train.ema=1", "[0, 1)"), ("train.pad_to_multiple=-8", ">= 0"),
    ("train.log_every=0", ">= 1"), ("train.eval_every=-1", ">= 0"), ("train.keep_top_k=-1", ">= 0"),
    ("model.max_length=0", ">= 1"), ("model.last_n_layers=-1", ">= 0"), ("model.multi_sample_dropout=-1", ">= 0"),
    ("llm.max_test_rows=-2", ">= 0 or -1"), ("llm.batch_size=0", ">= 1"), ("llm.max_new_tokens=0", ">= 1"),
    ("llm.n_shots=-1", ">= 0"), ("probe.C=-1", "> 0"), ("probe.hidden=0", ">= 1"), ("probe.max_iter=0", ">= 1"),
])
def test_numbers_out_of_range_are_one_line_errors(item, rule):
    key, value = item.split("=")
    one_line_error([item], key, value if "e" not in value else "", rule)


@pytest.mark.parametrize("value", ["nan", ".nan", ".inf", "-.inf", "inf", "1e400"])
def test_non_finite_numbers_are_refused(value):
    one_line_error([f"train.lr={value}"], "train.lr", "finite")
    one_line_error([f"tfidf.grid_C=[1, {value}]"], "tfidf.grid_C[1]")


@pytest.mark.parametrize("item", ["train.max_steps=true", "train.lr=yes", "folds.run=[true]"])
def test_booleans_are_not_numbers(item):
    one_line_error([item], item.split("=")[0])


def test_range_limits_themselves_are_allowed():
    cfg = load_config(None, ["train.lr=1", "tfidf.n_jobs=-1", "probe.n_jobs=-1", "llm.max_test_rows=-1",
                             "thresholds.fixed=0", "thresholds.fixed=1", "train.head_lr=0", "folds.n_folds=2",
                             "train.max_grad_norm=0", "train.epochs=0", "lora.dropout=0", "probe.layer=-3"])
    assert cfg.train.lr == 1.0 and cfg.tfidf.n_jobs == -1 and cfg.probe.layer == -3


def numeric_fields(cls: type = Config, prefix: str = "") -> dict[str, typing.Any]:
    """key -> type of every int/float (or list of them) field in the config dataclasses."""
    found = {}
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            found.update(numeric_fields(tp, f"{f.name}."))
        elif tp in (int, float) or (typing.get_origin(tp) is list and str(tp) != "list[str]"):
            found[prefix + f.name] = tp
    return found


def test_every_numeric_field_has_a_rule():
    fields = numeric_fields()
    scalars = {k for k, tp in fields.items() if tp in (int, float)}
    assert scalars == set(RANGES), "add the new field's allowed range to RANGES in src/config.py"
    assert set(fields) - scalars == set(LIST_RULES)


@pytest.mark.parametrize("item, parts", [
    ("tfidf.word_ngram=[1]", ["tfidf.word_ngram", "[1]", "min <= max"]),
    ("tfidf.word_ngram=[2, 1]", ["tfidf.word_ngram", "min <= max"]),
    ("tfidf.word_ngram=[0, 1]", ["tfidf.word_ngram", "1 <= min"]),
    ("tfidf.char_ngram=[1, 2, 3]", ["tfidf.char_ngram"]),
    ("tfidf.char_ngram=", ["tfidf.char_ngram"]),
    ("tfidf.grid_word_ngram=[[1]]", ["tfidf.grid_word_ngram[0]"]),
    ("tfidf.grid_word_ngram=[[1, 2], [3, 2]]", ["tfidf.grid_word_ngram[1]"]),
    ("tfidf.grid_word_ngram=[]", ["tfidf.grid_word_ngram", "empty"]),
    ("tfidf.grid_C=[]", ["tfidf.grid_C", "empty"]),
    ("tfidf.grid_C=[0.3, -1]", ["tfidf.grid_C[1]", "> 0"]),
    ("folds.run=[10]", ["folds.run", "0..9", "[10]"]),
    ("folds.run=[-1]", ["folds.run", "0..9"]),
    ("folds.run=[0, 0]", ["folds.run", "more than once"]),
])
def test_list_shapes_are_checked(item, parts):
    one_line_error([item], *parts)


def test_fold_selection_is_checked_after_every_override():
    assert load_config(None, ["folds.run=[4]", "folds.n_folds=5"]).folds.run == [4]
    one_line_error(["folds.n_folds=5", "folds.run=[5]"], "folds.run", "0..4")
    one_line_error(["folds.run=[4]", "folds.n_folds=4"], "folds.run", "0..3")


@pytest.mark.parametrize("item", ["folds.run=", "folds.run=[]", "folds.run=[ ]", " folds.run = []"])
def test_an_explicit_empty_fold_selection_is_a_command_line_error(item):
    with pytest.raises(UserError, match="names no fold"):
        check_cli_overrides([item])
    check_cli_overrides(["folds.run=[0]", "data.data_dir=folds.run=", "exp=x"])  # fine


@pytest.mark.parametrize("command", ["run", "finalize", "folds"])
@pytest.mark.parametrize("item", ["folds.run=", "folds.run=[]"])
def test_cli_refuses_an_explicit_empty_fold_selection(tmp_path, command, item):
    out = subprocess.run([sys.executable, "-m", "src", command, item, f"output.checkpoints_dir={tmp_path}/c",
                          f"folds.dir={tmp_path}/f", "data.data_dir=nowhere"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: folds.run") and "names no fold" in out.stderr
    assert len(out.stderr.splitlines()) == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("exp", ["a/b", "a\\b", ".", "..", ".hidden", "", "a b", "x" * 201, "a\nb", "../x", "é", "a:b",
                                 "-x", "--folds", "a=b", "tfidf-C=0.5"])  # read as options or settings by commands
def test_exp_must_be_a_plain_name(tmp_path, exp):
    one_line_error([f"exp={exp}"], "exp", "plain name")
    saved = tmp_path / "config.yaml"
    saved.write_text("select:\n  rule: balanced\n")
    with pytest.raises(UserError, match="plain name"):
        load_saved_sections(saved, ["select"], [f"exp={exp}"])


@pytest.mark.parametrize("exp", ["tfidf-cnb", "s42", "qwen2.5-1.5b", "a+b@d,e", "_x", "x-", "x" * 200])
def test_plain_exp_names_pass(exp):
    assert load_config(None, [f"exp={exp}"]).exp == exp


def test_exp_from_a_config_file_name_is_checked_too(tmp_path):
    (tmp_path / ".hidden.yaml").write_text("model_type: tfidf\n")
    with pytest.raises(UserError, match="plain name"):
        load_config(tmp_path / ".hidden.yaml")
    assert load_config(tmp_path / ".hidden.yaml", ["exp=ok"]).exp == "ok"


def test_saved_sections_are_range_checked(tmp_path):
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump({"exp": "r", "select": {"rule": "balanced", "tolerance": 0.01},
                                     "thresholds": {"fixed": 2.0}}))
    cfg = load_saved_sections(saved, ["select"])  # no exp asked for: none needed
    assert cfg.select.tolerance == 0.01 and cfg.exp == ""
    with pytest.raises(UserError, match="select.tolerance"):
        load_saved_sections(saved, ["select"], ["select.tolerance=-1"])
    with pytest.raises(UserError, match="thresholds.fixed"):
        load_saved_sections(saved, ["thresholds"])


def test_config_files_are_checked_too(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("tfidf:\n  word_ngram: [1]\n")
    with pytest.raises(UserError, match="tfidf.word_ngram"):
        load_config(p)
    p.write_text("data:\n  data_dir: [a, b]\n")
    with pytest.raises(UserError, match="data.data_dir"):
        load_config(p)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_the_checks(path):
    assert load_config(path).exp == path.stem


def test_goemotions_configs_share_one_fold_file_and_their_data():
    """The GoEmotions blend members must share one fold file (the blend refuses members on other folds)."""
    from src.data import fold_path

    paths = sorted((ROOT / "configs/goemotions").glob("*.yaml"))
    cfgs = [load_config(p) for p in paths]
    assert {p.stem for p in paths} == {"tfidf", "probe_minilm", "minilm-l6"}
    assert {c.exp for c in cfgs} == {"goemotions-tfidf", "goemotions-probe-minilm", "goemotions-minilm-l6"}
    assert {c.data.data_dir for c in cfgs} == {"data/goemotions"}
    assert {fold_path(c).name for c in cfgs} == {"goemotions_k5_s42.csv"}
    assert all(c.thresholds.min_one for c in cfgs)


def test_a_config_file_that_is_not_utf8_or_not_yaml_is_one_line_naming_it(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"exp: caf\xe9\n")
    with pytest.raises(UserError, match=rf"^config file {p} is not UTF-8 text \(byte 0xe9 at offset 8"):
        load_config(p)
    with pytest.raises(UserError, match=rf"^the run config {p} is not UTF-8 text"):
        load_saved_sections(p, ["data"])
    p.write_text("model_type: tfidf\ntfidf:\n  C: [1,\n")
    with pytest.raises(UserError, match=rf"^config file {p} is not valid YAML at line 4, column 1: "):
        load_config(p)
