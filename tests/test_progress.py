"""Progress bars fitted to the output: a log or pipe gets rare refreshes and no transient inner bars."""

import types

from src.progress import tqdm


def test_bars_in_a_log_refresh_rarely_and_inner_bars_stay_silent(monkeypatch, capsys):
    monkeypatch.delenv("PROGRESS_INTERVAL", raising=False)
    outer, inner = tqdm(range(3), desc="folds"), tqdm(range(3), desc="batches", leave=False)
    assert outer.mininterval == 30 and not outer.disable and inner.disable
    assert outer.maxinterval >= 30  # tqdm's monitor would otherwise refresh a log every 10 s
    outer.close()
    inner.close()
    monkeypatch.setenv("PROGRESS_INTERVAL", "1")  # train.sh on a terminal
    bar = tqdm(total=2)
    assert bar.mininterval == 1
    bar.close()
    assert "\x1b[A" not in capsys.readouterr().err


def test_notebooks_without_ipywidgets_get_no_iprogress_warning():
    """tqdm.auto warns "IProgress not found" on import in a notebook without ipywidgets; the notebooks' first import
    (src.notebook, through src.progress) hides that warning, whatever imports tqdm.auto later."""
    import importlib
    import subprocess
    import sys
    import warnings

    from tqdm import TqdmWarning

    import src.progress

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        importlib.reload(src.progress)
        warnings.warn("IProgress not found. Please update jupyter and ipywidgets.", TqdmWarning, stacklevel=1)
        warnings.warn("another tqdm warning", TqdmWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another tqdm warning"]
    code = "import warnings, src.notebook; print(any(f[1] and 'IProgress' in f[1].pattern for f in warnings.filters))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def test_a_training_bar_in_a_log_is_not_refreshed_by_each_loss_line(monkeypatch, capsys, tmp_path):
    """The loss, LR and F1 shown beside the bar wait for its next refresh (at most every 30 s in a log): before, each
    log line (every 10 steps) and evaluation wrote the whole bar again."""
    import torch

    from src.train import Meter

    monkeypatch.delenv("PROGRESS_INTERVAL", raising=False)
    acc = types.SimpleNamespace(device="cpu", is_main_process=True, log=lambda *a, **k: None)
    meter = Meter(types.SimpleNamespace(acc=acc, total=100, k=0, dir=tmp_path), step=0)
    capsys.readouterr()
    for step in range(1, 51):
        meter.add(torch.tensor(0.5), rows=32)
        if step % 10 == 0:
            meter.log(step, lr=1e-3)
            meter.show(f1="0.5000")
    meter.bar.close()
    assert capsys.readouterr().err.count("fold 0") <= 2  # the bar at its close (and at most one refresh)
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 5  # the loss lines still go to the history
