"""The README and docs/ name only what exists: commands, options, paths, links.

The README stays short enough to read, and its layout section lists exactly the
repository's tracked top-level folders.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 220

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")
LINK = re.compile(r"\]\(([^()\s]+)\)")
# `raygpu <command>`, also as .venv/bin/raygpu; not raygpu/, raygpu.io, raygpu-dev.
COMMAND = re.compile(r"(?<![\w.-])raygpu[ \t]+([a-z][\w-]*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")


@functools.cache
def tracked() -> tuple[str, ...]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return tuple(out.splitlines())


def in_repo(path: str | Path) -> bool:
    """A tracked file, or a folder that holds one: what a fresh clone has.

    Relative paths are from the repository's root; a path outside it (a test's
    own folder) only needs to exist.
    """
    path = Path(path) if Path(path).is_absolute() else REPO / path
    if not path.is_relative_to(REPO):
        return path.exists()
    rel = path.relative_to(REPO).as_posix()
    return rel in tracked() or any(f.startswith(rel + "/") for f in tracked())


def top_level_folders() -> set[str]:
    return {path.split("/", 1)[0] for path in tracked() if "/" in path}


def top_level_entries() -> set[str]:
    return {path.split("/", 1)[0] for path in tracked()}


@functools.cache
def help_text(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "raygpu", *command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"raygpu {' '.join(command)} --help: {done.stderr}"
    return done.stdout


def cli_commands() -> set[str]:
    section = help_text().split("positional arguments:", 1)[1].split("options:")[0]
    return set(re.findall(r"^ {4}([a-z][\w-]*) {2,}\S", section, re.M))


def code_spans(text: str) -> list[str]:
    """Fenced blocks (diagrams left out) line by line, then inline code spans."""
    spans = []
    for lang, body in FENCE.findall(text):
        if lang != "mermaid":
            spans.extend(body.splitlines())
    spans.extend(INLINE_CODE.findall(FENCE.sub("", text)))
    return spans


def named_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, options given with it) for each `raygpu <command>` in code."""
    found = []
    for span in code_spans(text):
        for m in COMMAND.finditer(span):
            rest = re.split(r" -- |\s#", span[m.end() :] + " ", maxsplit=1)[0]
            found.append((m.group(1), OPTION.findall(rest)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def repo_paths(text: str) -> set[str]:
    """Paths from the repository root: those starting at a tracked top-level entry."""
    names = "|".join(re.escape(n) for n in sorted(top_level_entries(), key=len)[::-1])
    pattern = re.compile(rf"(?<![\w./:~$<-])((?:{names})(?:/[\w.-]*)*)")
    found = set()
    for m in pattern.finditer(FENCE.sub("", text) + "\n" + "\n".join(code_spans(text))):
        path = m.group(1).rstrip(".,")
        if "/" in path or path in top_level_entries():
            found.add(path)
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not in_repo(dest):
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: {dest.name} has no heading #{anchor}")
    return problems


def layout_block() -> str:
    text = README.read_text(encoding="utf-8")
    assert "\n## Layout\n" in text, "README has no '## Layout' section"
    section = text.split("\n## Layout\n", 1)[1]
    m = FENCE.search(section)
    assert m, "README's layout section has no code block"
    return m.group(2)


def layout_entries() -> dict[str, str]:
    """folder -> its description, from the layout block's `folder/  text` lines."""
    entries: dict[str, str] = {}
    folder = None
    for line in layout_block().splitlines():
        if line and not line[0].isspace():
            folder, _, line = line.partition(" ")
            assert folder.endswith("/"), f"layout line {folder!r} is not a folder/"
            folder = folder.rstrip("/")
            entries[folder] = ""
        if folder is not None:
            entries[folder] += " " + line.strip()
    return entries


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md: {lines} lines, at most {MAX_README_LINES}"
    )


def test_the_cli_lists_its_commands():
    assert {"plan", "render", "submit", "serve", "destroy", "orphans", "demo"} <= (
        cli_commands()
    )


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_raygpu_command_and_option_named_exists(doc):
    commands = cli_commands()
    problems = []
    for command, options in named_commands(doc.read_text(encoding="utf-8")):
        if command not in commands:
            problems.append(f"raygpu {command}: not a command ({sorted(commands)})")
            continue
        known = set(OPTION.findall(help_text(command)))
        problems += [
            f"raygpu {command} {o}: no such option" for o in options if o not in known
        ]
    assert not problems, f"{doc.name}:\n" + "\n".join(sorted(set(problems)))


def test_the_readme_names_the_commands():
    named = {
        command for command, _ in named_commands(README.read_text(encoding="utf-8"))
    }
    assert cli_commands() <= named, f"README omits {sorted(cli_commands() - named)}"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_path_and_link_named_exists(doc):
    missing = [
        p for p in sorted(repo_paths(doc.read_text(encoding="utf-8"))) if not in_repo(p)
    ]
    problems = [f"{p}: no such path in the repository" for p in missing]
    problems += broken_links(doc)
    assert not problems, f"{doc.name}:\n" + "\n".join(problems)


def test_the_layout_lists_the_tracked_top_level_folders():
    listed = set(layout_entries())
    actual = top_level_folders()
    assert listed == actual, (
        f"layout lists {sorted(listed - actual)} that are not tracked folders and "
        f"omits {sorted(actual - listed)}"
    )


def test_what_the_layout_names_inside_a_folder_exists():
    missing = []
    for folder, text in layout_entries().items():
        for name in re.findall(
            r"(?<![\w./-])([\w.-]+(?:\.(?:py|md|json|txt)|/))", text
        ):
            name = name.rstrip("/")
            inside = [f for f in tracked() if f.startswith(folder + "/")]
            if not any(name in f.split("/")[1:] for f in inside):
                missing.append(f"{folder}/: {name}")
    assert not missing, "layout names what is not there: " + ", ".join(missing)


def test_the_checks_catch_a_stale_command_option_path_and_link(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# A title\n\nRun `scripts/plan.py --stack dev` or `raygpu nuke`.\n\n"
        "```bash\nraygpu destroy --stack dev --force  # --not-an-option\n```\n\n"
        "[ok](doc.md#a-title) [gone](gone.md) [bad anchor](doc.md#no-such)\n",
        encoding="utf-8",
    )
    text = doc.read_text(encoding="utf-8")
    assert "scripts/plan.py" in repo_paths(text)
    assert not in_repo("scripts/plan.py")
    assert sorted(named_commands(text)) == [
        ("destroy", ["--stack", "--force"]),
        ("nuke", []),
    ]
    assert "nuke" not in cli_commands()
    assert "--force" not in OPTION.findall(help_text("destroy"))
    assert broken_links(doc) == [
        "gone.md: no such file",
        "doc.md#no-such: doc.md has no heading #no-such",
    ]
