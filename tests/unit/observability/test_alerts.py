"""The Prometheus alert rules (observability/prometheus/alerts.yml) and their runbooks.

1. promtool: `check rules` (syntax, PromQL, templates) and `test rules` (alerts.test.yml: the
   alerts fire when they should and not before). promtool comes from Debian's `prometheus` package,
   unpacked into .venv/bin by scripts/bootstrap; without it these two tests skip, except under CI,
   where they fail (a green CI must mean the rules were checked).
2. Without promtool as well: the file's structure, every expression parses, and every metric and
   label an alert uses is one the code exports (metric_catalogue.py).
3. Runbooks: each alert links docs/runbooks/<alert>.md, which exists, names the alert and is
   indexed in docs/runbooks/README.md; every `cdrmed` command in a runbook parses with the real
   command-line parser.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.observability.metric_catalogue import TEMPLATE_LABEL, exported_series, problems, usage

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "observability" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((ROOT / "observability" / "prometheus").glob("*.test.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks"
SEVERITIES = {"critical", "warning"}


def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        beside_python = Path(sys.executable).parent / "promtool"
        found = str(beside_python) if beside_python.exists() else None
    if not found:
        message = "promtool not found (scripts/bootstrap installs it into .venv/bin; or set PROMTOOL)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def alert_rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    assert RULE_TESTS, "no promtool rule tests found"
    result = subprocess.run([promtool(), "test", "rules", *[t.name for t in RULE_TESTS]], cwd=RULE_TESTS[0].parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_file_is_a_rule_group_file_of_alerts() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group["name"]
        assert group["rules"], f"group {group['name']} is empty"
        for rule in group["rules"]:
            assert "alert" in rule and "record" not in rule, rule


def test_alert_names_are_unique_and_in_the_domains_convention() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert all(re.fullmatch(r"Cdr[A-Z][A-Za-z]+", name) for name in names), names


def test_every_alert_has_severity_summary_description_and_its_runbook() -> None:
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), name
        assert annotations.get("runbook_url") == f"docs/runbooks/{name}.md", name


def test_every_expression_parses() -> None:
    for rule in alert_rules():
        usage(rule["expr"])  # raises on anything that is not PromQL


def test_every_metric_and_label_in_an_alert_is_exported_by_the_code() -> None:
    found = [problem for rule in alert_rules() for problem in problems(rule["expr"], rule["alert"])]
    assert not found, "\n".join(found)


def test_annotations_name_only_labels_the_alert_can_carry() -> None:
    series = exported_series()
    found = []
    for rule in alert_rules():
        used = usage(rule["expr"])
        carried = set(rule.get("labels", {})).union(*(series[s.metric] for s in used.selectors if s.metric in series))
        for text in rule.get("annotations", {}).values():
            found += [f"{rule['alert']}: $labels.{label}" for label in TEMPLATE_LABEL.findall(text)
                      if label not in carried]
    assert not found, found


def test_the_catalogue_sees_what_the_code_registers() -> None:
    # Guards the guard: if the catalogue came back empty or unexpanded, the test above would
    # pass vacuously or fail for the wrong reason.
    series = exported_series()
    assert series["cdr_ingest_dead_letters_total"] == {"reason"}
    assert "le" in series["cdr_ingest_batch_seconds_bucket"]
    assert "cdr_ingest_dead_letters" not in series  # a counter is only scraped with _total
    assert "process_resident_memory_bytes" in series


def test_an_unknown_metric_or_label_is_reported() -> None:
    assert problems('sum(rate(cdr_ingest_dead_leters_total[5m])) > 0', "x")
    assert problems('cdr_ingest_dead_letters_total{reasn="bad"}', "x")
    assert problems('sum by (operator_id) (cdr_ingest_dead_letters_total)', "x")
    assert problems('cdr_ingest_cdrs{operator_id="a"}', "x")  # counter without _total
    assert not problems('sum by (reason) (rate(cdr_ingest_dead_letters_total{job="w"}[5m]))', "x")


# --- runbooks ---------------------------------------------------------------------------------

def runbook_files() -> dict[str, Path]:
    return {path.stem: path for path in RUNBOOKS.glob("*.md") if path.name != "README.md"}


def test_every_alert_has_a_runbook_that_names_it_and_no_runbook_is_orphaned() -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    books = runbook_files()
    assert alerts - set(books) == set(), "alerts without a runbook"
    assert set(books) - alerts == set(), "runbooks of no alert"
    for name, path in books.items():
        text = path.read_text()
        assert text.startswith(f"# {name}"), f"{path.name} must start with its alert's name as the title"
        for section in ("## What it means", "## Impact", "## First checks", "## Resolve", "## Escalate",
                        "## Never"):
            assert section in text, f"{path.name} lacks {section!r}"


def test_the_runbook_index_links_every_runbook() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name in runbook_files():
        assert f"]({name}.md)" in index, f"README.md does not link {name}.md"


# Shell variables the runbooks use as placeholders, and a value of the right form for each.
PLACEHOLDERS = {"OP": "op-a", "DAY": "2026-11-03", "ACTOR": "jane.doe", "TICKET": "OPS-1234",
                "FROM_SEQ": "1", "TO_SEQ": "10", "HEAD": "12:" + "0" * 64, "OUT": "/tmp/out.jsonl"}
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def cdrmed_commands(text: str) -> list[tuple[str, bool]]:
    """(command, runnable): lines of code blocks are commands to run as they are; an inline
    `cdrmed …` span in prose may name a command without its required options."""
    commands, in_block = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        candidates = [line] if in_block else CODE_SPAN.findall(line)
        for candidate in candidates:
            candidate = candidate.strip()
            candidate = re.sub(r"^(\S*/)?\.venv/bin/", "", candidate)
            if candidate.startswith("cdrmed "):
                commands.append((candidate, in_block))
    return commands


def acceptable(command: str, runnable: bool) -> str | None:
    """None if the command is right for where it stands, else why not. A named command in prose
    may leave out required options (`--operator` …), never a subcommand or a valid value."""
    error = parse_cdrmed(command)
    if error and not runnable and re.fullmatch(r"the following arguments are required: --[\w-]+(, --[\w-]+)*", error):
        return None
    return error


def parse_cdrmed(command: str) -> str | None:
    """None if the real parser accepts `command`, else its error."""
    from cdr_mediation.cli import build_parser

    for name, value in PLACEHOLDERS.items():
        command = command.replace(f'"${name}"', value).replace(f"${name}", value)
    argv = shlex.split(command, comments=True)[1:]
    parser = build_parser()
    errors: list[str] = []
    parser.exit = lambda status=0, message=None: (_ for _ in ()).throw(SystemExit(status))  # noqa: E731

    def error(message, _errors=errors):
        _errors.append(message)
        raise SystemExit(2)

    for action in [parser, *_subparsers(parser)]:
        action.error = error
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        return errors[0] if errors else f"exit {exc.code}"
    return None


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _subparsers(sub)


def test_every_cdrmed_command_in_a_runbook_parses() -> None:
    found, count = [], 0
    for path in sorted(RUNBOOKS.glob("*.md")):
        for command, runnable in cdrmed_commands(path.read_text()):
            count += 1
            error = acceptable(command, runnable)
            if error:
                found.append(f"{path.name}: {command!r}: {error}")
    assert count > 20, "the runbooks should show the commands they ask for"
    assert not found, "\n".join(found)


def test_a_wrong_cdrmed_command_is_reported() -> None:
    assert parse_cdrmed("cdrmed export status --operator op-a") is None
    assert parse_cdrmed("cdrmed export resume --operator op-a --day 2026-11-03") is not None  # no --actor
    assert parse_cdrmed("cdrmed exports status") is not None
    assert parse_cdrmed('cdrmed reconcile --day "$DAY"') is None
    assert parse_cdrmed('cdrmed reconcile --day yesterday') is not None  # not a date
    assert acceptable("cdrmed export resume", runnable=False) is None  # named in prose
    assert acceptable("cdrmed export resume", runnable=True) is not None  # in a code block
    assert acceptable("cdrmed export", runnable=False) is not None  # no such command
