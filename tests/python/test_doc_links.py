"""Every relative link and image of the README and docs/ names a file of the checkout that git
keeps: a plot or result the README shows must be committed, not only present where it was made
(the growth curves were once shown from files .gitignore kept out of the repository)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace (a title) or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def relative_targets(doc: Path) -> list[tuple[str, Path]]:
    found = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor of the same page
        found.append((target, (doc.parent / target.split("#", 1)[0]).resolve()))
    return found


def ignored(paths: list[Path]) -> set[Path]:
    """The paths git would not keep: outside the checkout, or ignored (git check-ignore); none
    where there is no checkout."""
    outside = {p for p in paths if ROOT not in p.parents}
    inside = [p for p in paths if p not in outside]
    if shutil.which("git") is None or not (ROOT / ".git").exists() or not inside:
        return outside
    run = subprocess.run(["git", "check-ignore", "--stdin"], cwd=ROOT, input="\n".join(map(str, inside)),
                         capture_output=True, text=True)
    assert run.returncode in (0, 1), f"git check-ignore failed: {run.stderr}"  # 1: none ignored
    return outside | {Path(line).resolve() for line in run.stdout.splitlines()}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_relative_links_name_files_git_keeps(doc: Path) -> None:
    targets = relative_targets(doc)
    missing = [t for t, path in targets if not path.exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"
    kept_out = ignored([path for _, path in targets])
    assert not kept_out, f"{doc.name} links to files git does not keep: {sorted(map(str, kept_out))}"


def test_the_check_notices_an_ignored_and_a_missing_target(tmp_path: Path) -> None:
    assert any(path.suffix == ".png" for _, path in relative_targets(ROOT / "README.md")), "the README's plots"
    # build/ is ignored; a file under it would pass the existence check where it was made.
    assert ignored([ROOT / "build" / "x.png"]) == {(ROOT / "build" / "x.png").resolve()}
    assert ignored([ROOT.parent / "x.png", ROOT / "README.md"]) == {ROOT.parent / "x.png"}  # outside the repo
    fake = tmp_path / "page.md"
    fake.write_text("![plot](nowhere.png) [site](https://example.org) [top](#top)")
    assert [t for t, p in relative_targets(fake) if not p.exists()] == ["nowhere.png"]
