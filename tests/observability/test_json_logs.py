"""HASTATE_LOG_FORMAT=json / [logging] format = "json": every hastate log line is one JSON
object carrying the node's id, region, term and role plus the record's own ``extra``."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from hastate import ConfigError, StateManager
from hastate.config import LoggingConfig
from hastate.observability.logs import ROOT_LOGGER, configure_logging
from hastate.testing import LocalCluster, free_port

NODE_FIELDS = ("node", "region", "term", "role")


@pytest.fixture
def hastate_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The ``hastate`` logger, restored afterwards."""
    monkeypatch.delenv("HASTATE_LOG_FORMAT", raising=False)
    logger = logging.getLogger(ROOT_LOGGER)
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


def test_each_line_is_json_with_node_context_and_extra_fields(
        hastate_logger: logging.Logger, tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json", level="INFO"), stream=stream)
    configure_logging(LoggingConfig(format="json"), stream=stream)   # idempotent
    sm = StateManager("solo", {"solo": f"127.0.0.1:{free_port()}"}, region="asia-northeast1",
                      data_dir=tmp_path / "solo", cluster_name="logs")
    try:
        sm.start(wait_ready=20)
        logging.getLogger("hastate.bot").info("order placed %s", "BTC",
                                              extra={"order_id": "o-1", "qty": 0.5})
        logging.getLogger("hastate.bot").info("override", extra={"region": "mine"})
    finally:
        sm.stop()
    lines = stream.getvalue().splitlines()
    assert lines, "nothing was logged"
    entries = [json.loads(line) for line in lines]          # every line parses
    assert all(set(NODE_FIELDS) <= set(e) for e in entries)
    order = next(e for e in entries if e["message"] == "order placed BTC")
    assert (order["order_id"], order["qty"], order["level"], order["logger"]) == \
        ("o-1", 0.5, "INFO", "hastate.bot")
    assert (order["node"], order["region"], order["role"]) == ("solo", "asia-northeast1", "leader")
    assert isinstance(order["term"], int) and order["term"] >= 1
    assert next(e for e in entries if e["message"] == "override")["region"] == "mine"
    started = next(e for e in entries if e["message"] == "state manager started")
    assert started["instance"] == "solo"


def test_text_format_removes_the_json_handler(hastate_logger: logging.Logger) -> None:
    configure_logging(LoggingConfig(format="json"), stream=io.StringIO())
    assert not hastate_logger.propagate
    configure_logging(LoggingConfig(format="text"))
    assert hastate_logger.propagate and not any(
        type(h.formatter).__name__ == "JsonFormatter" for h in hastate_logger.handlers)


def test_unknown_format_in_the_environment_names_the_variable(
        hastate_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTATE_LOG_FORMAT", "yaml")
    with pytest.raises(ConfigError, match="HASTATE_LOG_FORMAT: unknown log format 'yaml'"):
        configure_logging()


def test_logging_table_is_validated(tmp_path: Path) -> None:
    from hastate.config import parse_config
    doc = {"cluster": {"name": "c"}, "nodes": [{"id": "n1", "raft": "127.0.0.1:4001",
                                                 "data_dir": "/tmp/n1"}]}
    assert parse_config({**doc, "logging": {"format": "json", "level": "info"}}).logging == \
        LoggingConfig("json", "INFO")
    with pytest.raises(ConfigError, match="logging.format: unknown log format 'xml'"):
        parse_config({**doc, "logging": {"format": "xml"}})
    with pytest.raises(ConfigError, match="logging.level: unknown log level 'LOUD'"):
        parse_config({**doc, "logging": {"level": "LOUD"}})


@pytest.mark.integration
def test_node_run_with_the_env_variable_logs_only_json_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTATE_LOG_FORMAT", "json")
    with LocalCluster(tmp_path, 1, name="logs") as cluster:
        cluster.start("instance-1")        # hastate --log-level INFO node run
        cluster.wait_ready(timeout=30)
        assert cluster.post("instance-1", "/admin/snapshot", {})[0] == 501
    lines = [line for line in cluster.log("instance-1").splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert any(e["message"] == "node serving" for e in entries)
    for entry in entries:
        assert set(NODE_FIELDS) <= set(entry) and entry["logger"].startswith("hastate")
    started = next(e for e in entries if e["message"] == "state manager started")
    assert (started["node"], started["region"]) == ("instance-1", "asia-northeast1")


@pytest.mark.integration
def test_an_embedded_bot_with_a_logging_table_logs_json(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 1, name="logs")
    with cluster.config_path.open("a") as f:
        f.write('\n[logging]\nformat = "json"\nlevel = "INFO"\n')
    env = {k: v for k, v in os.environ.items() if k != "HASTATE_LOG_FORMAT"}
    script = ("import sys; from hastate import StateManager; "
              "sm = StateManager.from_config(sys.argv[1], 'instance-1').start(wait_ready=20); "
              "sm.save_state({'k': 1}); sm.stop()")
    out = subprocess.run([sys.executable, "-c", script, str(cluster.config_path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    entries = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert any(e["message"] == "state manager started" and e["role"] is not None
               for e in entries)
    assert all(set(NODE_FIELDS) <= set(e) for e in entries)
