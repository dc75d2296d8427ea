"""docs/api.md and the README stay true: their examples run, and every public name has an entry
in docs/api.md.

Examples: the ```python blocks of each `##` section of docs/api.md run in order in one namespace,
each section in a fresh temporary working directory (```python no-run blocks are skipped); the
README's blocks run in order in one namespace, as a reader pasting them one after another would. Coverage: every
name of mmsb.__all__, every public attribute of the main classes and every `mmsb` subcommand must
have an entry: a heading, or the first cell of a table row.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Iterable, NamedTuple

import pytest

import mmsb
from mmsb import cli

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "api.md"
README = ROOT / "README.md"

# Classes whose public attributes (methods and properties) must each have an entry, qualified
# with the class name: `Bus.create_page`, `Page.epoch`, ...
DOCUMENTED_CLASSES = (mmsb.Bus, mmsb.Page, mmsb.Delta, mmsb.DeltaBatch, mmsb.Graph)

# Features whose sections are being written with them (issue 8): exempt until their entry exists.
# test_pending_entries_are_still_missing fails once one is documented, so the exemption goes too.
PENDING: set[str] = set()

_FENCE = re.compile(r"^```(\S*)(.*)$")


class Block(NamedTuple):
    section: str
    line: int  # 1-based line of the opening fence, for failure messages
    code: str
    run: bool


def parse_blocks(text: str, source: str = "docs/api.md") -> list[Block]:
    """Every fenced python block with the `##` section it belongs to."""
    blocks: list[Block] = []
    section = "(preamble)"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence is None:
            if line.startswith("## "):
                section = line[3:].strip()
            i += 1
            continue
        lang, rest = fence.group(1), fence.group(2).split()
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{source}:{i + 1}: code fence is never closed")
        if lang == "python":
            blocks.append(Block(section, i + 1, "\n".join(lines[i + 1:end]), "no-run" not in rest))
        i = end + 1
    return blocks


def entries(text: str) -> list[str]:
    """Headings and first table cells outside code blocks: the places a name counts as documented."""
    out: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if line.startswith("#"):
            out.append(line)
        elif line.startswith("|") and not re.match(r"^\|[\s:|-]+$", line):
            # split on unescaped pipes only: `str \| None` stays in its cell
            cells = re.split(r"(?<!\\)\|", line)
            if len(cells) > 2:
                out.append(cells[1])
    return out


def undocumented(required: Iterable[str], documented: list[str]) -> list[str]:
    """The qualified names (`Bus.at`, `mmsb.open`, `mmsb demo`) that no entry mentions."""
    missing = []
    for name in required:
        pattern = re.compile(r"(?<![\w.])" + re.escape(name) + r"(?![\w])")
        if not any(pattern.search(e) for e in documented):
            missing.append(name)
    return missing


def required_names() -> list[str]:
    names = [f"mmsb.{n}" for n in mmsb.__all__]
    for cls in DOCUMENTED_CLASSES:
        names += [f"{cls.__name__}.{a}" for a in dir(cls) if not a.startswith("_")]
    names += [f"mmsb {c}" for c in cli_commands()]
    return names


def cli_commands() -> list[str]:
    """The subcommands the real parser offers, read from its usage line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main(["--help"])
    found = re.search(r"\{([\w,-]+)\}", out.getvalue())
    assert found, f"no subcommand list in `mmsb --help`:\n{out.getvalue()}"
    return found.group(1).split(",")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = heading.lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


TEXT = API_MD.read_text(encoding="utf-8")
BLOCKS = parse_blocks(TEXT)
SECTIONS = list(dict.fromkeys(b.section for b in BLOCKS))


@pytest.mark.parametrize("section", SECTIONS)
def test_examples_run(section: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_api_example"}
    ran = 0
    for block in BLOCKS:
        if block.section != section or not block.run:
            continue
        code = compile(block.code, f"docs/api.md:{block.line}", "exec")
        exec(code, namespace)  # noqa: S102  (our own documentation)
        ran += 1
    assert ran > 0, f"section {section!r} has only no-run blocks"


def test_readme_examples_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in parse_blocks(README.read_text(encoding="utf-8"), "README.md") if b.run]
    assert blocks, "the README has no python example"
    namespace: dict = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(io.StringIO()):
        for block in blocks:
            exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)  # noqa: S102


def test_every_public_name_has_an_entry() -> None:
    missing = [n for n in undocumented(required_names(), entries(TEXT)) if n not in PENDING]
    assert not missing, f"public API without an entry (heading or table row) in docs/api.md: {missing}"


def test_pending_entries_are_still_missing() -> None:
    documented = sorted(set(PENDING) - set(undocumented(PENDING, entries(TEXT))))
    assert not documented, f"documented now: remove {documented} from PENDING in {Path(__file__).name}"


def test_coverage_check_notices_a_missing_entry() -> None:
    # Deleting one heading must be noticed, or the check above proves nothing.
    heading = next(line for line in TEXT.splitlines() if line.startswith("### `Bus.page_ages()`"))
    without = TEXT.replace(heading + "\n", "")
    assert undocumented(["Bus.page_ages"], entries(TEXT)) == []
    assert undocumented(["Bus.page_ages"], entries(without)) == ["Bus.page_ages"]
    # a mention in prose or code does not count as an entry
    assert "page_ages()" in without


def test_internal_links_resolve() -> None:
    anchors = {github_slug(line) for line in TEXT.splitlines() if line.startswith("#")}
    links = re.findall(r"\]\(#([^)]+)\)", TEXT)
    broken = sorted({link for link in links if link not in anchors})
    assert links and not broken, f"links to missing headings in docs/api.md: {broken}"


def test_parser_reads_fences_and_markers() -> None:
    sample = "## A\n```python\nx = 1\n```\n```python no-run\nboom()\n```\n## B\n```console\n$ ls\n```\n"
    blocks = parse_blocks(sample)
    assert [(b.section, b.code, b.run) for b in blocks] == [("A", "x = 1", True), ("A", "boom()", False)]
    assert entries("### `Bus.at(lsn)`\n| `Page.epoch` | `int \\| None` |\n|---|---|\n```\n# no\n```") == [
        "### `Bus.at(lsn)`", " `Page.epoch` "]
