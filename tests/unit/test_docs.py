"""The README and docs/ say only what the repository has (issue 12, point 7).

Every relative link resolves to a file of the repository (and its anchor to a heading there);
no link leaves the repository except http(s) links, which are never fetched; every ``treevu``
command a code span or block shows exists in the CLI, every ``make`` target in the Makefile,
and every ``TREEVU_*`` variable is a setting (or one of the few the tests, benchmarks and
crash points read themselves). Each check is also run on a page that breaks it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
import typer
from typer.core import TyperGroup

from treevu.cli import app
from treevu.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: Variables named in the docs that are not settings, and a file that reads each.
OWN_VARIABLES = {
    "TREEVU_TEST_MYSQL_URL": "tests/conftest.py",
    "TREEVU_TEST_POSTGRES_URL": "tests/conftest.py",
    "TREEVU_TEST_REDIS_URL": "tests/conftest.py",
    "TREEVU_TEST_REQUIRE_SERVERS": "tests/conftest.py",
    "TREEVU_CRASH_AT": "src/treevu/faults.py",
    "TREEVU_BENCH_MYSQL_URL": "bench/segmentation.py",
    "TREEVU_BENCH_POSTGRES_URL": "bench/segmentation.py",
}
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
INDENTED = re.compile(r"(?:^(?: {4}|\t)[^\n]*\n?)+", re.MULTILINE)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_LINK = re.compile(r"<(?:a|img|link|script)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)", re.I)
AUTOLINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>\s]+)>", re.I)
#: ``treevu …`` or ``make …`` where a shell would run it: at the start of a code span or line,
#: or after ``$``, ``;``, ``&&``, ``||``, ``|`` or ``(`` (``.venv/bin/treevu`` too).
COMMAND = re.compile(
    r"(?:^|[;&|($]\s*|^\s+)(?:\S*/)?(treevu|make)(?![\w/.-])((?:[ \t]+[a-z][a-z0-9_-]*)*)",
    re.MULTILINE,
)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
SETTING = re.compile(r"\bTREEVU_[A-Z0-9_]*[A-Z0-9]")


def split_code(text: str, *, spans: bool = True) -> tuple[str, list[str]]:
    """The prose (code blanked out, so links in code are not links) and the code pieces;
    ``spans=False`` leaves inline code in the prose (a heading's text)."""
    code: list[str] = []

    def blank(match: re.Match[str], keep: int = 0) -> str:
        code.append(match.group(keep))
        return re.sub(r"[^\n]", " ", match.group(0))

    text = FENCE.sub(blank, text)
    text = INDENTED.sub(lambda m: blank(m) if _is_code_block(m.group(0)) else m.group(0), text)
    if spans:
        text = CODE_SPAN.sub(lambda m: blank(m, 2), text)
    return text, code


def _is_code_block(lines: str) -> bool:
    """Indented lines are code unless they continue a list item or a table."""
    first = lines.lstrip()
    return not re.match(r"(?:[-*+]|\d+[.)]|\|)\s", first)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>|[`*]", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose, _ = split_code(page.read_text(encoding="utf-8"), spans=False)
    found: set[str] = set()
    for heading in HEADING.findall(prose):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def link_problems(page: Path, text: str, root: Path = ROOT) -> list[str]:
    prose, _ = split_code(text)
    targets = [
        *LINK.findall(prose),
        *REFERENCE.findall(prose),
        *HTML_LINK.findall(prose),
        *AUTOLINK.findall(prose),
    ]
    problems = []
    for target in targets:
        where = f"{page.relative_to(root)}: {target}"
        scheme = re.match(r"([a-z][a-z0-9+.-]*):", target, re.I)
        if scheme and scheme.group(1).lower() in ("http", "https"):
            continue  # never fetched by the docs or the tests
        if scheme:
            problems.append(f"{where}: a {scheme.group(1)}: link leaves the repository")
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path)
        if path.startswith(("/", "\\", "~")):
            problems.append(f"{where}: an absolute path leaves the repository")
            continue
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


def commands(code: list[str]) -> list[tuple[str, list[str]]]:
    """Every ``treevu``/``make`` invocation in the code pieces, with its words."""
    return [(program, words.split()) for piece in code for program, words in COMMAND.findall(piece)]


def treevu_problems(code: list[str]) -> list[str]:
    problems = []
    for program, words in commands(code):
        if program != "treevu":
            continue
        command = typer.main.get_command(app)
        for depth, word in enumerate(words):
            if not isinstance(command, TyperGroup):
                break
            if word not in command.commands:
                problems.append(f"treevu {' '.join(words[: depth + 1])}: no such command")
                break
            command = command.commands[word]
    return problems


def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    text = makefile.read_text(encoding="utf-8")
    return {
        name
        for names in re.findall(r"^([A-Za-z0-9_.\- ]+):(?!=)", text, re.MULTILINE)
        for name in names.split()
    }


def make_problems(code: list[str], targets: set[str]) -> list[str]:
    return [
        f"make {words[0]}: no such target in the Makefile"
        for program, words in commands(code)
        if program == "make" and words and words[0] not in targets
    ]


def setting_problems(text: str) -> list[str]:
    settings = {f"TREEVU_{name.upper()}" for name in Settings.model_fields}
    problems = []
    for name in sorted(set(SETTING.findall(text))):
        if name in settings:
            continue
        reader = OWN_VARIABLES.get(name)
        if reader is None:
            problems.append(f"{name}: no such setting")
        elif f'"{name}"' not in (ROOT / reader).read_text(encoding="utf-8"):
            problems.append(f"{name}: {reader} does not read it")
    return problems


def page_problems(page: Path, text: str, root: Path = ROOT) -> list[str]:
    _, code = split_code(text)
    name = page.relative_to(root)
    return [
        *link_problems(page, text, root),
        *(f"{name}: {p}" for p in treevu_problems(code)),
        *(f"{name}: {p}" for p in make_problems(code, make_targets())),
        *(f"{name}: {p}" for p in setting_problems(text)),
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_command_target_and_setting_exists(page: Path) -> None:
    problems = page_problems(page, page.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_the_readme_names_commands_targets_and_settings() -> None:
    """The checks above see what the README shows (a pattern that matched nothing passes)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose, code = split_code(text)
    found = {(program, tuple(words[:2])) for program, words in commands(code)}
    assert {("treevu", ("import", "users")), ("treevu", ("jobs", "list"))} <= found
    assert {("make", ("demo",)), ("make", ("test-lowest",))} <= {
        (p, w[:1]) for p, w in found if p == "make"
    }
    assert len(LINK.findall(prose)) >= 10
    assert {"TREEVU_DATABASE_URL", "TREEVU_ROLE"} <= set(SETTING.findall(text))
    assert {"jobs", "encryption-at-rest-and-key-rotation"} <= anchors(
        ROOT / "docs" / "workflows.md"
    ) | anchors(ROOT / "docs" / "notifications.md")


def test_each_check_catches_what_it_guards(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "there.md").write_text("# Jobs and `keys`\n\n## Jobs and `keys`\n")
    (tmp_path / "outside.md").write_text("# Out\n")
    page = root / "docs" / "page.md"
    text = (
        "[ok](there.md#jobs-and-keys-1) [ok](#local) [web](https://example.com/x)\n"
        "[gone](missing.md) [anchor](there.md#nothing) [up](../../outside.md)\n"
        '[abs](/etc/passwd) [file](file:///etc/passwd) <a href="../../outside.md">x</a>\n'
        "## Local\n\n`[not a link](nowhere.md)`\n\n"
        "```sh\ntreevu import users x.csv\ntreevu frobnicate --now\ntreevu jobs purge\n"
        "make demo && make deploy\n```\n\n"
        "Run `treevu serve --port 3001`; the treevu command; set `TREEVU_NO_SUCH` and "
        "TREEVU_PORT and TREEVU_CRASH_AT.\n"
    )
    page.write_text(text)
    problems = page_problems(page, text, root)
    expected = [
        "docs/page.md: missing.md: no such file",
        "docs/page.md: there.md#nothing: no heading #nothing in docs/there.md",
        "docs/page.md: ../../outside.md: leaves the repository",
        "docs/page.md: /etc/passwd: an absolute path leaves the repository",
        "docs/page.md: file:///etc/passwd: a file: link leaves the repository",
        "docs/page.md: ../../outside.md: leaves the repository",
        "docs/page.md: treevu frobnicate: no such command",
        "docs/page.md: treevu jobs purge: no such command",
        "docs/page.md: make deploy: no such target in the Makefile",
        "docs/page.md: TREEVU_NO_SUCH: no such setting",
    ]
    assert problems == expected
