"""Fold fingerprints: what a trained fold depends on (settings and data digests), stored in its done.json and
resume state, so a finished or half-trained fold is reused only under the same one, and a mismatch names what
changed ("settings changed (train.lr 2e-05 -> 3e-05)", "data changed (train texts)")."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from src.config import Config, to_dict
from src.data import Competition, digest
from src.errors import UserError
from src.fileio import read_json

# What does not change the trained model: bookkeeping, and speed or memory knobs (gradient checkpointing recomputes
# the same activations, its dropout included), so a fold may resume with checkpointing on when memory runs short
NOT_IN_FINGERPRINT = {"train": ("report_to", "log_every", "keep_top_k", "keep_metric", "eval_batch_size", "compile",
                                "pad_to_multiple", "resume_state", "checkpoint_dtype"),
                      "model": ("gradient_checkpointing",)}


def fingerprint_parts(cfg: Config, comp: Competition, held_out_ids, sections=("model", "lora", "train")) -> dict:
    """What a fold's trained model depends on: the config `sections` (minus logging/bookkeeping fields) and, under
    "data", the label names and digests of train.csv's ids, texts and label values and of the fold's held-out ids
    (the fold assignment). Stored in done.json / resume.pt, so a mismatch can name what changed."""
    tree = to_dict(cfg)
    parts = {s: {key: v for key, v in tree[s].items() if key not in NOT_IN_FINGERPRINT.get(s, ())} for s in sections}
    parts["data"] = {"label names": list(comp.labels), "train ids": digest(comp.train_ids),
                     "train texts": digest(comp.train_texts), "train labels": digest(comp.Y.tolist()),
                     "held-out ids": digest([str(i) for i in held_out_ids])}
    return json.loads(json.dumps(parts, default=str))  # as read back from JSON: tuples are lists


def fingerprint(parts: dict) -> str:
    """The hash of `fingerprint_parts`: a finished or resumable fold is reused only under the same one."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


_MISSING = object()
# Permissions, not settings: a fold trained with remote code allowed is the same model when read without it
PERMISSIONS = {("model", "trust_remote_code")}


@functools.cache
def _defaults() -> dict:
    """Every setting's default, as fingerprint parts hold it."""
    return json.loads(json.dumps(to_dict(Config()), default=str))


def _same(section: str, key: str, before, after) -> bool:
    """Whether a saved setting still fits: equal, a permission, a knob an older kit's fingerprint held, or a key the
    kit gained after the fold was trained, now at its default (the behaviour the fold was trained with)."""
    return (before == after or (section, key) in PERMISSIONS or key in NOT_IN_FINGERPRINT.get(section, ())
            or (before is _MISSING and after == _defaults().get(section, {}).get(key, _MISSING)))


def _show(value) -> str:
    return "(unset)" if value is _MISSING else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def changes(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """What differs between saved and current fingerprint parts: (settings like "train.lr 2e-05 -> 3e-05",
    data like "train texts")."""
    settings, data = [], []
    for section in sorted(set(saved) | set(current)):
        old, new = saved.get(section), current.get(section)
        if not (isinstance(old, dict) and isinstance(new, dict)):
            if old != new:
                (data if section == "data" else settings).append(section)
            continue
        for key in sorted(set(old) | set(new)):
            before, after = old.get(key, _MISSING), new.get(key, _MISSING)
            if _same(section, key, before, after):
                continue
            if section == "data":
                data.append(f"{key} {_show(before)} -> {_show(after)}" if key == "label names" else key)
            else:
                settings.append(f"{section}.{key} {_show(before)} -> {_show(after)}")
    return settings, data


def mismatch(saved: dict, current: dict) -> str | None:
    """Why a done.json / resume state (`saved`: "fingerprint", "fingerprint_parts") does not fit the `current`
    parts, or None when it does (or holds no fingerprint at all)."""
    old = saved.get("fingerprint")
    if old is None or old == fingerprint(current):
        return None
    parts = saved.get("fingerprint_parts")
    if not isinstance(parts, dict):  # written before the parts were stored: only the hash to compare
        return (f"settings or data changed (fingerprint {old}, now {fingerprint(current)}; an older kit's fold "
                "records no details)")
    settings, data = changes(parts, current)
    if not settings and not data and parts != current:  # only what _same lets pass differs
        return None
    why = [f"settings changed ({', '.join(settings)})"] if settings else []
    why += [f"data changed ({', '.join(data)})"] if data else []
    return " and ".join(why) or f"fingerprint changed ({old}, now {fingerprint(current)})"


def check_reuse(fold_dir: Path, saved: dict, current: dict, what: str) -> None:
    """A UserError naming the fold folder, what changed and how to retrain, unless `saved` fits `current`."""
    why = mismatch(saved, current)
    if why:
        raise UserError(f"{fold_dir} holds a {what} that no longer matches: {why}; delete {fold_dir} to train it "
                        "again, or use another exp name")


def read_done(fold_dir: Path) -> dict:
    """A fold's done.json; a damaged one is a UserError saying how to retrain the fold."""
    path = fold_dir / "done.json"
    try:
        done = read_json(path)
    except UserError as e:
        raise UserError(f"{e}; delete {fold_dir} to train the fold again") from None
    if not isinstance(done, dict):
        raise UserError(f"{path} holds no mapping (truncated or corrupted?); delete {fold_dir} to train the fold again")
    return done


