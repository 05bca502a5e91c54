"""Benchmarks: hastate against raw PySyncObj (batched and unbatched) and etcd.

Run ``python -m benchmarks [--quick] [--out results/DIR]`` (or ``tox -e bench``). Every
system is a three-member cluster on loopback, started by the benchmark with temporary data
directories and torn down afterwards, and driven from this Python process in the same style:

* ``hastate``: one member is an in-process :class:`hastate.StateManager` (the driver writes
  through it, as the trading bot does), the other two are ``hastate node run`` processes
  started by :class:`hastate.testing.LocalCluster`;
* ``pysyncobj`` / ``pysyncobj-nobatch``: a minimal ``SyncObj`` replicated dict with a
  ``FileJournal`` (``appendEntriesUseBatch`` True / False), one member in process and two
  in child processes (:mod:`benchmarks.node`);
* ``etcd``: three ``etcd`` members (Debian's ``etcd-server``) driven through the v3 HTTP/JSON
  gateway with one keep-alive :class:`http.client.HTTPConnection` per driver thread.

Modules: :mod:`benchmarks.common` (processes, cleanup, /proc sampling, statistics),
:mod:`benchmarks.workloads` (sequential, concurrent, pipelined, reads),
:mod:`benchmarks.sys_hastate`, :mod:`benchmarks.sys_pysyncobj`, :mod:`benchmarks.sys_etcd`
(one system each), :mod:`benchmarks.failover`, :mod:`benchmarks.scenarios` (saturation,
large state and compaction, hot-path profile) and :mod:`benchmarks.report` (table, JSON,
plots). Results and numbers are documented in ``docs/performance.md``.
"""
