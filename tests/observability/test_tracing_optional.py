"""Tracing is optional: without the OpenTelemetry API hastate runs unchanged, and a node
configures an exporter only when the environment asks for one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hastate.observability import tracing

WITHOUT_API = textwrap.dedent('''
    import logging, sys, tempfile
    from pathlib import Path

    class NoOpenTelemetry:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"{name} is not installed (blocked by the test)")

    sys.meta_path.insert(0, NoOpenTelemetry())
    logging.basicConfig(level=logging.WARNING)
    from hastate import StateManager
    from hastate.observability import tracing
    from hastate.snapshots.stores.memory import MemoryStore
    from hastate.snapshots.uploader import SnapshotUploader
    from hastate.snapshots.restore import rebuild
    from hastate.testing import free_port

    assert not tracing.available() and not tracing.enabled()
    assert tracing.inject() == {} and tracing.extract({"traceparent": "00-x"}) is None
    assert tracing.configure_from_env("solo", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is None
    tracing.install_log_filter()
    sm = StateManager("solo", {"solo": f"127.0.0.1:{free_port()}"},
                      data_dir=Path(tempfile.mkdtemp()) / "solo", cluster_name="no-api")
    with sm.start(wait_ready=20):
        index = sm.save_state({"k": 1})
        assert sm.get_state() == {"k": 1}
        assert sm.compare_and_set("k", 2, index) > index
        sm.delete("k")
        body = sm.machine.to_body()
    store = MemoryStore("no-api")
    with SnapshotUploader(store, cluster="no-api") as uploader:
        uploader.submit(body, index=body["applied_index"], term=1, keys=0)
        assert uploader.flush(10)
    assert rebuild(store, "no-api").index == body["applied_index"]
    assert not [m for m in sys.modules if m.startswith("opentelemetry")]
    print("ok")
''')


def test_hastate_runs_without_the_opentelemetry_api() -> None:
    run = subprocess.run([sys.executable, "-c", WITHOUT_API], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok"
    assert "pip install 'hastate[otel-export]'" in run.stderr   # the endpoint was set


def test_no_exporter_is_configured_unless_the_environment_asks() -> None:
    assert tracing.configure_from_env("n1", {}) is None
    assert tracing.configure_from_env("n1", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                             "OTEL_SDK_DISABLED": "true"}) is None
