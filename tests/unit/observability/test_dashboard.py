"""The Grafana dashboard (observability/grafana/cdr-mediation.json): a dashboard JSON model
Grafana imports, with the commerce, regulator and SRE rows, one Prometheus data source chosen by
a variable, and queries only on metrics and labels the code exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.unit.observability.metric_catalogue import problems

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "observability" / "grafana" / "cdr-mediation.json"
# Grafana's own variables and this dashboard's, replaced by values of the same form before parsing.
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d", "$operator": ".*", "$job": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def queries() -> list[tuple[str, str]]:
    return [(f"panel {p['id']} {p['title']!r}", t["expr"]) for p in panels() for t in p.get("targets", [])]


def substituted(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


def test_it_is_a_dashboard_model() -> None:
    model = dashboard()
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 36
    assert model["uid"] and model["title"]
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels():
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_the_three_rows() -> None:
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Commerce", "Regulator", "SRE"]


def test_one_prometheus_datasource_variable_used_by_every_query() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    for name in ("job", "operator"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"


def test_every_panel_with_data_has_a_query_and_a_description() -> None:
    for panel in panels():
        if panel["type"] in ("row", "text"):
            continue
        assert panel.get("targets"), panel["title"]
        assert panel.get("description"), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_metric_and_label_in_a_query_is_exported_by_the_code() -> None:
    found = [problem for where, expr in queries() for problem in problems(substituted(expr), where)]
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    for name in ("job", "operator"):
        metric_query = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables[name]["definition"])
        assert metric_query, variables[name]["definition"]
        found += problems(f"{metric_query[1]}{{{metric_query[2]}!=''}}", f"variable {name}")
    assert not found, "\n".join(found)


def test_a_broken_query_would_be_caught() -> None:
    assert problems(substituted('sum(rate(cdr_ingest_cdr_total[$__rate_interval]))'), "x")
