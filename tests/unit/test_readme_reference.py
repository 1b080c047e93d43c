"""The README's reference sections match the code: rule examples, metrics, commands and links.

Each example rule file in the README is loaded through the same loader and route check as
`cloudpilot check --config deploy/cloudpilot.toml`; the metrics tables are compared with the
families `Metrics` registers; the command table with the argparse parser of `cloudpilot`.
"""

from __future__ import annotations

import argparse
import re
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from daemon.cli import _parser
from daemon.notify.alerts import unknown_routes
from daemon.observability.metrics import Metrics
from daemon.registry import vocabulary
from daemon.rules.compiled import RuleSet
from daemon.rules.loader import check_rules, load_rules

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The pages rewritten with the README; their links are checked too.
PAGES = (README, ROOT / "docs" / "simulator.md", ROOT / "docs" / "development.md")
EXAMPLE_CONFIG = ROOT / "deploy" / "cloudpilot.toml"

FENCE = re.compile(r"^\s*```(\S*)\s*$")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
METRIC_ROW = re.compile(r"^\|\s*`(cloudpilot_\w+)`\s*\|([^|]*)\|([^|]*)\|")
COMMAND_ROW = re.compile(r"^\|\s*`cloudpilot (\w+)([^`]*)`\s*\|")


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of a Markdown file: its language, first line of text, and text."""

    lang: str
    line: int
    text: str


def fenced_blocks(path: Path) -> list[Block]:
    """Return the fenced code blocks of a Markdown file, with the line their text starts on."""
    blocks: list[Block] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line)
        if lang is None:
            if fence:
                lang, start, body = fence.group(1), number + 1, []
        elif fence and not fence.group(1):
            blocks.append(Block(lang, start, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"{path.name}:{start}: a fenced block is never closed"
    return blocks


def prose_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield the numbered lines of a Markdown file that are outside fenced blocks."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def section(path: Path, title: str) -> list[str]:
    """Return the lines of the `## title` section of a Markdown file, up to the next `## `."""
    lines = [line for _, line in prose_lines(path)]
    start = lines.index(f"## {title}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1 : end]


RULE_EXAMPLES = [
    block
    for block in fenced_blocks(README)
    if block.lang == "yaml" and ("rules:" in block.text or "guard:" in block.text)
]


def example_routes() -> list[str]:
    """Return the notifier routes the example config defines."""
    with EXAMPLE_CONFIG.open("rb") as file:
        return list(tomllib.load(file)["notifiers"])


def load_example(block: Block, folder: Path) -> RuleSet:
    """Load one README example as a rule file; fail naming its README lines."""
    path = folder / f"readme-line-{block.line}.yaml"
    path.write_text(block.text, encoding="utf-8")

    def in_readme(line: str) -> str:
        return re.sub(
            rf"^{re.escape(str(path))}:(\d+)",
            lambda m: f"README.md:{block.line + int(m[1]) - 1}",
            line,
        )

    problems = [in_readme(str(problem)) for problem in check_rules([path], vocabulary())]
    assert problems == [], "the README's example rule file does not load"
    rules = load_rules([path], vocabulary())
    unknown = [in_readme(line) for line in unknown_routes(rules, example_routes())]
    assert unknown == [], f"the example names routes {EXAMPLE_CONFIG.name} does not define"
    return rules


@pytest.mark.parametrize("block", RULE_EXAMPLES, ids=[f"README.md:{b.line}" for b in RULE_EXAMPLES])
def test_readme_rule_example_loads(block: Block, tmp_path: Path) -> None:
    load_example(block, tmp_path)


def test_readme_shows_every_kind_of_rule_and_the_guard(tmp_path: Path) -> None:
    loaded = [load_example(block, tmp_path) for block in RULE_EXAMPLES]
    assert any(rules.rules for rules in loaded), "no event rule example"
    assert any(rules.autoscale for rules in loaded), "no autoscale rule example"
    assert any(rules.budgets for rules in loaded), "no budget rule example"
    assert any(rules.guard is not None for rules in loaded), "no guard example"


def test_readme_toml_examples_match_the_example_config() -> None:
    with EXAMPLE_CONFIG.open("rb") as file:
        example = tomllib.load(file)
    blocks = [block for block in fenced_blocks(README) if block.lang == "toml"]
    for block in blocks:
        shown = tomllib.loads(textwrap.dedent(block.text))
        for name, route in shown.get("notifiers", {}).items():
            assert route == example["notifiers"].get(name), f"README.md:{block.line}: {name}"


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family as scraped: its name, type and label names."""

    name: str
    type: str
    labels: frozenset[str]


def exported_families() -> dict[str, Family]:
    """Return every family a fresh `Metrics` registers, by its name as scraped."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    found: dict[str, Family] = {}
    for gauge in metrics.state.gauges:
        found[gauge.name] = Family(gauge.name, "gauge", frozenset(gauge.labelnames))
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, MetricWrapperBase):
            continue
        for family in wrapper.describe():
            suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
            labels = set(wrapper._labelnames)
            if family.type == "info":
                labels |= {
                    name
                    for collected in registry.collect()
                    if collected.name == family.name
                    for sample in collected.samples
                    for name in sample.labels
                }
            found[family.name + suffix] = Family(
                family.name + suffix, family.type, frozenset(labels)
            )
    # Every family registered is reached through an attribute of Metrics.
    assert {family.name for family in registry.collect()} == {
        name.removesuffix("_total").removesuffix("_info") for name in found
    }
    return found


def readme_families() -> dict[str, Family]:
    """Return the metric rows of the README's "Endpoints and metrics" section."""
    found: dict[str, Family] = {}
    for line in section(README, "Endpoints and metrics"):
        row = METRIC_ROW.match(line)
        if row is None:
            continue
        name, kind, labels = row[1], row[2].strip(), set(re.findall(r"`(\w+)`", row[3]))
        assert name not in found, f"README lists {name} twice"
        found[name] = Family(name, kind, frozenset(labels))
    return found


def test_readme_metrics_are_exactly_the_exported_families() -> None:
    exported, listed = exported_families(), readme_families()
    assert sorted(exported.keys() - listed.keys()) == [], "exported but not in the README"
    assert sorted(listed.keys() - exported.keys()) == [], "in the README but not exported"


def test_readme_metrics_have_their_type_and_labels() -> None:
    exported, listed = exported_families(), readme_families()
    wrong = [
        f"{name}: README says {listed[name].type} {sorted(listed[name].labels)}, "
        f"the daemon exports {family.type} {sorted(family.labels)}"
        for name, family in sorted(exported.items())
        if name in listed and listed[name] != family
    ]
    assert wrong == []


def subcommands() -> dict[str, set[str]]:
    """Return each `cloudpilot` subcommand with its long options, from the argparse parser."""
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: {
            option
            for action in sub._actions
            for option in action.option_strings
            if option.startswith("--") and option != "--help"
        }
        for name, sub in commands.choices.items()
    }


def test_readme_command_table_names_every_subcommand_and_its_options() -> None:
    listed: dict[str, set[str]] = {}
    for line in section(README, "Commands"):
        row = COMMAND_ROW.match(line)
        if row is not None:
            listed[row[1]] = set(re.findall(r"--[a-z][a-z-]*", row[2]))
    assert listed == subcommands()


def slug(title: str) -> str:
    """Return the anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Return the anchors of a Markdown file's headings."""
    return {slug(m[2]) for _, line in prose_lines(path) if (m := HEADING.match(line))}


def local_links(path: Path) -> Iterator[tuple[int, str]]:
    """Yield the line and target of every relative link outside fenced blocks."""
    for number, line in prose_lines(path):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                yield number, target


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_relative_links_point_to_existing_files(page: Path) -> None:
    own = {p.resolve() for p in PAGES}
    broken: list[str] = []
    for number, target in local_links(page):
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page.resolve()
        if not resolved.exists():
            broken.append(f"{page.name}:{number}: {target}: no such file")
        elif anchor and resolved in own and anchor not in anchors(resolved):
            broken.append(f"{page.name}:{number}: {target}: no such heading")
    assert broken == []
