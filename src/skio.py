"""scikit-learn objects on disk without pickle: `skops.io`, loading only the types the kit itself saves.

A fold's fitted TF-IDF pipeline or probe travels in run folders and packs, so loading it must not run code: skops
rebuilds objects from their state without unpickling, and any type outside skops' defaults and `TRUSTED` (what the
kit's models hold beyond them) is refused with one line naming it.
"""

from __future__ import annotations

from pathlib import Path

from src.errors import UserError
from src.fileio import atomic_path

# the types of the kit's fitted models that skops does not trust by default (sklearn 1.4 - 1.9)
TRUSTED = ("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
           "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
           "sklearn.neural_network._stochastic_optimizers.SGDOptimizer")


def save(obj, path: Path) -> Path:
    """Write `obj` (a fitted model, or a dict of them) to `path` (.skops), atomically."""
    import skops.io as sio

    with atomic_path(path) as tmp:
        sio.dump(obj, tmp, compression=__import__("zipfile").ZIP_DEFLATED, compresslevel=1)
    return path


def load(path: Path):
    """The object saved at `path`, refused (a UserError naming the types) if it holds other types than the kit's."""
    import skops.io as sio

    try:
        unknown = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED]
        if unknown:
            raise UserError(f"{path} holds types this kit never saves ({', '.join(unknown[:4])}): not loaded (a "
                            "file from elsewhere?); fit the run again")
        return sio.load(path, trusted=[t for t in sio.get_untrusted_types(file=path)])
    except UserError:
        raise
    except Exception as e:  # a truncated or garbage file: zip and format errors
        raise UserError(f"{path} is damaged ({str(e).strip().splitlines()[0][:160]}): fit the run again") from None
