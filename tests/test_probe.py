"""model_type probe: cached frozen features (hit on rerun, miss on a changed layer) and the per-fold probe."""

import json

import numpy as np
import pandas as pd
import pytest
from synth import make_frame
from tiny_lm import save_decoder, save_encoder, single_threaded  # noqa: F401 (autouse fixture)

from src.config import load_config
from src.llm import analysis
from src.llm.features import features
from src.pipeline import run


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return save_encoder(tmp_path_factory.mktemp("enc"), make_frame(200)["Tweet"].tolist())


def test_feature_cache_hits_and_misses(tmp_path, encoder):
    cfg = load_config(None, [f"model.name_or_path={encoder}", f"probe.cache_dir={tmp_path / 'cache'}",
                             "model.max_length=16"])
    texts = {"train": make_frame(30)["Tweet"].tolist(), "test": ["the joyy day", "a fear"]}
    first, hits = features(cfg.model, cfg.probe, texts)
    assert hits == {"train": False, "test": False} and first["train"].shape == (30, 32)
    again, hits = features(cfg.model, cfg.probe, texts)
    assert hits == {"train": True, "test": True}
    np.testing.assert_array_equal(again["train"], first["train"])
    cfg.probe.layer = 1
    other, hits = features(cfg.model, cfg.probe, texts)
    assert hits == {"train": False, "test": False} and not np.allclose(other["train"], first["train"])
    cfg.probe.layer, cfg.probe.pooling = -1, "cls"
    assert not any(features(cfg.model, cfg.probe, texts)[1].values())
    cfg.probe.pooling = "mean"
    assert not features(cfg.model, cfg.probe, {"train": texts["train"][:-1]})[1]["train"]  # texts changed
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 7


@pytest.mark.parametrize("damage", ["truncated", "nan", "rows"])
def test_a_damaged_feature_cache_is_recomputed(tmp_path, encoder, damage, capsys):
    cfg = load_config(None, [f"model.name_or_path={encoder}", f"probe.cache_dir={tmp_path}", "model.max_length=16"])
    texts = {"train": make_frame(12)["Tweet"].tolist()}
    first, _ = features(cfg.model, cfg.probe, texts)
    (cache,) = tmp_path.glob("*.npy")
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:100])
    else:
        np.save(cache, np.full_like(first["train"], np.nan) if damage == "nan" else first["train"][:5])
    capsys.readouterr()
    again, hits = features(cfg.model, cfg.probe, texts)
    assert hits == {"train": False} and f"note: the cached {cache} is damaged" in capsys.readouterr().out
    np.testing.assert_allclose(again["train"], first["train"], rtol=1e-5)
    assert features(cfg.model, cfg.probe, texts)[1] == {"train": True}  # rewritten whole


def test_decoder_last_token_features(tmp_path):
    decoder = save_decoder(tmp_path / "lm", make_frame(100)["Tweet"].tolist())
    cfg = load_config(None, [f"model.name_or_path={decoder}", f"probe.cache_dir={tmp_path / 'cache'}",
                             "probe.pooling=last", "probe.layer=1", "probe.batch_size=4"])
    texts = make_frame(9)["Tweet"].tolist()
    batched = features(cfg.model, cfg.probe, {"train": texts})[0]["train"]
    cfg.probe.batch_size = 1  # no padding at all: the same last-token states
    cfg.probe.cache_dir = str(tmp_path / "cache1")
    np.testing.assert_allclose(features(cfg.model, cfg.probe, {"train": texts})[0]["train"], batched, atol=1e-5)


def test_probe_run_end_to_end(workdir, comp_dir, encoder):
    cfg = load_config(None, [f"data.data_dir={comp_dir}", "exp=pr", "model_type=probe", "folds.n_folds=5",
                             f"model.name_or_path={encoder}", "model.max_length=32", "probe.n_jobs=1"])
    result = run(cfg)
    assert result["complete"] and result["oof_rows"] == 200 and (workdir / "submissions/pr.csv").is_file()
    assert result["oof"]["macro_f1"] > 0.5  # keyword labels stay linearly readable from random-encoder states
    assert len(pd.read_csv(workdir / "checkpoints/pr/test.csv")) == 60
    report = json.loads((workdir / "checkpoints/pr/analysis.json").read_text())
    assert set(report["methods"]) == {"probe"} and 0 <= report["methods"]["probe"]["ece"] <= 1
    mlp = run(load_config(None, [f"data.data_dir={comp_dir}", "exp=pm", "model_type=probe", "folds.n_folds=5",
                                 f"model.name_or_path={encoder}", "model.max_length=32", "probe.classifier=mlp",
                                 "probe.max_iter=200", "probe.n_jobs=1", "folds.run=[0]",
                                 "output.plots=false"]))
    assert mlp["folds"] == [0] and mlp["oof_rows"] == 40
    analysis.main(["compare", "--runs", "pr,pm", f"data.data_dir={comp_dir}", "folds.n_folds=5"])
    table = pd.read_csv(workdir / "checkpoints/compare/compare.csv")  # both runs on the rows they share
    assert list(table["method"]) == ["pr", "pm"] and (table["rows"] == 40).all()
    assert (workdir / "checkpoints/compare/methods_f1.png").is_file()
