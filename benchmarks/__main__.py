"""``python -m benchmarks [--quick] [--out results/DIR]``: run everything, print the table.

``python -m benchmarks engines ...`` compares hastate's engines instead (see
:mod:`benchmarks.engines`).

Default run < 10 minutes on 2 cores; ``--quick`` about 2 minutes. Writes ``results.json``,
``summary.md`` and PNG plots (if matplotlib is installed) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import (CLEANUP, REPO_ROOT, dump_json, git_state, install_signal_handlers,
                               log, machine_info)

SYSTEMS = ["hastate", "pysyncobj", "pysyncobj-nobatch", "etcd", "hastate-tls"]
QUICK_SYSTEMS = ["hastate", "pysyncobj", "pysyncobj-nobatch", "etcd"]
PHASES = ["throughput", "saturation", "profile", "large", "failover"]


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"write_s": 1.0, "read_s": 0.6, "saturation_s": 10.0, "threads64_s": 5.0,
                "trials": 5, "baseline_trials": 3, "large_keys": 200_000,
                "compaction_window_s": 15.0, "profile_ops": 500, "pyspy_s": 3.0}
    return {"write_s": 3.0, "read_s": 1.5, "saturation_s": 60.0, "threads64_s": 20.0,
            "trials": 20, "baseline_trials": 10, "large_keys": 1_000_000,
            "compaction_window_s": 30.0, "profile_ops": 2000, "pyspy_s": 5.0}


def ensure_etcd(install: bool) -> str | None:
    """Path of the etcd binary, installing Debian's etcd-server if allowed; None + reason."""
    from benchmarks.sys_etcd import etcd_binary
    if etcd_binary():
        return None
    if not install:
        return "etcd is not installed and --no-install was given (apt-get install -y etcd-server)"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return "etcd is not installed and apt-get as root is not available here"
    log("etcd not found: apt-get update && apt-get install -y etcd-server")
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        subprocess.run(["apt-get", "install", "-y", "-qq", "etcd-server"], check=True,
                       timeout=300, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return f"apt-get install etcd-server failed: {exc} {err.decode(errors='replace')[-300:]}"
    return None if etcd_binary() else "etcd-server installed but no etcd binary on PATH"


def make_system(name: str) -> Any:
    if name in ("hastate", "hastate-tls"):
        from benchmarks.sys_hastate import HastateSystem
        return HastateSystem(transport="plaintext" if name == "hastate" else "tls")
    if name in ("pysyncobj", "pysyncobj-nobatch"):
        from benchmarks.sys_pysyncobj import PySyncObjSystem
        return PySyncObjSystem(batch=name == "pysyncobj")
    from benchmarks.sys_etcd import EtcdSystem
    return EtcdSystem()


def guarded(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run a phase; on failure record the error and carry on with the next phase."""
    t0 = time.monotonic()
    try:
        value = fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        log(f"{key} failed: {exc!r}")
        results.setdefault("errors", {})[key] = traceback.format_exc()[-3000:]
        value = {"error": repr(exc)}
    results.setdefault("phase_seconds", {})[key] = round(time.monotonic() - t0, 1)
    return value


def run_system(name: str, cfg: dict[str, Any], phases: list[str], results: dict[str, Any],
               out: Path) -> None:
    """Throughput workloads on one system; for hastate also profile, saturation, large state.

    hastate order: the workloads (pipelined 64 B last, as the saturation run when that phase
    is on), then the profile, then a fresh cluster for the large-state run, so a follower
    left behind by the saturation run disturbs nothing after it.
    """
    from benchmarks import scenarios
    from benchmarks.workloads import WORKLOADS, execute
    system = make_system(name)
    tp = results["throughput"].setdefault(name, {})
    saturate = name == "hastate" and "saturation" in phases
    try:
        system.start()
        results["systems"][name] = system.info()
        if "throughput" in phases:
            for wl in WORKLOADS:
                if saturate and wl.name == "write-pipe-64B":
                    continue
                duration = cfg["read_s"] if wl.kind == "read" else cfg["write_s"]
                tp[wl.name] = guarded(results, f"{name}/{wl.name}",
                                      lambda wl=wl, d=duration: execute(system, wl, d))
        if name != "hastate":
            return
        if "profile" in phases:
            results["profile"] = guarded(results, "profile", lambda: scenarios.profile(
                system, out, cfg["profile_ops"], cfg["pyspy_s"]))
        if saturate:
            def threads64() -> dict[str, Any]:
                return scenarios.saturation(system, cfg["threads64_s"], "threads64")[1]
            results["saturation_threads64"] = guarded(results, "saturation_threads64", threads64)

            def sat() -> dict[str, Any]:
                res, report = scenarios.saturation(system, cfg["saturation_s"])
                tp["write-pipe-64B"] = res
                return report
            results["saturation"] = guarded(results, "saturation", sat)
        if "large" in phases:
            if saturate:
                system.stop()
                system = make_system(name)
                system.start()
            results["large_state"] = guarded(results, "large_state", lambda: scenarios.large_state(
                system, cfg["large_keys"], cfg["compaction_window_s"]))
    finally:
        system.stop()


def run_failover(cfg: dict[str, Any], systems: list[str], results: dict[str, Any],
                 rtt_ms: float) -> None:
    from benchmarks import failover as fo
    out = results["failover"]
    if "hastate" in systems or "hastate-tls" in systems:
        out["hastate"] = guarded(results, "failover/hastate", lambda: fo.run_trials(
            "hastate (lan)", fo.HastateChildCluster("lan", 0), cfg["trials"]))
        if fo.load_proxy_class() is None:
            out["hastate-multi-region"] = {"skipped": "tests/chaos/proxy.py does not exist; "
                                                      "no delay proxy"}
            log("failover hastate multi-region: skipped (tests/chaos/proxy.py missing)")
        else:
            out["hastate-multi-region"] = guarded(
                results, "failover/hastate-multi-region", lambda: fo.run_trials(
                    f"hastate (multi-region, {rtt_ms:.0f} ms RTT)",
                    fo.HastateChildCluster("multi-region", rtt_ms), cfg["trials"]))
            out["hastate-multi-region"]["rtt_ms"] = rtt_ms
    if "pysyncobj" in systems or "pysyncobj-nobatch" in systems:
        out["pysyncobj"] = guarded(results, "failover/pysyncobj", lambda: fo.run_trials(
            "pysyncobj", fo.PySyncObjFailover(), cfg["baseline_trials"]))
    if "etcd" in systems:
        out["etcd"] = guarded(results, "failover/etcd", lambda: fo.run_trials(
            "etcd", fo.EtcdFailover(), cfg["baseline_trials"]))


def rerun_at_commit(ref: str, argv: list[str]) -> int:
    """Export ``ref``'s src/ and run this benchmark again with it first on PYTHONPATH.

    The repository's working tree may be edited while a run takes minutes; an export pins
    exactly what is measured (its commit is recorded in the results).
    """
    sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", ref + "^{commit}"],
                         capture_output=True, text=True)
    if sha.returncode != 0:
        print(f"--commit {ref}: not a commit: {sha.stderr.strip()}", file=sys.stderr)
        return 2
    commit = sha.stdout.strip()
    export = CLEANUP.tempdir("src-" + commit[:10])
    archive = subprocess.Popen(["git", "-C", str(REPO_ROOT), "archive", commit, "src"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(export)], stdin=archive.stdout, check=True)
    archive.wait()
    env = dict(os.environ, HASTATE_BENCH_COMMIT=commit,
               PYTHONPATH=os.pathsep.join(p for p in (str(export / "src"), str(REPO_ROOT),
                                                      os.environ.get("PYTHONPATH")) if p))
    log(f"measuring commit {commit[:10]} exported to {export}")
    try:
        return subprocess.run([sys.executable, "-m", "benchmarks", *argv], env=env,
                              cwd=str(REPO_ROOT)).returncode
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["engines"]:
        from benchmarks import engines
        return engines.main(given[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    parser.add_argument("--out", type=Path, help="results directory (default results/bench-<time>)")
    parser.add_argument("--systems", help=f"comma-separated subset of {SYSTEMS} (default: all; "
                                           "--quick leaves hastate-tls out)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"subset of {PHASES}")
    parser.add_argument("--baseline", default="pysyncobj", choices=SYSTEMS,
                        help="system every figure is compared with (default: pysyncobj)")
    parser.add_argument("--trials", type=int, help="failover trials for hastate (20; quick 5)")
    parser.add_argument("--baseline-trials", type=int,
                        help="failover trials for pysyncobj and etcd (10; quick 3)")
    parser.add_argument("--large-keys", type=int, help="keys for the large-state run (1M; 200k)")
    parser.add_argument("--saturation", type=float, help="saturation run seconds (60; quick 10)")
    parser.add_argument("--mr-rtt-ms", type=float, default=100.0,
                        help="round trip the multi-region failover proxy adds (default 100)")
    parser.add_argument("--img-dir", type=Path, help="also copy the PNG plots here (docs/img)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop "
                             "below 0.5 (shared machines)")
    parser.add_argument("--commit", metavar="REF",
                        help="measure this commit's src/ (git archive into a temp dir, then rerun "
                             "with it first on PYTHONPATH) instead of the working tree")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install etcd-server when etcd is missing")
    args = parser.parse_args(argv)

    install_signal_handlers()
    if args.commit and not os.environ.get("HASTATE_BENCH_COMMIT"):
        return rerun_at_commit(args.commit, sys.argv[1:] if argv is None else argv)
    cfg = settings(args.quick)
    for key, value in (("trials", args.trials), ("baseline_trials", args.baseline_trials),
                       ("large_keys", args.large_keys), ("saturation_s", args.saturation)):
        if value is not None:
            cfg[key] = value
    systems = [s for s in (args.systems or ",".join(QUICK_SYSTEMS if args.quick else SYSTEMS))
               .split(",") if s]
    phases = [p for p in args.phases.split(",") if p]
    for s in systems:
        if s not in SYSTEMS:
            parser.error(f"unknown system {s!r}; choose from {SYSTEMS}")
    for p in phases:
        if p not in PHASES:
            parser.error(f"unknown phase {p!r}; choose from {PHASES}")
    out = args.out or REPO_ROOT / "results" / time.strftime("bench-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    if args.wait_quiet > 0:
        deadline = time.monotonic() + args.wait_quiet
        while os.getloadavg()[0] >= 0.5 and time.monotonic() < deadline:
            time.sleep(5)
        log(f"load average {os.getloadavg()[0]:.2f} after waiting for a quiet machine")

    import hastate
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": cfg, "baseline": args.baseline, "machine": machine_info(),
        "git": git_state(REPO_ROOT), "hastate_module": hastate.__file__,
        "hastate_commit": os.environ.get("HASTATE_BENCH_COMMIT"),
        "systems": {}, "throughput": {}, "failover": {}, "skipped": {},
    }
    log(f"results -> {out}; hastate from {Path(hastate.__file__).parent}; git "
        f"{results['git']['commit'][:10]} ({len(results['git']['src_dirty_files'])} modified "
        f"files under src/)")
    t_start = time.monotonic()
    try:
        if "etcd" in systems:
            reason = ensure_etcd(not args.no_install)
            if reason:
                print(f"skipped etcd: {reason}", flush=True)
                results["skipped"]["etcd"] = reason
                systems.remove("etcd")
        if args.baseline not in systems:
            log(f"baseline {args.baseline} is not run; ratios are left out")
        if any(p in phases for p in ("throughput", "saturation", "profile", "large")):
            for name in ["etcd", "pysyncobj", "pysyncobj-nobatch", "hastate-tls", "hastate"]:
                if name in systems:
                    log(f"== {name}")
                    guarded(results, name, lambda n=name: run_system(n, cfg, phases, results, out))
        if "failover" in phases:
            log("== failover")
            run_failover(cfg, systems, results, args.mr_rtt_ms)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        results["interrupted"] = True
    finally:
        CLEANUP.run()
    results["wall_seconds"] = round(time.monotonic() - t_start, 1)

    from benchmarks import report
    dump_json(out / "results.json", results)   # first, so a reporting bug loses nothing
    table = report.build_table(results, args.baseline)
    targets = report.evaluate_targets(results)
    results["targets"] = targets
    try:
        scen = report.scenario_text(results)
    except Exception as exc:  # never lose the table over a summary line
        scen = f"(scenario summary failed: {exc!r}; see results.json)"
    in_repo = Path(hastate.__file__).resolve().is_relative_to(REPO_ROOT / "src")
    if os.environ.get("HASTATE_BENCH_COMMIT"):
        measured = f"commit {os.environ['HASTATE_BENCH_COMMIT'][:10]} (exported src/)"
    elif in_repo:
        measured = f"working tree at {results['git']['commit'][:10]}" + (
            " + uncommitted src changes" if results["git"]["src_dirty_files"] else "")
    else:
        measured = f"hastate imported from {Path(hastate.__file__).parent.parent}"
    results["measured"] = measured
    header = (f"hastate benchmarks, {results['started']}, {results['machine']['nproc']} x "
              f"{results['machine']['cpu_model']}, Python {results['machine']['python']}, "
              f"{measured}, wall {results['wall_seconds']:.0f} s")
    ratio_note = (f"(x ratio) = value / {args.baseline} value measured in this run; lower is "
                  f"better for latency and CPU, higher for ops/s")
    noise = [(f"{s}/{w}", r["cpu"].get("foreign_cores", 0.0))
             for s, wls in results["throughput"].items() for w, r in wls.items()
             if isinstance(r, dict) and "cpu" in r]
    if noise:
        worst = max(noise, key=lambda kv: kv[1])
        ratio_note += (f"\nother processes on this machine used {sum(n for _, n in noise) / len(noise):.2f}"
                       f" cores on average during the workloads (worst {worst[1]:.2f} in {worst[0]});"
                       f" load average at start {results['machine']['loadavg_at_start'][0]:.2f}")
    clients = "\n".join(f"  {n}: {i.get('client', '')}" for n, i in results["systems"].items())
    text = "\n".join([header, ratio_note, "", table, "", "targets:", report.targets_text(targets),
                      "", scen, "", "clients:", clients])
    print("\n" + text, flush=True)
    dump_json(out / "results.json", results)
    (out / "summary.md").write_text("```\n" + text + "\n```\n")
    written = report.plots(results, out, args.img_dir)
    log(f"wrote {out / 'results.json'}, {out / 'summary.md'}"
        + (f" and {len(written)} plots" if written else ""))
    return 130 if results.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
