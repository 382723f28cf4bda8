"""The shipped Prometheus alert rules: promtool accepts them, every metric they use is
exported by a real app's /api/v1/metrics, every alert has a severity and annotations, and
the file is part of the installed package."""

from __future__ import annotations

import fnmatch
import importlib.resources
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.test_api_support import ApiCluster

from lucid_sessions.api import ApiSettings
from lucid_sessions.api.auth import Principal
from lucid_sessions.errors import UnauthenticatedError

RULES = Path(__file__).resolve().parents[1] / "src/lucid_sessions/alerts/lucid-sessions.rules.yml"
SEVERITIES = {"critical", "warning", "info"}
# Series Prometheus makes itself, not the app.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# PromQL functions, aggregations and keywords that can precede "(" or stand alone.
_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_DURATION = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions (followed by
    ``(``), keywords, label names (inside ``{}`` or ``by (...)``), or durations."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _DURATION.sub("[]", text)
    # label lists of by/without/on/ignoring/group_left/group_right
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ()", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_the_extractor() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (instance, le) (rate(a_bucket{x="y z"}[10m]))) > 5'
    ) == {"a_bucket"}
    assert metric_names("delta(a[5m]) > 0.05 * 300 * b") == {"a", "b"}
    assert metric_names('up{job=~"x.*"} == 0 and on (instance) c offset 5m') == {"up", "c"}
    assert metric_names("predict_linear(f[6h], 24 * 3600) < g") == {"f", "g"}


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _promtool() -> str | None:
    found = shutil.which("promtool")
    if found is not None:
        return found
    installer = Path(__file__).resolve().parents[1] / "scripts/install-test-deps.sh"
    if os.geteuid() == 0 and installer.exists():
        subprocess.run(["sh", str(installer)], check=False, capture_output=True, timeout=600)
    return shutil.which("promtool")


def test_promtool_accepts_the_rules() -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip(
            "promtool missing (Debian package prometheus) and not root to install it: "
            "run scripts/install-test-deps.sh as root"
        )
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_every_alert_has_a_severity_annotations_and_a_duration() -> None:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    names = [group["name"] for group in document["groups"]]
    assert names == ["lucid-sessions-critical", "lucid-sessions-warning", "lucid-sessions-info"]
    seen: set[str] = set()
    for group in document["groups"]:
        group_severity = group["name"].rsplit("-", 1)[1]
        for rule in group["rules"]:
            assert "alert" in rule, rule
            assert rule["alert"] not in seen
            seen.add(rule["alert"])
            assert rule["labels"]["severity"] == group_severity, rule["alert"]
            assert rule["labels"]["severity"] in SEVERITIES
            assert "for" in rule, rule["alert"]
            annotations = rule["annotations"]
            assert annotations["summary"].strip() and annotations["description"].strip()
            assert "$labels." in annotations["summary"] + annotations["description"]
    assert {"LucidServiceDown", "LucidStorageBelowReserve", "LucidAuditChainBroken"} <= seen
    assert {"LucidAnchoringFailing", "LucidPipelineBehind", "LucidDroppedFrames"} <= seen
    assert {"LucidStorageFreeSpaceFalling", "LucidAuthFailuresRising"} <= seen
    assert {"LucidConfigurationReloaded", "LucidMasterKeyRotated"} <= seen


def _exported_samples(api: ApiCluster) -> dict[str, list[Any]]:
    text = api.client.get("/api/v1/metrics").text
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def test_every_metric_a_rule_uses_is_exported(tmp_path: Path) -> None:
    settings = ApiSettings(evidence_dir=tmp_path)
    with ApiCluster(tmp_path, settings=settings) as api:
        sid = api.import_session(20, fps=2).session_id
        api.create()
        api.client.get(f"/api/v1/sessions/{sid}")
        live = api.create()["session_id"]
        api.client.post(f"/api/v1/sessions/{live}/start")
        api.metrics.auth_refused("token", "missing")
        try:
            samples = _exported_samples(api)
        finally:
            api.client.post(f"/api/v1/sessions/{live}/stop")
        api.wait_for(live, ("completed", "interrupted", "failed"))
    used = set().union(*(metric_names(rule["expr"]) for rule in _rules()))
    assert used - PROMETHEUS_SERIES, "the rules use none of the app's metrics"
    missing = sorted(name for name in used - PROMETHEUS_SERIES if name not in samples)
    assert not missing, f"rules use metrics the app does not export: {missing}"
    # and the values behind them are real, not placeholders
    up = {s.labels["service"]: s.value for s in samples["lucid_service_up"]}
    assert up == {"pipeline": 1, "recorder": 1, "processor": 1}
    assert samples["lucid_audit_chain_ok"][0].value == 1
    assert samples["lucid_audit_chain_entries"][0].value >= 1  # the POSTs were audited
    assert samples["lucid_storage_reserve_bytes"][0].value > 0
    assert samples["lucid_config_loaded_timestamp_seconds"][0].value > 0
    master = tmp_path / "keys" / "master.key"
    assert samples["lucid_master_key_rotated_timestamp_seconds"][0].value == pytest.approx(
        master.stat().st_mtime
    )
    assert samples["lucid_pipeline_queue_capacity"][0].value > 0


def test_service_down_and_refusals_show(tmp_path: Path) -> None:
    async def refuse_sessions(request: Any, permission: str) -> Principal:
        if permission.startswith("sessions:"):
            raise UnauthenticatedError("no", details={"reason": "expired"})
        return Principal("ops", "admin")

    with ApiCluster(tmp_path, authorizer=refuse_sessions) as api:
        api.states["recorder"] = "failed"
        assert api.client.get("/api/v1/sessions").status_code == 401
        samples = _exported_samples(api)
    up = {s.labels["service"]: s.value for s in samples["lucid_service_up"]}
    assert up["recorder"] == 0 and up["pipeline"] == 1
    refusals = {
        (s.labels["kind"], s.labels["reason"]): s.value
        for s in samples["lucid_auth_refusals_total"]
    }
    assert refusals == {("token", "expired"): 1}


def test_a_broken_audit_chain_is_reported(tmp_path: Path) -> None:
    import sqlite3

    with ApiCluster(tmp_path) as api:
        api.create()
        api.create()
        assert _exported_samples(api)["lucid_audit_chain_ok"][0].value == 1
        db = sqlite3.connect(tmp_path / "metadata.db")
        with db:
            changed = db.execute("UPDATE audit_log SET subject='mallory' WHERE seq=1").rowcount
        db.close()
        assert changed == 1
        api.create()
        assert _exported_samples(api)["lucid_audit_chain_ok"][0].value == 1  # seq 1 checked
        # the tip is re-read on every scrape: editing it is seen
        with sqlite3.connect(tmp_path / "metadata.db") as db:
            last = db.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]
            db.execute("UPDATE audit_log SET hash=? WHERE seq=?", ("f" * 64, last))
        assert _exported_samples(api)["lucid_audit_chain_ok"][0].value == 0


def test_anchoring_outcomes_are_mirrored() -> None:
    from lucid_sessions.observability import Metrics

    metrics = Metrics()
    metrics.observe_pipeline({"anchoring": {"failed": 2, "confirmed": 3, "running": 1}})
    metrics.observe_pipeline({"anchoring": {"failed": 3, "confirmed": 3, "running": 0}})
    metrics.observe_pipeline({"anchoring": {"failed": 1, "confirmed": 0}})  # restarted
    families = {
        f.name: f.samples for f in text_string_to_metric_families(metrics.exposition().decode())
    }
    totals = {
        s.labels["outcome"]: s.value
        for s in families["lucid_anchor_jobs"]
        if s.name.endswith("_total")
    }
    assert totals == {"failed": 4, "confirmed": 3, "retried": 0}


def test_the_rules_are_installed_with_the_package() -> None:
    shipped = importlib.resources.files("lucid_sessions") / "alerts/lucid-sessions.rules.yml"
    assert shipped.is_file()
    assert shipped.read_text(encoding="utf-8") == RULES.read_text(encoding="utf-8")
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"alerts/*.yml"' in pyproject
    # the package-data glob (setuptools, relative to the package) matches the file
    assert fnmatch.fnmatch("alerts/lucid-sessions.rules.yml", "alerts/*.yml")
