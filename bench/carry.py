"""Split a model (16-bit) and the data + wheels a GPU job needs into upload parts of at most 60 MiB each.

For a GPU machine that takes uploads of at most 64 MiB per call (the device tool here, or any similar
remote). One command per upload:

    python bench/carry.py mpnet-base --data ../shared/data/emotion-detection --wheels .whl
    # then, one call per part, in order: carry [.carry/mpnet-base/pK], run the command it prints;
    # the last part's command unpacks the model to /tmp/models/mpnet-base and installs the wheels.

Parts go to `.carry/<name>/p<K>/` (keep `.carry/` out of git: `echo /.carry/ >> .git/info/exclude`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

OFFLINE = Path(__file__).resolve().parents[2] / "shared" / "models" / "offline_models.py"
PART_BYTES = 60 * 2**20


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="offline model NAME (fetched) or a model folder")
    p.add_argument("--data", type=Path, help="competition folder to take along (last part)")
    p.add_argument("--wheels", type=Path, help="folder of wheels to install there (last part)")
    p.add_argument("--out", type=Path, default=Path(".carry"))
    p.add_argument("--offline-models", type=Path, default=OFFLINE)
    a = p.parse_args()
    name = Path(a.model).name
    root = a.out / name
    shutil.rmtree(root, ignore_errors=True)
    packed = root / "packed"
    subprocess.run([sys.executable, str(a.offline_models), "pack", a.model, str(packed), "--chunk-mb", "50"],
                   check=True)
    items = [(f, f.name) for f in packed.iterdir()]  # (source, path inside the part)
    if a.wheels:
        items += [(w, f"wheels/{w.name}") for w in sorted(a.wheels.glob("*.whl"))]
    if a.data:
        items.append((a.data, "data"))
    parts: list[list[tuple[Path, str]]] = []
    for item in sorted(items, key=lambda it: -size_of(it[0])):  # first fit, largest first
        for part in parts:
            if sum(size_of(x) for x, _ in part) + size_of(item[0]) <= PART_BYTES:
                part.append(item)
                break
        else:
            parts.append([item])
    for k, part in enumerate(parts):
        (root / f"p{k}").mkdir(parents=True)
        for src, rel in part:
            dst = root / f"p{k}" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            elif src.parent == packed:
                shutil.move(str(src), dst)
            else:
                shutil.copy(src, dst)
    last = root / f"p{len(parts) - 1}"
    shutil.copy(a.offline_models, last / "offline_models.py")
    packed.rmdir()
    for k in range(len(parts)):
        d = root / f"p{k}"
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 2**20
        cmd = f"mkdir -p /tmp/w && cp -r {d}/. /tmp/w/"
        if k == len(parts) - 1:
            cmd += f" && python3 /tmp/w/offline_models.py unpack /tmp/w /tmp/models/{name}"
            if a.wheels:
                cmd += (" && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "
                        "/tmp/w/wheels/*.whl"
                        " && export PYTHONPATH=/tmp/site")
        print(f"upload {k + 1}/{len(parts)} ({size:.1f} MiB): carry [{d}]  command: {cmd}")


if __name__ == "__main__":
    main()
