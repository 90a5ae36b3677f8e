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
