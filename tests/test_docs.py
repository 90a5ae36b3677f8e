"""The documentation holds together: relative links resolve (files and #anchors), the README stays short with its
two quickstart commands, docs/reference.md matches the code it is generated from, and the LICENSE is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from src import reference

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *DOCS]
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code spans blanked out."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line))
    return out


def anchors(path: Path) -> set[str]:
    """The #anchors GitHub gives the headings of a Markdown file (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not m:
            continue
        slug = reference.github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    return [m.group(1) for line in prose_lines(path.read_text(encoding="utf-8")) for m in LINK.finditer(line)]


def test_github_slugs():
    assert reference.github_slug("The data folder") == "the-data-folder"
    assert reference.github_slug("`python -m src run`") == "python--m-src-run"
    assert reference.github_slug("`bash train.sh`") == "bash-trainsh"
    assert reference.github_slug("GoEmotions (28 labels, 48,836 train), CPU") == "goemotions-28-labels-48836-train-cpu"
    assert reference.github_slug("Pseudo-labels, distillation") == "pseudo-labels-distillation"


def test_pages_exist():
    assert (ROOT / "CONTRIBUTING.md").is_file()
    assert DOCS, "docs/ holds no Markdown page"
    assert all(p.suffix == ".md" for p in (ROOT / "docs").iterdir()), "docs/ holds Markdown pages only"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path):
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if ROOT not in dest.parents and dest != ROOT:
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix != ".md":
            bad.append(f"{target}: an #anchor into a file that is not Markdown")
    assert not bad, f"{page.relative_to(ROOT)}: broken links: " + "; ".join(bad)


def test_every_docs_page_is_linked_from_the_readme():
    targets = {t.partition("#")[0] for t in links(ROOT / "README.md")}
    missing = [p.relative_to(ROOT).as_posix() for p in DOCS if p.relative_to(ROOT).as_posix() not in targets]
    assert not missing, f"README's links miss {missing}"
    assert "CONTRIBUTING.md" in targets


def test_readme_is_short_and_starts_with_the_quickstart():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, f"README.md has {len(text.splitlines())} lines (at most 150)"
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    quick = [b for b in blocks if re.search(r"^bash train\.sh\b", b, re.M) and re.search(r"^bash test\.sh\b", b, re.M)]
    assert quick, "README.md lacks the quickstart block with `bash train.sh` and `bash test.sh`"
    assert "15 minutes" in text, "README.md should say how long `bash test.sh` takes"


def test_no_machine_paths():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for pattern in (r"/work/", r"/root/", r"offline-models", re.escape(str(ROOT))):
            assert not re.search(pattern, text), f"{page.relative_to(ROOT)} names a machine path ({pattern})"


def test_reference_is_up_to_date():
    want = reference.generate()
    have = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert have == want, "docs/reference.md is stale: regenerate it with python -m src.reference"


def test_reference_check_flag(tmp_path, capsys):
    stale = tmp_path / "reference.md"
    stale.write_text("old\n", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        reference.main(["--check", "--out", str(stale)])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: reference.md is stale") and "\n" not in err


def test_reference_covers_every_command_and_key():
    from src.__main__ import MODULES
    from src.config import keys

    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    for name in ["run", "finalize", *MODULES]:
        assert f"### `python -m src {name}`" in text
    for key, _, _ in keys():
        assert f"| `{key}` |" in text


def test_license():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "the multilabel-text-kit contributors" in text
    assert "[LICENSE](LICENSE)" in (ROOT / "README.md").read_text(encoding="utf-8")
