"""Progress bars for every long step, fitted to where the output goes.

    from src.progress import tqdm

A notebook with ipywidgets gets widget bars; a terminal gets a live bar; a notebook without widgets, a log file or
a pipe gets a refresh at most every 30 s (`PROGRESS_INTERVAL` seconds), not a stream of carriage-return updates,
and no transient inner bars (`leave=False`), whose cursor moves would litter a log.
"""

from __future__ import annotations

import sys
import warnings

from tqdm import TqdmWarning
from tqdm import tqdm as _text_bar

from src.errors import env_seconds

# In a notebook without ipywidgets, tqdm.auto (the Hugging Face libraries' bars) warns "IProgress not found" and
# falls back to text bars, which is what this module chooses there too: the fallback stays, the warning goes.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)


def _notebook_widgets() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def tqdm(*args, **kwargs):
    """tqdm with the bar kind and refresh interval chosen for the output (see the module docstring)."""
    if _notebook_widgets():
        from tqdm.notebook import tqdm as widget_bar

        return widget_bar(*args, **kwargs)
    interactive = sys.stderr.isatty() and "ipykernel" not in sys.modules
    kwargs.setdefault("mininterval", env_seconds("PROGRESS_INTERVAL", 0.1 if interactive else 30))
    # tqdm's monitor thread forces a refresh of a bar silent for maxinterval (10 s): never sooner than mininterval
    kwargs.setdefault("maxinterval", max(10.0, kwargs["mininterval"]))
    if not interactive and kwargs.get("leave") is False:  # a transient inner bar: cursor moves in a log, no use
        kwargs["disable"] = True
    return _text_bar(*args, **kwargs)
