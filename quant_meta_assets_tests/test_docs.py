"""The documentation a person reads first: the README stays short, every relative link of the
repository's Markdown resolves, and no document reads like a development log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quant_meta_assets_tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
MAX_README_LINES = 200
# written on other branches (the publication contract, the report's guide and screenshot, the
# operator's runbook): each is checked like every other link as soon as it exists
WRITTEN_ELSEWHERE = {REPO_ROOT / "docs" / name
                     for name in ("publication.md", "report.md", "report-top.png", "deploy.md")}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# how a development log reads ("session" alone is also a trading session, so only its log forms)
DEVELOPMENT_LOG = re.compile(
    r"this phase|previous phase|previous session (found|measured)|(start|end) of this session|"
    r"issue \d+ measured|run a of|final code of|the issue's measurements|before this (change|phase|session)",
    re.IGNORECASE,
)


def markdown_files() -> list[Path]:
    skip = {".venv", ".git", ".dagster_home", "node_modules", ".hypothesis", ".pytest_cache"}
    return sorted(p for p in REPO_ROOT.rglob("*.md")
                  if not skip & set(p.relative_to(REPO_ROOT).parts) and "egg-info" not in str(p))


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)  # code blocks
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_readme_is_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_states_both_test_durations_and_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    for needle in ("make run", "make test`", "make test-fast", "2 min 17 s", "min of pytest"):
        assert needle in text, needle


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file = (path.parent / target.split("#")[0]).resolve()
        if file in WRITTEN_ELSEWHERE and not file.exists():
            continue
        if not file.exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO_ROOT)}: broken links {broken}"


def test_the_readme_links_every_moved_document() -> None:
    links = {t.split("#")[0] for t in relative_links(README)}
    for doc in ("ARCHITECTURE.md", "docs/strategies.md", "docs/cluster.md", "docs/deployment.md",
                "docs/performance.md", "docs/costs.md", "docs/failure-modes.md", "docs/testing.md",
                "docs/publication.md"):
        assert doc in links, doc


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_development_log_wording(path: Path) -> None:
    hits = [f"line {i}: {line.strip()}" for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if DEVELOPMENT_LOG.search(line)]
    assert not hits, f"{path.relative_to(REPO_ROOT)}: " + "; ".join(hits)


def test_the_wording_check_knows_a_log_from_a_trading_session() -> None:
    assert DEVELOPMENT_LOG.search("Run A of the previous session (0.56x)")
    assert DEVELOPMENT_LOG.search("measured with the final code of this phase")
    assert DEVELOPMENT_LOG.search("and before this change a plug-in's data did not ship")
    assert not DEVELOPMENT_LOG.search("nothing is published for this session; it stays the previous session's")


def test_the_link_checker_finds_a_broken_link(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [web](https://example.com) [anchor](#x) [gone](docs/none.md)\n"
                    "```\n[in code](nothing.md)\n```\n")
    assert relative_links(page) == ["page.md", "docs/none.md"]
