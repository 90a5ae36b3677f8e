"""Where a model's files come from: a local folder, a local copy of a hub model under `MODELS_DIR`, or the hub.

Configs name hub ids (`HuggingFaceTB/SmolLM2-135M-Instruct`), so they mean the same model everywhere. A machine
without the hub (Kaggle with Internet off, a firewalled pod) keeps local copies in one folder and names it in the
environment variable `MODELS_DIR` (several folders: separated by `:`). A hub id `org/name` is then read from
`$MODELS_DIR/org--name` or `$MODELS_DIR/name` (the first that exists), e.g.

    MODELS_DIR=/kaggle/input/my-models   # holding SmolLM2-135M-Instruct/ (config.json, weights, tokenizer)

Without a copy, a hub id goes to the hub, or to the Hugging Face cache in offline mode when the hub cannot be
reached; with neither it fails at once, naming the hub id and the folder names `MODELS_DIR` is searched for.
A path (`~/models/x`, `./x`, `/abs/x`, `$VAR/x`) is a local folder and must exist.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path

from src.errors import UserError

ENV = "MODELS_DIR"


def copy_names(hub_id: str) -> list[str]:
    """The folder names a local copy of `hub_id` may have under MODELS_DIR: `org--name`, then `name`."""
    names = [hub_id.replace("/", "--")]
    if "/" in hub_id:
        names.append(hub_id.rsplit("/", 1)[1])
    return names


def local_copy(hub_id: str) -> str | None:
    """The folder under `$MODELS_DIR` that holds `hub_id` (a folder with a config.json), or None."""
    for root in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        for name in copy_names(hub_id):
            folder = Path(os.path.expanduser(root)) / name
            if (folder / "config.json").is_file():
                return str(folder)
    return None


def remote_code(folder: str, trusted: bool) -> list[str]:
    """The .py files a model folder's `auto_map` (config.json, tokenizer_config.json) would import; said once, with
    whether they run (`model.trust_remote_code=true` asked for on this command line or in the user's own config)."""
    import json

    files = set()
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((Path(folder) / name).read_text(encoding="utf-8")).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for ref in auto_map.values():
            for r in ref if isinstance(ref, list) else [ref]:
                if isinstance(r, str) and "--" not in r and "." in r:  # "modeling_x.XModel" (not another repo's)
                    files.add(str(Path(folder) / (r.rsplit(".", 1)[0] + ".py")))
    if files and folder not in _said:
        _said.add(folder)
        print(f"note: {folder} names remote code ({', '.join(sorted(files))}): "
              + ("it runs (model.trust_remote_code=true)" if trusted else "not run (it runs only with "
                 "model.trust_remote_code=true given on the command line)"), flush=True)
    return sorted(files)


_said: set[str] = set()


def is_path(name_or_path: str) -> bool:
    """Whether a `model.name_or_path` is meant as a folder (not a hub id like `org/name`)."""
    expanded = os.path.expandvars(os.path.expanduser(name_or_path))
    return name_or_path.startswith(("~", "/", ".", "$")) or expanded.count("/") > 1


def resolve_path(name_or_path: str) -> str:
    """A local folder (after expanding ~ and $VARS), the `MODELS_DIR` copy of a hub id, or else the hub id."""
    if not name_or_path:
        raise UserError("model.name_or_path is empty: set a hub id (e.g. roberta-base) or a local model folder")
    path = os.path.expandvars(os.path.expanduser(name_or_path))
    if os.path.isdir(path):
        return path
    if is_path(name_or_path):
        raise UserError(f"model folder not found: {path} (configs name hub ids; local copies of hub models go "
                        f"under ${ENV}, see src/hub.py)")
    copy = local_copy(name_or_path)
    if copy is not None:
        return copy
    _check_hub(name_or_path)
    return name_or_path


def refuse_hub_kernels() -> None:
    """Compiled kernels are not fetched from the hub: bitsandbytes (imported by peft and the Trainer) otherwise calls
    `kernels.get_kernel("kernels-community/...")` at import on CPUs with AVX512-BF16 and would load a binary nobody
    asked for. It falls back to its own CPU code, as on any other CPU; its warning about the refused download is
    dropped. Called when `src` is imported, before anything can import bitsandbytes."""
    try:
        import kernels
    except ImportError:
        return

    def get_kernel(repo_id: str, *args, **kwargs):
        raise RuntimeError(f"hub kernel {repo_id} not loaded: the kit fetches no compiled code (src/hub.py)")

    kernels.get_kernel = get_kernel
    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: "from kernels-community" not in record.getMessage())


@functools.cache
def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _check_hub(hub_id: str) -> None:
    """A hub id without a network fails at once (not after a minute of retries) unless it is in the local cache;
    a cached one then loads in offline mode."""
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _hub_reachable():
        return
    if huggingface_hub.try_to_load_from_cache(hub_id, "config.json") is None:
        where = os.environ.get(ENV)
        names = " or ".join(copy_names(hub_id))
        raise UserError(f"model '{hub_id}' is a hub id, but huggingface.co cannot be reached from here and the model "
                        f"is not in the local cache: put a local copy in ${ENV} as {names} "
                        + (f"(searched: {where}), " if where else f"(set {ENV} to the folder of local copies), ")
                        + "turn Internet on, or set model.name_or_path to a local model folder")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
