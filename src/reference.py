"""Write docs/reference.md from the code: every command's arguments and every config key, so the page cannot drift.

    python -m src.reference            # (re)write docs/reference.md
    python -m src.reference --check    # exit 1 with one line when docs/reference.md differs from the code

Commands: `bash train.sh` (its usage text, read from the script), `run` and `finalize` (src/__main__.py) and every
command of `src.__main__.MODULES`. A command's parser is taken from its own `main` without running it: argparse's
parse methods are stopped at their first call and the parser built so far is rendered (arguments, defaults, help),
in a fixed format of our own rather than argparse's `--help` layout, which changes between Python versions.
Config keys: `src.config.keys()` (key, type, default), the allowed ranges of `RANGES` / `LIST_RULES`, and the
comment beside each field in src/config.py, read with `tokenize` (comment lines above a field belong to it, an
indented `#   ...` line below one continues its comment).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import io
import json
import os
import re
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "reference.md"
VARIANTS = {"predict": [[], ["--input", "FILE.csv"]]}  # argv that reach another parser of the same command


class _Parsed(BaseException):
    """Raised by the first parse call: carries the parser, so `main` stops before doing anything."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


@contextlib.contextmanager
def _stop_at_parse():
    names = ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")
    saved = {n: getattr(argparse.ArgumentParser, n) for n in names}

    def stop(self, *args, **kwargs):
        raise _Parsed(self)

    for n in names:
        setattr(argparse.ArgumentParser, n, stop)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(argparse.ArgumentParser, n, f)


def parser_of(command: str, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ArgumentParser that `python -m src <command> [argv]` builds, taken before it parses anything."""
    from src import __main__ as entry

    argv = list(argv or [])
    if command in ("run", "finalize"):
        call = lambda: entry._pipeline([command, *argv])  # noqa: E731
    else:
        main = importlib.import_module(entry.MODULES[command]).main
        call = lambda: main(argv)  # noqa: E731
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.pop(k) for k in ("PROGRESS_INTERVAL",) if k in os.environ}  # checked before parsing
    try:
        with _stop_at_parse(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            call()
    except _Parsed as p:
        return p.parser
    except SystemExit as e:
        raise RuntimeError(f"python -m src {command}: exited ({e.code}) before parsing its arguments: "
                           f"{(err.getvalue() or out.getvalue()).strip()}") from None
    finally:
        os.environ.update(saved)
    raise RuntimeError(f"python -m src {command}: main() returned without parsing arguments")


def commands() -> list[str]:
    from src.__main__ import MODULES

    return ["run", "finalize", *MODULES]


def summaries() -> dict[str, str]:
    """Each command's one-line summary from the `commands:` list of src/__main__.py's docstring."""
    from src import __main__ as entry

    out, last = {}, None
    for line in (entry.__doc__ or "").split("commands:", 1)[-1].splitlines():
        m = re.match(r"  (\S+)\s+(.*)", line)
        if m:
            last = m.group(1)
            out[last] = m.group(2).strip()
        elif last and line.startswith("   ") and line.strip():
            out[last] += " " + line.strip()
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (before the -1, -2 of repeated headings)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    """An inline code span (longer fences when the text holds backticks)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" or text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _metavar(a: argparse.Action) -> str:
    if a.metavar is not None:
        return a.metavar if isinstance(a.metavar, str) else " ".join(a.metavar)
    if a.choices is not None:
        return "{" + ",".join(map(str, a.choices)) + "}"
    return a.dest if not a.option_strings else a.dest.upper()


def _takes_value(a: argparse.Action) -> bool:
    return a.nargs != 0


def _invocation(a: argparse.Action, every: bool = False) -> str:
    """`--out OUT`, `--probs`, `runs [runs ...]`, `{list,select} ...` (every: all option strings, `-h, --help`)."""
    mv = _metavar(a)
    if not a.option_strings:
        if isinstance(a, argparse._SubParsersAction):
            return "{" + ",".join(a.choices) + "} ..."
        return {"*": f"[{mv} ...]", "+": f"{mv} [{mv} ...]", "?": f"[{mv}]"}.get(a.nargs, mv)
    opts = ", ".join(a.option_strings) if every else next(
        (o for o in a.option_strings if o.startswith("--")), a.option_strings[0])
    return f"{opts} {mv}" if _takes_value(a) else opts


def _usage(p: argparse.ArgumentParser, prog: str) -> str:
    grouped: dict[int, argparse._MutuallyExclusiveGroup] = {}
    for g in p._mutually_exclusive_groups:
        for a in g._group_actions:
            grouped[id(a)] = g
    parts, done = [prog], set()
    for a in p._actions:
        if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
            continue
        g = grouped.get(id(a))
        if g is not None:
            if id(g) in done:
                continue
            done.add(id(g))
            inner = " | ".join(_invocation(x) for x in g._group_actions)
            parts.append(f"({inner})" if g.required else f"[{inner}]")
        elif a.option_strings and not a.required:
            parts.append(f"[{_invocation(a)}]")
        else:
            parts.append(_invocation(a))
    return " ".join(parts)


def _help(a: argparse.Action, prog: str) -> str:
    text = a.help or ""
    if "%" in text:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text = text % {**vars(a), "prog": prog}
    return text


def _default(a: argparse.Action) -> str:
    if not _takes_value(a) or a.default in (None, argparse.SUPPRESS) or a.required:
        return ""
    if not a.option_strings and a.default == []:
        return ""
    return _code(a.default)


def _arguments(p: argparse.ArgumentParser, prog: str) -> list[str]:
    rows = ["| argument | default | what it does |", "|---|---|---|"]
    for a in p._actions:
        if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
            continue
        if isinstance(a, argparse._SubParsersAction):
            for choice in a._choices_actions:
                rows.append(f"| {_code(choice.dest)} | | {_cell(choice.help or '')} |")
            continue
        name = _invocation(a, every=True)
        extra = " (required)" if a.option_strings and a.required else ""
        rows.append(f"| {_code(name)} | {_default(a)} | {_cell(_help(a, prog))}{extra} |")
    return rows if len(rows) > 2 else []


def _command(lines: list[str], title: str, p: argparse.ArgumentParser, summary: str = "", prog: str = "") -> None:
    lines += [f"### `{title}`", ""]
    for text in dict.fromkeys(t for t in (summary, p.description) if t):
        lines += [text[:1].upper() + text[1:] + ("" if text.endswith(".") else "."), ""]
    lines += ["```text", _usage(p, prog or title), "```", ""]
    table = _arguments(p, title)
    if table:
        lines += [*table, ""]
    if p.epilog:
        lines += [p.epilog, ""]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                _command(lines, f"{title} {name}", sub)


def train_sh_usage() -> str:
    """The usage text of train.sh (its `usage()` here-document), read from the script, not run."""
    text = (ROOT / "train.sh").read_text(encoding="utf-8")
    m = re.search(r"usage\(\) \{\n\s*cat <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    if not m:
        raise RuntimeError("train.sh: no usage() here-document found")
    return m.group(1)


def field_comments(cls: type) -> dict[str, str]:
    """The comment beside each field of a dataclass, from its source: comment lines right above a field, the
    comment at the end of its line, and indented continuation lines (`#   ...`) right below it."""
    lines, _ = inspect.getsourcelines(cls)
    toks = tokenize.generate_tokens(io.StringIO("".join(lines)).readline)
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whole line)
    code_lines: set[int] = set()
    for t in toks:
        if t.type == tokenize.COMMENT:
            whole = not t.line[: t.start[1]].strip()
            comments[t.start[0]] = (t.string, whole)
        elif t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(t.start[0], t.end[0] + 1))
    field_re = re.compile(r"\s{4}(\w+)\s*:")
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}
    above: list[str] = []
    last = None
    for i, line in enumerate(lines, start=1):
        m = field_re.match(line) if i in code_lines else None
        if m and m.group(1) in names:
            last = m.group(1)
            out[last] = above
            above = []
            if i in comments and not comments[i][1]:
                out[last].append(comments[i][0][1:].strip())
        elif i in comments and comments[i][1]:
            text = comments[i][0][1:]
            if last and text.startswith("   ") and not above:  # `#   ...` continues the field above
                out[last].append(text.strip())
            else:
                above.append(text.strip())
                last = None
        elif i in code_lines:
            above, last = [], None
    return {k: " ".join(v) for k, v in out.items() if v}


def config_keys() -> list[str]:
    from src import config as c

    lines = []
    comments: dict[str, str] = {}
    docs: dict[str, str] = {}
    sections: dict[str, type] = {"": c.Config}
    for f in dataclasses.fields(c.Config):
        default = getattr(c.Config(), f.name)
        if dataclasses.is_dataclass(default):
            sections[f.name] = type(default)
    for prefix, cls in sections.items():
        for name, text in field_comments(cls).items():
            comments[f"{prefix}.{name}" if prefix else name] = text
        doc = inspect.getdoc(cls) or ""
        if prefix and doc and not doc.startswith(f"{cls.__name__}("):  # a written docstring, not dataclass's
            docs[prefix] = " ".join(doc.split())
    rows_by_section: dict[str, list[str]] = {}
    hints = {}
    for prefix, cls in sections.items():
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is not None:  # list[str], not keys()'s bare `list`
                hints[f"{prefix}.{name}" if prefix else name] = str(hint).replace("typing.", "")
    for key, tp, default in c.keys():
        section = key.split(".", 1)[0] if "." in key else ""
        allowed = c.RANGES.get(key) or c.LIST_RULES.get(key) or ""
        shown = json.dumps(default) if isinstance(default, str) and "\n" in default else c._flow(default)
        cells = [_code(key), _code(hints.get(key, tp)), _code(shown), _cell(allowed), _cell(comments.get(key, ""))]
        rows_by_section.setdefault(section, []).append("| " + " | ".join(cells) + " |")
    for section, rows in rows_by_section.items():
        lines += [f"### `{section}`" if section else "### Top level", ""]
        if docs.get(section):
            lines += [docs[section], ""]
        lines += ["| key | type | default | allowed | what it is |", "|---|---|---|---|---|", *rows, ""]
    return lines


def generate() -> str:
    summary = summaries()
    lines = [
        "# CLI and config reference",
        "",
        "<!-- Generated by `python -m src.reference` from the code; do not edit by hand. "
        "tests/test_docs.py fails when this page differs from the code. -->",
        "",
        "Every command runs as `python -m src <command> ...` (each also as `python -m src.<module>`); "
        "`bash train.sh` runs a config end to end. Every config key below can be set in a YAML file under "
        "`configs/` or on the command line as `section.key=value`; `python -m src config --keys` prints the same list.",
        "",
        "## Commands",
        "",
        f"- [`bash train.sh`](#{github_slug('bash train.sh')})",
    ]
    names = commands()
    for name in names:
        title = f"python -m src {name}"
        lines.append(f"- [`{title}`](#{github_slug(title)}): {summary.get(name, '')}".rstrip(": "))
    lines += ["- [Config keys](#config-keys)", "", "### `bash train.sh`", "", "```text", train_sh_usage(), "```", ""]
    for name in names:
        for i, argv in enumerate(VARIANTS.get(name, [[]])):
            title = f"python -m src {name}" + (f" {' '.join(argv[:1])}" if i else "")
            _command(lines, title, parser_of(name, argv), summary.get(name, "") if not i else "",
                     prog=f"python -m src {name}")
    lines += ["## Config keys", "",
              "Types and defaults as `python -m src config --keys` prints them; *allowed* is the range checked once "
              "the overrides are in (src/config.py `RANGES`, `LIST_RULES`); the last column is the comment beside "
              "the field in src/config.py.", ""]
    lines += config_keys()
    text = "\n".join(lines).rstrip("\n") + "\n"
    home = str(Path.home())
    text = text.replace(str(ROOT), "<repo>")
    if home not in ("/", ""):
        text = text.replace(home, "~")
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m src.reference", description="Write docs/reference.md from the code.")
    p.add_argument("--check", action="store_true", help="exit 1 if docs/reference.md differs from the code")
    p.add_argument("--out", default=str(OUT), help="the file to write or check (default: docs/reference.md)")
    a = p.parse_args(argv)
    text = generate()
    out = Path(a.out)
    if a.check:
        if not out.is_file() or out.read_text(encoding="utf-8") != text:
            print(f"error: {out.name} is stale: regenerate it with python -m src.reference", file=sys.stderr)
            raise SystemExit(1)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    main()
