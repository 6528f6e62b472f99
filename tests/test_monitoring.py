"""The shipped monitoring: alert rules (and their promtool unit tests) and the Grafana
dashboard name only metrics the tool really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl.metrics import build_registry
from etl.report import SyncReport

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
METRIC = re.compile(r"\breferrals_etl_[a-z_]+\b")


def _exported() -> set[str]:
    """Every metric name the tool writes, pushes or serves (one report of every kind)."""
    report = SyncReport(run_id=1, status="failed", by_status={200: 1, 429: 1})
    registry = build_registry(report, last_success=1.0)
    names = {family.name for family in registry.collect()}
    assert "referrals_etl_last_success_timestamp_seconds" in names
    return names


def _rule_exprs() -> list[tuple[str, str]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text("utf-8"))
    return [
        (rule["alert"], str(rule["expr"]))
        for group in document["groups"]
        for rule in group["rules"]
    ]


def _dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            found.append(
                (f"${variable['name']}", query["query"] if isinstance(query, dict) else query)
            )
    return found


def test_every_dashboard_query_names_a_metric_the_tool_exports() -> None:
    """Each Grafana query uses only exported metrics, and the run, requests and age are shown."""
    exported = _exported()
    assert DASHBOARDS, "deploy/grafana/ holds the dashboard"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text("utf-8"))
        queries = _dashboard_queries(dashboard)
        assert len(queries) >= 6, path
        used = set()
        for where, expr in queries:
            names = set(METRIC.findall(expr))
            assert names, f"{path.name} {where}: no referrals_etl_ metric in {expr!r}"
            assert names <= exported, f"{path.name} {where}: {names - exported} not exported"
            used |= names
        # The dashboard shows the run, its requests and its age.
        assert {
            "referrals_etl_last_success_timestamp_seconds",
            "referrals_etl_last_run_status",
            "referrals_etl_run_referrals",
            "referrals_etl_run_requests",
        } <= used


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text("utf-8"))
    rules: list[dict[str, Any]] = [rule for group in document["groups"] for rule in group["rules"]]
    assert len(rules) >= 5
    return rules


def test_every_alert_names_only_metrics_the_tool_exports() -> None:
    """Each alert expression names at least one referrals_etl_ metric, all of them exported."""
    exported = _exported()
    for rule in _alert_rules():
        names = set(METRIC.findall(str(rule["expr"])))
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)


def test_every_alert_has_a_severity() -> None:
    """Each alert is labelled critical, warning or info."""
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]


def test_every_alert_says_what_to_do() -> None:
    """Each alert has a summary and a description with a "What to do" part."""
    for rule in _alert_rules():
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert "What to do" in rule["annotations"]["description"], rule["alert"]


def test_a_critical_alert_fires_when_the_metrics_are_missing() -> None:
    """An absent() alert, critical, catches a job that stopped exporting altogether."""
    rules = _alert_rules()
    absent = [r["alert"] for r in rules if "absent(" in str(r["expr"])]
    assert absent, "an alert must fire when the metrics are missing altogether"
    assert {r["labels"]["severity"] for r in rules if r["alert"] in absent} == {"critical"}


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    """`promtool test rules deploy/prometheus/tests.yaml` (.ci/run installs promtool)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs it (Debian package prometheus)")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yaml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "tests.yaml").read_text()))
    assert tested_alerts == {name for name, _ in _rule_exprs()}, "every rule has a unit test"
