"""``hastate check-config FILE``: validate a cluster file and print the timing it implies.

Exit codes (:class:`~hastate.cli.exit.Exit`): OK valid (warnings, if any, are printed);
FAILED valid but with warnings and ``--strict``; USAGE invalid (the message names the key, the
bad value and the fix).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from hastate.addresses import is_loopback_address
from hastate.cli.exit import Exit
from hastate.config import ClusterConfig, load_config
from hastate.consensus.profiles import get_profile


def timing(config: ClusterConfig) -> dict[str, Any]:
    """The timing profile's numbers, in seconds."""
    p = get_profile(config.profile)
    return {"profile": p.name, "max_rtt": p.max_rtt, "heartbeat": p.append_entries_period,
            "election_timeout_min": p.min_timeout, "election_timeout_max": p.max_timeout,
            "lease": round(p.lease_duration, 4), "connection_timeout": p.connection_timeout,
            "failover_bound": round(p.failover_bound, 4)}


def warnings(config: ClusterConfig, env: dict[str, str] | None = None) -> list[str]:
    """Things that are valid but probably not what the operator wants."""
    env = dict(os.environ) if env is None else env
    out = []
    n = len(config.nodes)
    if n < 3:
        out.append(f"{n} node(s): losing any node stops writes; use 3 (one per region) "
                   "for failover")
    elif n % 2 == 0:
        out.append(f"{n} nodes tolerate no more failures than {n - 1}; use an odd number")
    regions = {node.region for node in config.nodes}
    if config.profile == "lan" and len(regions) > 1 and not config.all_loopback:
        out.append(f"profile 'lan' assumes RTT < 5 ms but nodes are in {len(regions)} regions "
                   f"{sorted(regions)}; use profile = \"multi-region\"")
    if config.profile == "multi-region" and config.all_loopback:
        out.append("profile 'multi-region' on a loopback cluster: failover is slower than "
                   "needed; 'lan' fits a single machine")
    transport = getattr(config, "transport", "plaintext")
    if transport == "psk" and config.secret_env and not env.get(config.secret_env):
        out.append(f"{config.secret_env} is not set in this environment; a node started from "
                   "here refuses to start (transport \"psk\" needs the cluster secret)")
    tls = getattr(config, "tls", None)
    if transport == "tls" and tls is not None:
        if not Path(tls.ca).is_file():
            out.append(f"TLS CA file {tls.ca} not found on this machine; create it with "
                       "`hastate certs init` and copy it to every node")
        found = [n.id for n in config.nodes
                 if all(Path(p).is_file() for p in tls.for_node(n.id)[1:])]
        if not found:
            out.append(f"no node's TLS certificate and key ({tls.cert}, {tls.key}) found on "
                       "this machine; each node needs its own")
    if not config.admin_token_env:
        out.append("no admin_token_env: `hastate failover`, POST /admin/* and GET /state are "
                   "disabled")
    elif not env.get(config.admin_token_env):
        out.append(f"{config.admin_token_env} is not set in this environment; admin endpoints "
                   "of nodes started from here are disabled")
    for node in config.nodes:
        if node.http and not is_loopback_address(node.http):
            out.append(f"{node.id}: http {node.http} is not loopback; /status and /metrics are "
                       "unauthenticated, so firewall it to the Prometheus host")
    if config.snapshots.store is None:
        out.append("no [snapshots] store: losing a majority of data_dirs loses the state")
    return out


@click.command("check-config")
@click.argument("config_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings.")
def check_config(config_path: str, as_json: bool, strict: bool) -> None:
    """Validate CONFIG_PATH and print the timing profile it implies."""
    config = load_config(config_path)          # ConfigError -> "error: ..." and exit USAGE
    t = timing(config)
    notes = warnings(config)
    if as_json:
        click.echo(json.dumps({"valid": True, "cluster": config.name, "timing": t,
                               "transport": getattr(config, "transport", "plaintext"),
                               "nodes": [{"id": n.id, "region": n.region, "raft": n.raft,
                                          "http": n.http, "data_dir": str(n.data_dir)}
                                         for n in config.nodes],
                               "warnings": notes}, indent=2))
    else:
        click.echo(f"{config_path}: valid. cluster {config.name!r}, {len(config.nodes)} nodes, "
                   f"profile {t['profile']!r}, transport "
                   f"{getattr(config, 'transport', 'plaintext')!r}")
        for n in config.nodes:
            click.echo(f"  {n.id:14} {n.region:22} raft {n.raft:22} http {n.http or '-':22} "
                       f"{n.data_dir}")
        click.echo(
            f"timing ({t['profile']}, built for RTT <= {t['max_rtt'] * 1000:.0f} ms):\n"
            f"  heartbeat          {t['heartbeat'] * 1000:.0f} ms\n"
            f"  election timeout   {t['election_timeout_min']:.2f}-"
            f"{t['election_timeout_max']:.2f} s (random in this range)\n"
            f"  leader lease       {t['lease']:.3f} s (shorter than the minimum election "
            "timeout)\n"
            f"  connection timeout {t['connection_timeout']:.2f} s\n"
            f"  failover bound     {t['failover_bound']:.2f} s (leader death -> new leader "
            "holding the lease)")
        for note in notes:
            click.echo(f"warning: {note}", err=True)
    if strict and notes:
        raise SystemExit(Exit.FAILED)
