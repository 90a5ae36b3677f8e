"""Run folders and packs travel between people (Kaggle Datasets, shared Drives, a teammate's pod): nothing read from
a run folder, pack or model folder executes code or switches on code execution. (A crafted resume.pt:
tests/test_train_faults.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_pack import read_only, tiny_run
from test_transformer import make_tiny

from src.config import load_config, load_run_config
from src.errors import UserError
from src.models import transformer as tm
from src.pack import pack, predict_packed

pytestmark = pytest.mark.usefixtures("one_thread")
LABELS = ["a", "b"]


def evil_model(root: Path, marker: Path, model_type: str) -> Path:
    """A tiny BERT folder whose config.json names its own code (`auto_map`); importing that code creates `marker`."""
    folder = root / f"evil-{model_type}"
    shutil.copytree(make_tiny("bert", root / "tiny"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                   "AutoModelForSequenceClassification": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return folder


@pytest.mark.parametrize("model_type", ["bert", "evil"])
def test_a_model_folder_s_own_code_never_runs_unless_asked_for(tmp_path, capsys, model_type):
    marker = tmp_path / "ran"
    folder = evil_model(tmp_path, marker, model_type)
    cfg = load_config(None, ["model_type=transformer", f"model.name_or_path={folder}"])
    if model_type == "bert":  # a type transformers knows: loaded with its own classes, the files named, not run
        model, _ = tm.build_model(cfg, LABELS)
        assert type(model).__name__ == "BertForSequenceClassification"
    else:
        with pytest.raises(UserError, match=r"needs its own code to load \(.*configuration_evil.py.*modeling_evil.py.*"
                                            r"runs only with model.trust_remote_code=true given on the command line"):
            tm.build_model(cfg, LABELS)
    out = capsys.readouterr().out
    assert f"note: {folder} names remote code" in out and "not run" in out
    assert not marker.exists()


def test_a_run_folder_s_config_never_switches_remote_code_on(workdir, comp_dir, tiny_root):
    """`predict --exp` and `finalize --exp` read the run's config.yaml: its `trust_remote_code: true` is ignored;
    only this command line's override counts."""
    tiny_run(comp_dir, tiny_root, "tr")
    saved = workdir / "checkpoints/tr/config.yaml"
    tree = yaml.safe_load(saved.read_text())
    tree["model"]["trust_remote_code"] = True  # as a teammate's (or an attacker's) run folder could say
    saved.write_text(yaml.safe_dump(tree))
    assert load_run_config("tr").model.trust_remote_code is False
    assert load_run_config("tr", ["model.trust_remote_code=true"]).model.trust_remote_code is True


def test_a_pack_s_config_never_switches_remote_code_on(workdir, comp_dir, tiny_root, tmp_path, monkeypatch):
    tiny_run(comp_dir, tiny_root, "tr")
    pack(["tr"], tmp_path / "pack")
    saved = tmp_path / "pack/checkpoints/tr/config.yaml"
    tree = yaml.safe_load(saved.read_text())
    tree["model"]["trust_remote_code"] = True
    saved.write_text(yaml.safe_dump(tree))
    read_only(tmp_path / "pack")
    seen = []
    real = tm.build_model
    monkeypatch.setattr(tm, "build_model", lambda cfg, *a, **k: seen.append(cfg.model.trust_remote_code)
                        or real(cfg, *a, **k))
    predict_packed(tmp_path / "pack", "tr", comp_dir, tmp_path / "w")
    assert seen and not any(seen)
