"""Operations files: ops/alerts.yml, ops/alerts_test.yml, ops/prometheus.yml, compose.yaml.

promtool (Debian's `prometheus` package, installed by scripts/install-deps) checks the
rules and the Prometheus config and runs the rule unit tests; the unit tests are in turn
shown to catch broken rules. Docker can't run here, so compose.yaml is checked as far as
this machine allows: it parses, its services are wired to each other as intended, the files
it mounts or builds from exist, and reeld accepts the command line it is given.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import reel_interop as ri

REPO = ri.REPO_ROOT
OPS = REPO / "ops"
ALERTS = OPS / "alerts.yml"
ALERTS_TEST = OPS / "alerts_test.yml"
PROMETHEUS = OPS / "prometheus.yml"
COMPOSE = REPO / "compose.yaml"

# The metric names reeld exports (DESIGN §7; seed 002 §9.1 with the reel_ prefix).
REEL_METRICS = {
    "reel_jobs_created_total", "reel_jobs_completed_total", "reel_jobs_retried_total",
    "reel_job_duration_seconds", "reel_stage_duration_seconds", "reel_queue_depth",
    "reel_queue_oldest_job_age_seconds", "reel_grpc_server_handled_total",
    "reel_grpc_server_in_flight", "reel_grpc_server_handling_seconds",
    "reel_provider_calls_total", "reel_provider_live_tasks", "reel_provider_task_cap", "reel_provider_parked",
    "reel_provider_healthy", "reel_provider_circuit_open", "reel_script_agent_quota_exhausted",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# Seed 002 §9.2: alert → (metric it watches, threshold, for).
SEED_ALERTS = {
    "JobQueueBacklog": ("reel_queue_depth", "100", "5m"),
    "JobQueueStuck": ("reel_queue_oldest_job_age_seconds", "600", "2m"),
    "HighJobFailureRate": ("reel_jobs_completed_total", "0.1", "5m"),
    "SlowVideoGeneration": ("reel_stage_duration_seconds_bucket", "180", "10m"),
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is not installed: run scripts/install-deps (it installs Debian's "
                    "`prometheus` package, which ships /usr/bin/promtool)", pytrace=False)
    return path


def promtool_run(promtool: str, *args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def describe(r: subprocess.CompletedProcess) -> str:
    return f"{' '.join(r.args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"


def load(path: Path):
    assert path.exists(), f"{path.relative_to(REPO)} is missing"
    with open(path) as f:
        return yaml.safe_load(f)


def alert_rules(doc) -> dict:
    rules = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in rules, f"alert {rule['alert']} defined twice"
                rules[rule["alert"]] = rule
    return rules


# --------------------------------------------------------------------------- promtool


def test_install_deps_installs_promtool():
    text = (REPO / "scripts" / "install-deps").read_text()
    m = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.M | re.S)
    assert m, "scripts/install-deps has no APT_PACKAGES=( ... ) list"
    packages = re.findall(r"^\s*([a-z0-9][a-z0-9.+-]*)\s*(?:#.*)?$", m.group(1), re.M)
    assert "prometheus" in packages, (
        f"scripts/install-deps should install `prometheus` (for promtool): {packages}")


def test_alert_rules_pass_promtool_check(promtool):
    r = promtool_run(promtool, "check", "rules", ALERTS.relative_to(REPO))
    assert r.returncode == 0, describe(r)
    m = re.search(r"SUCCESS: (\d+) rules found", r.stdout)
    assert m and int(m.group(1)) == len(alert_rules(load(ALERTS))), describe(r)


def test_alert_rule_unit_tests_pass(promtool):
    r = promtool_run(promtool, "test", "rules", ALERTS_TEST.relative_to(REPO))
    assert r.returncode == 0, describe(r)
    assert "SUCCESS" in r.stdout, describe(r)


def test_prometheus_config_passes_promtool_check(promtool):
    r = promtool_run(promtool, "check", "config", PROMETHEUS.relative_to(REPO))
    assert r.returncode == 0, describe(r)
    # The config's rule files were found and checked too.
    assert "SUCCESS: 1 rule files found" in r.stdout, describe(r)
    assert re.search(r"Checking .*alerts\.yml\s+SUCCESS", r.stdout), describe(r)


# --------------------------------------------------------------------------- the rules themselves


def test_alerts_cover_seed_002_section_9_2():
    rules = alert_rules(load(ALERTS))
    missing = set(SEED_ALERTS) - set(rules)
    assert not missing, f"alerts missing from ops/alerts.yml: {sorted(missing)}"
    for name, (metric, threshold, duration) in SEED_ALERTS.items():
        rule = rules[name]
        expr = " ".join(rule["expr"].split())
        assert metric in expr, f"{name} should watch {metric}: {expr}"
        assert re.search(rf">\s*{re.escape(threshold)}\s*$", expr), (
            f"{name} should fire above {threshold}: {expr}")
        assert rule.get("for") == duration, f"{name} should hold for {duration}: {rule}"
    assert 'stage="video_generation"' in rules["SlowVideoGeneration"]["expr"]
    assert "histogram_quantile(0.95" in rules["SlowVideoGeneration"]["expr"].replace(" ", "")
    failure = rules["HighJobFailureRate"]["expr"]
    assert 'status="failed"' in failure and "[5m]" in failure, failure
    assert re.search(r"\)\s*>\s*0\s*\)", failure), (
        f"HighJobFailureRate should drop a zero denominator: {failure}")


def test_alerts_have_labels_and_annotations():
    for name, rule in alert_rules(load(ALERTS)).items():
        labels, notes = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in ("warning", "critical"), f"{name}: {labels}"
        assert labels.get("service") == "reel", f"{name}: {labels}"
        assert notes.get("summary"), f"{name} has no summary"
        assert notes.get("description"), f"{name} has no description"
    rules = alert_rules(load(ALERTS))
    for name in SEED_ALERTS:
        assert "$value" in rules[name]["annotations"]["description"], (
            f"{name}'s description should show the value: {rules[name]['annotations']}")


def test_alerts_use_only_reels_metric_names():
    """A misspelt metric name would make an alert silently never fire."""
    for name, rule in alert_rules(load(ALERTS)).items():
        for metric in re.findall(r"\b(reel_[a-z_]+)", rule["expr"]):
            base = metric
            for suffix in HISTOGRAM_SUFFIXES:
                if metric.endswith(suffix) and metric[: -len(suffix)] in REEL_METRICS:
                    base = metric[: -len(suffix)]
            assert base in REEL_METRICS, f"{name} uses unknown metric {metric}"


def test_every_alert_is_unit_tested_firing_and_not_firing():
    rules = alert_rules(load(ALERTS))
    doc = load(ALERTS_TEST)
    assert doc["rule_files"] == ["alerts.yml"], doc["rule_files"]
    fired, quiet = set(), set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    for name in rules:
        assert name in fired, f"no unit test shows {name} firing"
        assert name in quiet, f"no unit test shows {name} not firing"


def _mutants():
    """(description, alert, function(rule) that breaks it): each must fail the unit tests."""
    def never(rule):
        rule["expr"] = "vector(1) > 2"

    def no_for(rule):
        rule.pop("for")

    def replace(old, new):
        def f(rule):
            assert old in rule["expr"], (old, rule["expr"])
            rule["expr"] = rule["expr"].replace(old, new)
        return f

    out = []
    for name in [*SEED_ALERTS, "ReeldDown", "ReelProviderParked"]:
        out.append((f"{name} never fires", name, never))
        out.append((f"{name} without its `for`", name, no_for))
    out += [
        ("JobQueueBacklog at 98", "JobQueueBacklog", replace("> 100", "> 98")),
        ("JobQueueBacklog per instance", "JobQueueBacklog",
         replace("max by (queue) (reel_queue_depth)", "reel_queue_depth")),
        ("JobQueueStuck at 400 s", "JobQueueStuck", replace("> 600", "> 400")),
        ("HighJobFailureRate at 4 %", "HighJobFailureRate", replace("> 0.1", "> 0.04")),
        ("HighJobFailureRate without cancelled", "HighJobFailureRate",
         replace('(sum(rate(reel_jobs_completed_total[5m]))',
                 '(sum(rate(reel_jobs_completed_total{status!="cancelled"}[5m]))')),
        ("SlowVideoGeneration at 90 s", "SlowVideoGeneration", replace("> 180", "> 90")),
        ("SlowVideoGeneration over every stage", "SlowVideoGeneration",
         replace('{stage="video_generation"}', "")),
        ("ReeldDown for every job", "ReeldDown", replace('up{job="reeld"}', "up")),
        ("ReelProviderParked per instance", "ReelProviderParked",
         replace("max by (provider) (reel_provider_parked)", "reel_provider_parked")),
    ]
    return out


def test_unit_tests_catch_broken_rules(promtool, tmp_path):
    """Each alert's unit tests can fail: a copy of the rules with one alert broken at a time
    (never firing, no `for`, a lower threshold, a wrong aggregation or selector) fails
    `promtool test rules`, while the unbroken copy passes."""
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    original = load(ALERTS)

    def run_with(doc):
        with open(tmp_path / "alerts.yml", "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        return promtool_run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)

    r = run_with(original)
    assert r.returncode == 0, f"the unmodified copy should pass: {describe(r)}"
    survivors = []
    for what, name, mutate in _mutants():
        doc = yaml.safe_load(yaml.safe_dump(original))
        mutate(alert_rules(doc)[name])
        r = run_with(doc)
        if r.returncode == 0:
            survivors.append(what)
    assert not survivors, f"ops/alerts_test.yml does not notice: {survivors}"


# --------------------------------------------------------------------------- prometheus.yml


def test_prometheus_scrapes_reeld_and_loads_the_rules():
    doc = load(PROMETHEUS)
    for rule_file in doc["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).exists(), f"rule file {rule_file} not in ops/"
    assert "alerts.yml" in doc["rule_files"], doc["rule_files"]
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert "reeld" in jobs, f"no scrape job named reeld (ReeldDown matches job=\"reeld\"): {jobs}"
    reeld = jobs["reeld"]
    assert reeld.get("metrics_path", "/metrics") == "/metrics", reeld
    targets = [t for sc in reeld["static_configs"] for t in sc["targets"]]
    assert targets == ["reeld:9464"], targets


# --------------------------------------------------------------------------- compose.yaml


@pytest.fixture(scope="module")
def compose():
    doc = load(COMPOSE)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), doc
    return doc


def _command(service) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _flag(cmd: list[str], name: str) -> str:
    for i, arg in enumerate(cmd):
        if arg == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in command {cmd}")


def _ports(service) -> set[str]:
    out = set()
    for p in service.get("ports", []):
        out.add(str(p["published"]) + ":" + str(p["target"]) if isinstance(p, dict) else str(p))
    return out


def test_compose_postgres(compose):
    pg = compose["services"]["postgres"]
    assert pg["image"] == "postgres:15", pg
    volumes = [str(v).split(":")[0] for v in pg["volumes"]]
    assert any(v in (compose.get("volumes") or {}) for v in volumes), (
        f"postgres should keep its data in a named volume declared under volumes: {pg}")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"]), pg
    test = pg["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test)), test
    env = pg["environment"]
    assert env.get("POSTGRES_DB") == "reel" and env.get("POSTGRES_PASSWORD"), env


def test_compose_reeld(compose):
    services = compose["services"]
    reeld = services["reeld"]
    build = reeld["build"]
    context = REPO / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = context / ("Dockerfile" if isinstance(build, str)
                            else build.get("dockerfile", "Dockerfile"))
    assert dockerfile.exists(), f"reeld builds from {dockerfile}, which does not exist"
    # The image's ENTRYPOINT is reeld, so `command` is reeld's arguments.
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/reeld"\]', dockerfile.read_text(), re.M)

    cmd = _command(reeld)
    assert _flag(cmd, "--listen") == "0.0.0.0:50051", cmd
    assert _flag(cmd, "--metrics-listen") == "0.0.0.0:9464", cmd
    assert _flag(cmd, "--provider") == "simulated", cmd
    url = _flag(cmd, "--database-url")
    assert url == "postgresql://postgres:postgres@postgres:5432/reel", url
    # ... which is the postgres service with its own credentials.
    m = re.match(r"postgresql://([^:]+):([^@]+)@([^:/]+):(\d+)/(\w+)$", url)
    env = services["postgres"]["environment"]
    assert m.group(3) in services, f"database host {m.group(3)} is not a service"
    assert (m.group(1), m.group(2), m.group(5)) == (
        env.get("POSTGRES_USER", "postgres"), env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])

    assert reeld["depends_on"]["postgres"]["condition"] == "service_healthy", reeld
    assert {"50051:50051", "9464:9464"} <= _ports(reeld), reeld.get("ports")


def test_compose_reeld_command_is_accepted_by_reeld(compose, bin_dir):
    """Every flag compose passes is one reeld has (reeld --help), and the healthcheck is a
    valid reelctl command line (against nothing, it is UNAVAILABLE, not a usage error)."""
    reeld = compose["services"]["reeld"]
    help_text = subprocess.run([str(Path(bin_dir) / "reeld"), "--help"], capture_output=True,
                               text=True, timeout=30).stdout
    for arg in _command(reeld):
        if arg.startswith("--"):
            assert re.search(rf"^\s*{re.escape(arg.split('=')[0])}\b", help_text, re.M), (
                f"reeld has no {arg} option:\n{help_text}")
    test = reeld["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "reelctl", test
    assert "reelctl" in (REPO / "Dockerfile").read_text(), "the image should ship reelctl"
    args = list(test[2:])
    args[args.index("--address") + 1] = f"127.0.0.1:{ri.free_port()}"
    r = subprocess.run([str(Path(bin_dir) / "reelctl"), *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 24, f"{args}: exit {r.returncode} {r.stderr}"


def test_compose_prometheus(compose):
    services = compose["services"]
    prom = services["prometheus"]
    assert str(prom["image"]).startswith("prom/prometheus"), prom
    assert "9090:9090" in _ports(prom), prom.get("ports")
    mounts = {}
    for v in prom["volumes"]:
        parts = str(v).split(":")
        if parts[0].startswith("."):
            mounts[parts[1]] = REPO / parts[0]
    assert any(src.resolve() == OPS.resolve() for src in mounts.values()), (
        f"ops/ should be mounted: {prom['volumes']}")
    # --config.file (or the image default) lands on ops/prometheus.yml through a mount.
    config = "/etc/prometheus/prometheus.yml"
    for arg in _command(prom) if "command" in prom else []:
        if arg.startswith("--config.file="):
            config = arg.split("=", 1)[1]
    host = next((src / Path(config).relative_to(dst) for dst, src in mounts.items()
                 if config.startswith(dst.rstrip("/") + "/")), None)
    assert host is not None and host.resolve() == PROMETHEUS.resolve(), (
        f"{config} in the container is not ops/prometheus.yml: {prom}")
    # The scrape target is the reeld service's metrics port.
    target = load(PROMETHEUS)["scrape_configs"][0]["static_configs"][0]["targets"][0]
    svc, port = target.split(":")
    assert svc in services, f"scrape target {target} is not a compose service"
    assert _flag(_command(services[svc]), "--metrics-listen").endswith(":" + port), target
