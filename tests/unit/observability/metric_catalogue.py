"""What the code exports to Prometheus, and what a PromQL expression asks of it.

Shared by the alert and dashboard tests: an alert or a panel on a metric the code does not export
(a typo, a renamed counter, a label that does not exist) shows nothing and never fires, which is
worse than no alert, because it looks like one.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from functools import lru_cache

import promql_parser

import cdr_mediation

# Labels Prometheus attaches to every scraped series (target labels), whatever the code exports.
TARGET_LABELS = frozenset({"job", "instance"})


@lru_cache(maxsize=1)
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name a scrape of a process of this project can show, with its label names.

    Imports every module under `cdr_mediation` (metrics are registered at import) and reads the
    default registry, which is what `observability/metrics.py` and the portal's `/metrics` serve.
    Names are expanded as the text exposition format writes them: a counter `x` is `x_total`, a
    histogram `h` is `h_bucket` (plus label `le`), `h_count` and `h_sum`."""
    from prometheus_client import REGISTRY

    for module in pkgutil.walk_packages(cdr_mediation.__path__, "cdr_mediation."):
        importlib.import_module(module.name)
    # prometheus-client keeps the declared label names only on the metric objects (no public
    # accessor); its collectors of process and GC metrics declare none.
    labels_of = {name: frozenset(getattr(collector, "_labelnames", ()))
                 for collector, names in REGISTRY._collector_to_names.items() for name in names}
    series: dict[str, frozenset[str]] = {}
    for family in REGISTRY.collect():
        labels = labels_of.get(family.name, frozenset()) | {k for s in family.samples for k in s.labels}
        if family.type == "counter":
            names = {f"{family.name}_total": labels, f"{family.name}_created": labels}
        elif family.type == "histogram":
            names = {f"{family.name}_bucket": labels | {"le"}, f"{family.name}_count": labels,
                     f"{family.name}_sum": labels, f"{family.name}_created": labels}
        elif family.type == "summary":
            names = {family.name: labels | {"quantile"}, f"{family.name}_count": labels,
                     f"{family.name}_sum": labels, f"{family.name}_created": labels}
        elif family.type == "info":
            names = {f"{family.name}_info": labels}
        else:  # gauge, unknown, stateset
            names = {family.name: labels}
        series.update({name: frozenset(label_names) for name, label_names in names.items()})
    return series


@dataclass
class Selector:
    metric: str | None
    labels: set[str]


@dataclass
class Usage:
    """What one expression asks of the exported series."""

    selectors: list[Selector] = field(default_factory=list)
    grouping: list[tuple[set[str], set[str]]] = field(default_factory=list)  # (by-labels, metrics below)


def usage(expr: str) -> Usage:
    """Parse `expr` (raises ValueError if it is not PromQL) and collect its selectors and the
    `by (...)` labels of its aggregations with the metrics they aggregate."""
    ast = promql_parser.parse(expr)
    found = Usage()

    def metrics_below(node) -> set[str]:
        names: set[str] = set()

        def visit(n):
            if isinstance(n, promql_parser.VectorSelector) and n.name:
                names.add(n.name)

        promql_parser.walk(node, visit)
        return names

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
            found.selectors.append(Selector(node.name or None, labels))
        elif isinstance(node, promql_parser.AggregateExpr):
            modifier = node.modifier
            if modifier is not None and modifier.type == promql_parser.AggModifierType.By:
                found.grouping.append((set(modifier.labels), metrics_below(node)))

    promql_parser.walk(ast, visit)
    return found


def problems(expr: str, where: str) -> list[str]:
    """Everything in `expr` that no exported series can satisfy, as readable sentences."""
    series = exported_series()
    try:
        used = usage(expr)
    except ValueError as exc:
        return [f"{where}: not PromQL: {exc}"]
    found: list[str] = []
    for selector in used.selectors:
        if selector.metric is None:
            found.append(f"{where}: a selector without a metric name")
            continue
        if selector.metric not in series:
            found.append(f"{where}: metric {selector.metric!r} is not exported by cdr_mediation")
            continue
        unknown = selector.labels - series[selector.metric] - TARGET_LABELS
        if unknown:
            found.append(f"{where}: {selector.metric} has no label(s) {sorted(unknown)}")
    for by_labels, metrics in used.grouping:
        known = set(TARGET_LABELS).union(*(series.get(m, frozenset()) for m in metrics))
        if by_labels - known:
            found.append(f"{where}: `by ({', '.join(sorted(by_labels - known))})` is a label of none of "
                         f"{sorted(metrics)}")
    return found


TEMPLATE_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")
