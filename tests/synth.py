"""Small synthetic competition folders for tests (the generator lives in src/smoke.py, shared with smoke runs)."""

from src.smoke import FILLER, LABELS, make_competition, make_frame

__all__ = ["FILLER", "LABELS", "make_competition", "make_frame"]
