"""Progress bars fitted to the output: a log or pipe gets rare refreshes and no transient inner bars."""

from src.progress import tqdm


def test_bars_in_a_log_refresh_rarely_and_inner_bars_stay_silent(monkeypatch, capsys):
    monkeypatch.delenv("PROGRESS_INTERVAL", raising=False)
    outer, inner = tqdm(range(3), desc="folds"), tqdm(range(3), desc="batches", leave=False)
    assert outer.mininterval == 30 and not outer.disable and inner.disable
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
