"""Benchmark: write latency and throughput of a 3-node loopback cluster per transport mode.

Run ``python tests/consensus/transport/bench_transport.py`` (about a minute); prints a
Markdown table for docs/security.md. Modes: ``upstream`` is PySyncObj's own pickle transport (baseline),
then SecureTransport in plaintext, psk and tls. Sequential: ``sync=True`` increments one
after another with ``appendEntriesUseBatch=False`` (the transport's round trip dominates).
Pipelined: asynchronous increments with PySyncObj's default batching, until all commit.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Launcher, make_pki  # noqa: E402  (script next to the test helpers)

#: PySyncObj's default timing (the tests' fast timing is tuned for elections, not speed).
DEFAULT_TIMING = {"raftMinTimeout": 0.4, "raftMaxTimeout": 1.4, "appendEntriesPeriod": 0.1,
                  "connectionTimeout": 3.5, "autoTickPeriod": 0.05}
SEQUENTIAL_WRITES = 2000
PIPELINED_WRITES = 20000
ROUNDS = 3


def measure(launcher: Launcher, mode: str) -> dict[str, float]:
    cluster = launcher.cluster(mode, conf={**DEFAULT_TIMING, "appendEntriesUseBatch": False})
    latencies = sorted(cluster.leader().call("bench_seq", n=SEQUENTIAL_WRITES,
                                             timeout=120)["latencies"])
    cluster = launcher.cluster(mode, conf=DEFAULT_TIMING)
    leader = cluster.leader()
    rates = [PIPELINED_WRITES / leader.call("bench_pipe", n=PIPELINED_WRITES,
                                            timeout=120)["seconds"] for _ in range(ROUNDS)]
    launcher.stop_all()
    return {"p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
            "seq_per_s": len(latencies) / sum(latencies),
            "pipelined_per_s": statistics.median(rates)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pki").mkdir()
        launcher = Launcher(root, make_pki(root / "pki"))
        print("| mode | sequential p50 | p99 | sequential writes/s | pipelined writes/s |")
        print("|---|---|---|---|---|")
        for mode in ("upstream", "plaintext", "psk", "tls"):
            r = measure(launcher, mode)
            print(f"| {mode} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | "
                  f"{r['seq_per_s']:.0f} | {r['pipelined_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
