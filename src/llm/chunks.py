"""Rows scored a chunk at a time, each chunk saved in the run folder, so a stopped LLM scoring run resumes.

A chunk's files are named by a hash of what its scores depend on (the scoring settings, labels, few-shot examples
and the chunk's texts), so a rerun with other settings or data scores again; the probabilities go to .npz (read
without pickle), the per-row records to .jsonl. The run removes the folder once its outputs are written.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from src.data import digest
from src.errors import UserError
from src.fileio import atomic_path
from src.fingerprint import fingerprint
from src.llm.outputs import read_jsonl, write_jsonl
from src.progress import tqdm

CHUNK = 512  # rows a chunk: at most this many are scored again after a stop
Scores = tuple[dict[str, np.ndarray], list[dict]]


def _load(store: Path, name: str, n: int) -> Scores | None:
    """A saved chunk of n rows, or None (absent, or damaged: then scored again)."""
    npz, jsonl = store / f"{name}.npz", store / f"{name}.jsonl"
    if not (npz.is_file() and jsonl.is_file()):
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            probs = {m: z[m] for m in z.files}
        records = read_jsonl(jsonl)
    except (OSError, ValueError, UserError, zipfile.BadZipFile):
        return None
    if len(records) != n or any(p.shape[0] != n or not np.isfinite(p).all() for p in probs.values()):
        return None
    return probs, records


def _save(store: Path, name: str, probs: dict[str, np.ndarray], records: list[dict]) -> None:
    write_jsonl(store / f"{name}.jsonl", records)
    with atomic_path(store / f"{name}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **probs)


def scored_in_chunks(score: Callable[[list[str]], Scores], texts: list[str], key: dict, store: Path | None,
                     desc: str) -> Scores:
    """`score(texts)` a CHUNK of texts at a time, with one progress bar over the rows; with a `store` folder each
    chunk is saved there under a hash of `key` and its texts, and a chunk already saved is read, not scored (the bar
    starts at the rows read, so its rate and ETA count only the rows scored now)."""
    if not texts:
        return score(texts)
    parts = [texts[start: start + CHUNK] for start in range(0, len(texts), CHUNK)]
    names = [fingerprint({"key": key, "texts": digest(part)}) for part in parts]
    saved = [_load(store, name, len(part)) if store is not None else None for part, name in zip(parts, names)]
    reused = sum(len(part) for part, got in zip(parts, saved) if got is not None)
    if reused:
        print(f"{desc}: {reused} of {len(texts)} rows read from {store} (scored before the run stopped); "
              f"scoring the other {len(texts) - reused}")
    probs: dict[str, list[np.ndarray]] = {}
    records: list[dict] = []
    with tqdm(total=len(texts), initial=reused, desc=desc, unit="row") as bar:
        for part, name, got in zip(parts, names, saved):
            if got is None:
                got = score(part)
                if store is not None:
                    _save(store, name, *got)
                bar.update(len(part))
            for m, p in got[0].items():
                probs.setdefault(m, []).append(p)
            records += got[1]
    return {m: np.concatenate(ps) for m, ps in probs.items()}, records
