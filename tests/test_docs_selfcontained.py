"""The repository stands on its own: no file refers to documents outside it, and every relative
link in the Markdown documentation points at a file that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Documents that were never part of the repository, and machine paths of one workplace
# (the repository's own docs/architecture.md is named by that path).
OUTSIDE = re.compile(
    r"partner-api\.md|design/|interface\.md|(?<!docs/)architecture\.md|(?<![\w-])schema\.md"
    r"|\.\./shared"
    r"|\.\./seed|/work/"
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _tracked() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def test_nothing_refers_to_files_outside_the_repository() -> None:
    this = Path(__file__).resolve()
    offending = []
    for path in _tracked():
        if path.resolve() == this or path.suffix in {".db", ".whl", ".png"}:
            continue
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offending == []


def test_every_relative_markdown_link_resolves() -> None:
    broken = []
    for path in _tracked():
        if path.suffix != ".md":
            continue
        for target in LINK.findall(path.read_text("utf-8")):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_license_is_the_one_pyproject_declares() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["license"]
    assert declared == "MIT"
    text = (ROOT / "LICENSE").read_text("utf-8")
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
