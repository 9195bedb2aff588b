"""The monitoring tree (infra/monitoring) checked by the real tools and against the code.

Prometheus: `promtool check config`, `check rules` and `test rules` (promtool from Debian's
`prometheus` package). Every PromQL expression of the rules and the dashboards parses
(promql-parser). Grafana, Loki and Promtail have no binary here: their files get structural
checks (datasource uids, panel ids and queries; known top-level keys; pipeline stage names;
labels only `service` and `level`). The agreement test starts `dex up` (embedded) on free
ports, trades through `dex.client`, scrapes every service's /metrics and requires each metric
named in the rules and dashboards to be exported (a family declared by `# TYPE` counts: a
labelled metric has no sample until its first label value).

Every checker returns a list of problems and is also run on a broken sample, which it must
reject: a check that cannot fail proves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dex.runtime.settings import SERVICES
from tests.services.test_smoke import free_base
from tests.support.dex_process import DexProcess, wait_on_process
from tests.support.trading import trader

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "infra" / "monitoring"
PROM = MON / "prometheus"
RULES = PROM / "alert-rules.yml"
DASHBOARDS = sorted((MON / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = MON / "grafana" / "provisioning" / "datasources.yml"
LOKI = MON / "loki" / "loki-config.yml"
PROMTAIL = MON / "promtail" / "promtail-config.yml"
PORTS = {"gateway": 8080, "matching-engine": 8081, "market-data": 8082}
PORTS |= {"risk-engine": 8083, "persistence": 8084}
SEVERITIES = {"P0", "P1", "P2", "P3"}
# series Prometheus writes itself for every target (not exported by a service)
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _tool(name: str, how: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing under CI=true ({how})")
        pytest.skip(f"{name} is missing ({how})")
    return path


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    tool = _tool("promtool", "apt-get install -y --no-install-recommends prometheus")
    return subprocess.run(
        [tool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def _promql() -> Any:
    try:
        import promql_parser
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("promql-parser is missing under CI=true (pip install promql-parser)")
        pytest.skip("promql-parser is missing (pip install promql-parser)")
    return promql_parser


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# ------------------------------------------------------------------ what the files name


def rule_exprs(rules: Any) -> list[tuple[str, str]]:
    return [
        (r.get("alert") or r.get("record"), r["expr"]) for g in rules["groups"] for r in g["rules"]
    ]


def dashboard_exprs(dashboard: Any) -> list[tuple[str, str, str]]:
    """(panel title, datasource type, expr) of every target of every panel."""
    return [
        (p["title"], t.get("datasource", p.get("datasource", {})).get("type", ""), t["expr"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        if "expr" in t
    ]


def promql_exprs() -> list[tuple[str, str]]:
    found = rule_exprs(_yaml(RULES))
    for path in DASHBOARDS:
        found += [
            (f"{path.name}: {title}", e)
            for title, kind, e in dashboard_exprs(json.loads(path.read_text()))
            if kind == "prometheus"
        ]
    return found


def metric_names(expr: str) -> set[str]:
    pp = _promql()
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            names.add(node.name)

    pp.walk(pp.parse(expr), visit)
    return names


# ------------------------------------------------------------------ Prometheus


def test_promtool_accepts_the_config_and_rejects_a_broken_one(tmp_path: Path) -> None:
    good = _promtool("check", "config", PROM / "prometheus.yml")
    assert good.returncode == 0, good.stdout + good.stderr
    broken = tmp_path / "prometheus.yml"
    broken.write_text(
        (PROM / "prometheus.yml").read_text().replace("scrape_interval: 5s", "scrape_interval: 5x")
    )
    assert _promtool("check", "config", broken).returncode != 0


def scrape_problems(config: Any) -> list[str]:
    """Every service is a job of its own on `<service>:<port>`, scraped every 5-15 s."""
    problems = []
    default = config.get("global", {}).get("scrape_interval", "1m")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for service, port in PORTS.items():
        job = jobs.get(service)
        if job is None:
            problems.append(f"no job {service}")
            continue
        targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        if targets != [f"{service}:{port}"]:
            problems.append(f"{service}: targets {targets}, expected {service}:{port}")
        interval = job.get("scrape_interval", default)
        seconds = int(interval.removesuffix("s")) if re.fullmatch(r"\d+s", interval) else -1
        if not 5 <= seconds <= 15:
            problems.append(f"{service}: scrape_interval {interval} outside 5-15 s")
    return problems


def test_every_service_is_scraped_every_5_to_15_seconds() -> None:
    config = _yaml(PROM / "prometheus.yml")
    assert scrape_problems(config) == []
    config["scrape_configs"][0]["scrape_interval"] = "30s"
    del config["scrape_configs"][1]
    assert len(scrape_problems(config)) == 2


def test_promtool_accepts_the_rules_and_rejects_broken_ones(tmp_path: Path) -> None:
    good = _promtool("check", "rules", RULES)
    assert good.returncode == 0, good.stdout + good.stderr
    broken = tmp_path / "alert-rules.yml"
    broken.write_text(RULES.read_text().replace("> 0.05", "> > 0.05", 1))
    assert _promtool("check", "rules", broken).returncode != 0


def test_the_alert_unit_tests_pass_and_catch_a_changed_threshold(tmp_path: Path) -> None:
    good = _promtool("test", "rules", PROM / "alert-rules_test.yml")
    assert good.returncode == 0, good.stdout + good.stderr
    # the same tests against rules whose ack-latency SLA moved to 200 ms must fail
    (tmp_path / "alert-rules.yml").write_text(RULES.read_text().replace("> 0.05", "> 0.2", 1))
    shutil.copy(PROM / "alert-rules_test.yml", tmp_path)
    assert _promtool("test", "rules", tmp_path / "alert-rules_test.yml").returncode != 0


REQUIRED_ALERTS = {
    "DexOrderAckLatencyP99High",  # SLA: order acknowledgement p99
    "DexMatchingLatencyP99High",  # SLA: matching latency p99
    "DexOrderErrorRateHigh",
    "DexBadEntries",
    "DexOrderPathLagHigh",  # consumer lag per stream
    "DexReadSideLagHigh",
    "DexShardDiverged",
    "DexHoldsMismatch",
    "DexSnapshotFailures",
    "DexServiceDown",
    "DexServiceNotReady",
    "DexRedisUnreachable",
    "DexPostgresUnreachable",
    "DexServiceRestarted",
}


def rule_problems(rules: Any) -> list[str]:
    problems = []
    seen: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", "?")
            seen.add(name)
            if rule.get("labels", {}).get("severity") not in SEVERITIES:
                problems.append(f"{name}: severity not one of {sorted(SEVERITIES)}")
            for key in ("summary", "runbook"):
                if not rule.get("annotations", {}).get(key):
                    problems.append(f"{name}: no {key} annotation")
    problems += [f"missing alert {a}" for a in sorted(REQUIRED_ALERTS - seen)]
    severities = {r.get("labels", {}).get("severity") for g in rules["groups"] for r in g["rules"]}
    problems += [f"no {s} alert" for s in sorted(SEVERITIES - severities)]
    return problems


def test_alerts_have_a_severity_summary_and_runbook_and_cover_the_slas() -> None:
    rules = _yaml(RULES)
    assert rule_problems(rules) == []
    rules["groups"][0]["rules"][0]["labels"]["severity"] = "critical"
    del rules["groups"][0]["rules"][0]["annotations"]["runbook"]
    rules["groups"][1]["rules"].pop()  # DexHoldsMismatch
    assert len(rule_problems(rules)) == 3


def test_every_promql_expression_parses() -> None:
    pp = _promql()
    exprs = promql_exprs()
    assert len(exprs) > 40
    errors = []
    for where, expr in exprs:
        try:
            pp.parse(expr)
        except ValueError as e:
            errors.append(f"{where}: {e}")
    assert errors == []
    with pytest.raises(ValueError):
        pp.parse("sum(rate(dex_gateway_requests_total[5m])")


# ------------------------------------------------------------------ Grafana


def grafana_problems(dashboard: Any, uids: set[str]) -> list[str]:
    problems = []
    ids = [p.get("id") for p in dashboard["panels"]]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids not unique: {ids}")
    for panel in dashboard["panels"]:
        title = panel.get("title", "?")
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        if not targets:
            problems.append(f"{title}: no query")
        for ds in [panel.get("datasource", {})] + [t.get("datasource", {}) for t in targets]:
            if ds.get("uid") not in uids:
                problems.append(f"{title}: datasource uid {ds.get('uid')!r} not provisioned")
    return problems


def test_dashboards_use_provisioned_datasources_unique_ids_and_real_queries() -> None:
    provisioned = _yaml(DATASOURCES)["datasources"]
    uids = {d["uid"] for d in provisioned}
    assert {d["type"] for d in provisioned} == {"prometheus", "loki"}
    assert {p.name for p in DASHBOARDS} == {"dex-overview.json", "matching-engine-dashboard.json"}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert grafana_problems(dashboard, uids) == [], path.name
    broken = json.loads(DASHBOARDS[0].read_text())
    broken["panels"][1]["id"] = broken["panels"][0]["id"]
    broken["panels"][2]["targets"] = []
    broken["panels"][3]["datasource"] = {"type": "prometheus", "uid": "nope"}
    assert len(grafana_problems(broken, uids)) == 3


# ------------------------------------------------------------------ Loki and Promtail

LOKI_KEYS = {
    "auth_enabled", "server", "common", "schema_config", "limits_config", "compactor",
    "ruler", "analytics", "storage_config", "ingester", "querier", "query_range",
    "frontend", "table_manager", "memberlist", "distributor", "chunk_store_config",
}  # fmt: skip
PROMTAIL_KEYS = {
    "server",
    "positions",
    "clients",
    "scrape_configs",
    "limits_config",
    "target_config",
}
STAGES = {
    "docker", "cri", "regex", "json", "logfmt", "replace", "multiline", "template", "pack",
    "timestamp", "output", "labels", "labelallow", "labeldrop", "structured_metadata",
    "metrics", "tenant", "match", "drop", "limit", "static_labels", "decolorize", "sampling",
    "geoip", "eventlogmessage",
}  # fmt: skip
ALLOWED_LABELS = {"service", "level"}


def loki_problems(config: Any) -> list[str]:
    problems = [f"unknown top-level key {k}" for k in sorted(set(config) - LOKI_KEYS)]
    for key in ("server", "schema_config", "common"):
        if key not in config:
            problems.append(f"no {key}")
    if config.get("server", {}).get("http_listen_port") != 3100:
        problems.append("Loki does not listen on 3100 (the datasource and Promtail use it)")
    return problems


def promtail_problems(config: Any) -> list[str]:
    problems = [f"unknown top-level key {k}" for k in sorted(set(config) - PROMTAIL_KEYS)]
    if [c.get("url") for c in config.get("clients", [])] != ["http://loki:3100/loki/api/v1/push"]:
        problems.append("clients must push to http://loki:3100")
    for job in config.get("scrape_configs", []):
        for rc in job.get("relabel_configs", []):
            target = rc.get("target_label")
            if target and not target.startswith("__") and target not in ALLOWED_LABELS:
                problems.append(f"relabel sets label {target}")
        stages = job.get("pipeline_stages", [])
        labelled: set[str] = set()
        allow: set[str] | None = None
        for stage in stages:
            (name, body), *more = stage.items()
            if more or name not in STAGES:
                problems.append(f"unknown pipeline stage {list(stage)}")
            if name == "labels":
                labelled |= set(body)
            if name == "labelallow":
                allow = set(body)
        if labelled != ALLOWED_LABELS:
            problems.append(f"labels stage sets {sorted(labelled)}, expected service and level")
        if allow != ALLOWED_LABELS:
            problems.append("a final labelallow of service and level is required")
        json_stage = next((s["json"] for s in stages if "json" in s), None)
        if json_stage is None or not set(json_stage["expressions"]) >= ALLOWED_LABELS:
            problems.append("no json stage extracting service and level")
    return problems


def test_loki_config_has_known_keys() -> None:
    config = _yaml(LOKI)
    assert loki_problems(config) == []
    assert len(loki_problems({**config, "ingestor": {}, "server": {}})) == 2


def test_promtail_parses_our_json_lines_into_service_and_level_only() -> None:
    config = _yaml(PROMTAIL)
    assert promtail_problems(config) == []
    # the fields it extracts are the ones our log lines carry
    from dex.runtime.logging import _FIRST_KEYS

    json_stage = next(
        s["json"] for s in config["scrape_configs"][0]["pipeline_stages"] if "json" in s
    )
    assert set(json_stage["expressions"].values()) <= set(_FIRST_KEYS)
    broken = _yaml(PROMTAIL)
    stages = broken["scrape_configs"][0]["pipeline_stages"]
    next(s for s in stages if "labels" in s)["labels"]["order_id"] = None
    stages.append({"jsonn": {}})
    assert len(promtail_problems(broken)) == 2


def test_logql_in_dashboards_selects_only_service_and_level() -> None:
    selectors = [
        e
        for path in DASHBOARDS
        for _, kind, e in dashboard_exprs(json.loads(path.read_text()))
        if kind == "loki"
    ]
    assert selectors
    for selector in selectors:
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector.split("}")[0]))
        assert labels <= ALLOWED_LABELS, selector


# ------------------------------------------------------------------ agreement with the code


def exported_names(text: str) -> set[str]:
    """Every family in an exposition: `# TYPE` names and the names of samples."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def missing_metrics(used: set[str], exported: set[str]) -> set[str]:
    missing = set()
    for name in used - PROMETHEUS_OWN:
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        if name not in exported and base not in exported:
            missing.add(name)
    return missing


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz").status_code == 200


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Each service's /metrics after two traders crossed on ETH-USDC under `dex up`."""
    data = tmp_path_factory.mktemp("dex-up")
    base = free_base()
    urls = {s: f"http://127.0.0.1:{base + i}" for i, s in enumerate(SERVICES)}
    env = {"DEX_DATA_DIR": str(data / "data"), "DEX_PORT": str(base)}
    proc = DexProcess.start(["up"], env, cwd=data)
    try:
        wait_on_process("every service's /readyz", lambda: all(map(_ready, urls.values())))
        buyer = trader(urls["gateway"], USDC="10000")
        seller = trader(urls["gateway"], ETH="2")
        buyer.place("ETH-USDC", "buy", "limit", size="0.5", price="1990", client_order_id="b1")
        seller.place("ETH-USDC", "sell", "limit", size="0.5", price="1990", client_order_id="s1")
        trades = urls["market-data"] + "/metrics"
        wait_on_process(
            "the trade in market data",
            lambda: "dex_market_data_trades_total{" in httpx.get(trades).text,
        )
        yield {s: httpx.get(f"{u}/metrics").text for s, u in urls.items()}
    finally:
        if proc.stop() != 0:
            print(proc.output()[-4000:], file=sys.stderr)


def test_every_metric_in_rules_and_dashboards_is_exported(scraped: dict[str, str]) -> None:
    exported = set().union(*(exported_names(text) for text in scraped.values()))
    used = set().union(*(metric_names(e) for _, e in promql_exprs()))
    assert len(used) > 30
    assert missing_metrics(used, exported) == set()
    # each service exports under its own prefix, and a misspelt name is caught
    for service, text in scraped.items():
        prefix = f"dex_{service.replace('-', '_')}_"
        assert all(n.startswith(prefix) for n in exported_names(text)), service
    assert missing_metrics(
        {"dex_gateway_order_latency_seconds_bucket", "dex_gateway_orders_total"}, exported
    ) == {"dex_gateway_orders_total"}
