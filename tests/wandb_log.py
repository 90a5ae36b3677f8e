"""Reading what the real wandb wrote in offline mode: the records of its .wandb logs (no API for them offline)."""

import json
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def records(path: Path) -> list:
    """The protobuf records of a .wandb log (LevelDB log format: 32 KiB blocks of checksum, length, type, data)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or kind == 0:  # the block's zero padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def logged_runs(root: Path) -> dict[str, dict]:
    """name -> {"job_type", "group", "summary" (key -> value), "history" (one dict per logged row), "artifacts"
    (name -> (type, [paths])), "finished" (an exit record), "log" (the .wandb file)}; a name logged twice is an
    error."""
    runs = {}
    for log in sorted(root.glob("wandb/offline-run-*/run-*.wandb")):
        seen = {"summary": {}, "artifacts": {}, "history": [], "finished": False, "log": log}
        for r in records(log):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                seen |= {"name": r.run.display_name, "job_type": r.run.job_type, "group": r.run.run_group}
            elif kind == "summary":
                seen["summary"] |= {_key(i): json.loads(i.value_json) for i in r.summary.update if _key(i)}
            elif kind == "history":
                seen["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
            elif kind == "exit":
                seen["finished"] = True
            elif kind == "artifact":
                seen["artifacts"][r.artifact.name] = (r.artifact.type, [m.path for m in r.artifact.manifest.contents])
        assert seen["name"] not in runs, f"two W&B runs named {seen['name']}"
        runs[seen["name"]] = seen
    return runs
