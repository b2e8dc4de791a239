"""deploy/prometheus/ (issue 17): the scrape configuration is the one generated from the topology,
and the recording and alert rules pass Prometheus' own checker (`promtool check rules`) and their
unit tests (`promtool test rules`); a broken rule fails both ways."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tinysaga.infra import prometheus
from tinysaga.infra.topology import processes
from tinysaga.platform.settings import Settings


def test_the_checked_in_scrape_config_is_the_generated_one() -> None:
    assert prometheus.CONFIG.read_text() == prometheus.default_config(), "run ./tiny-saga prometheus --write"


def test_every_service_process_is_scraped_and_nothing_else() -> None:
    s = Settings.model_construct(service_port_base=28100, order_replicas=3)
    text = prometheus.scrape_config(s)
    services = [p for p in processes(s) if p.argv[1:2] == ["-m"] and "--port" in p.argv]
    assert len(services) == 10  # auth, order x3, payment, wallet, inventory x2, notification, web
    for p in services:
        assert f"- targets: ['127.0.0.1:{p.port}']" in text and f"process: {p.name}}}" in text
    assert text.count("- targets:") == len(services)
    assert f"{s.kafka_port}" not in text and "relay" not in text and "smtp" not in text


@pytest.fixture(scope="module")
def promtool() -> Path:
    return prometheus.ensure_promtool(Settings())


def run(promtool: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_rules_pass_promtool_check_and_their_unit_tests(promtool: Path) -> None:
    rules = [prometheus.DEPLOY / f for f in prometheus.RULE_FILES]
    checked = run(promtool, "check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool, "test", "rules", prometheus.RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = run(promtool, "check", "config", "--syntax-only", prometheus.CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr


def broken_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """deploy/prometheus copied with one change in one of its files."""
    root = tmp_path / "prometheus"
    shutil.copytree(prometheus.DEPLOY, root)
    target = root / file
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    return root


@pytest.mark.parametrize(
    "file, old, new",
    [
        ("rules/alerts.yml", "expr: sum(tinysaga:sagas_stuck) > 0", "expr: sum(tinysaga:sagas_stuck) > 5"),
        ("rules/alerts.yml", "tinysaga:outbox_oldest_seconds > 30", "tinysaga:outbox_oldest_seconds > 300"),
        ("rules/recording.yml", "max by (status) (tinysaga_sagas_stuck)", "sum by (status) (tinysaga_sagas_stuck)"),
        ("rules/recording.yml", "histogram_quantile(0.99, sum by (le) (", "histogram_quantile(0.9, sum by (le) ("),
    ],
)
def test_a_rule_that_says_something_else_fails_its_unit_tests(
    promtool: Path, tmp_path: Path, file: str, old: str, new: str
) -> None:
    root = broken_copy(tmp_path, file, old, new)
    assert run(promtool, "check", "rules", root / file).returncode == 0  # still a valid rule ...
    assert run(promtool, "test", "rules", root / "tests" / "rules_test.yml").returncode != 0  # ... but wrong


def test_a_rule_that_is_not_promql_fails_the_check(promtool: Path, tmp_path: Path) -> None:
    root = broken_copy(tmp_path, "rules/alerts.yml", 'up{job="tinysaga"} == 0', 'up{job="tinysaga" == 0')
    checked = run(promtool, "check", "rules", root / "rules" / "alerts.yml")
    assert checked.returncode != 0 and "alerts.yml" in checked.stdout + checked.stderr
