"""``hastate certs init|issue``: the cluster CA and node certificates for mutual TLS on Raft.

``init`` makes a new CA and a certificate per node; ``issue`` signs one more node's
certificate with the existing CA (a node about to be added with ``hastate members add``).

Each node certificate names its node id as the URI SAN ``urn:hastate:node:<id>`` (what the
transport checks, see docs/security.md). Private keys are written with mode 0600 into an
output directory created 0700. Copy ``ca.pem``, ``<id>.pem`` and ``<id>.key`` to each node,
and keep ``ca.key`` offline: whoever holds it can mint a member certificate.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from hastate.config import load_config
from hastate.consensus import tls


def _node_ids(config_path: str | None, nodes: tuple[str, ...]) -> list[str]:
    if bool(config_path) == bool(nodes):
        raise click.UsageError("give either --config FILE or one --node ID per node")
    ids = [node.id for node in load_config(config_path).nodes] if config_path else list(nodes)
    if len(set(ids)) != len(ids):
        raise click.UsageError(f"node ids must be distinct, got {ids}")
    return [tls.check_node_id(node_id) for node_id in ids]


@click.group()
def certs() -> None:
    """Certificates for the Raft transport's mutual TLS."""


@certs.command("init")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Cluster file: one certificate per [[nodes]] id.")
@click.option("--node", "nodes", multiple=True, metavar="ID",
              help="A node id (repeat for each node); instead of --config.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for ca.pem, ca.key, <id>.pem and <id>.key.")
@click.option("--days", default=825, show_default=True, type=click.IntRange(1, 3650),
              help="Validity of the node certificates.")
@click.option("--ca-days", default=3650, show_default=True, type=click.IntRange(1, 36500),
              help="Validity of the CA certificate.")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(config_path: str | None, nodes: tuple[str, ...], out_dir: str, days: int,
         ca_days: int, force: bool) -> None:
    """Create a new cluster CA and a certificate + key for every node id."""
    ids = _node_ids(config_path, nodes)
    out = Path(out_dir)
    names = ["ca.pem", "ca.key"] + [f"{node_id}.{ext}" for node_id in ids
                                    for ext in ("pem", "key")]
    existing = [name for name in names if (out / name).exists()]
    if existing and not force:
        raise click.ClickException(f"{out} already has {', '.join(existing)}; "
                                   "use --force to replace them (old certificates stop working)")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = tls.create_ca(days=ca_days)
    (out / "ca.pem").write_bytes(ca.cert_pem)
    tls.write_private(out / "ca.key", ca.key_pem)
    for node_id in ids:
        _write_node_cert(out, ca, node_id, days)
    click.echo(f"wrote CA and {len(ids)} node certificates ({', '.join(ids)}) to "
               f"{os.fspath(out)}; keep ca.key offline")


def _write_node_cert(out: Path, ca: tls.Issued, node_id: str, days: int) -> None:
    issued = tls.issue_node_cert(ca, node_id, days=days)
    (out / f"{node_id}.pem").write_bytes(issued.cert_pem)
    tls.write_private(out / f"{node_id}.key", issued.key_pem)


@certs.command("issue")
@click.argument("node_id", metavar="ID")
@click.option("--ca-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory holding the cluster's ca.pem and ca.key (from `certs init`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where to write ID.pem and ID.key (default: --ca-dir).")
@click.option("--days", default=825, show_default=True, type=click.IntRange(1, 3650),
              help="Validity of the certificate.")
@click.option("--force", is_flag=True, help="Overwrite ID.pem and ID.key if they exist.")
def issue(node_id: str, ca_dir: str, out_dir: str | None, days: int, force: bool) -> None:
    """Sign a certificate for node ID with the existing cluster CA."""
    tls.check_node_id(node_id)
    src = Path(ca_dir)
    missing = [n for n in ("ca.pem", "ca.key") if not (src / n).is_file()]
    if missing:
        raise click.ClickException(f"{src} has no {' or '.join(missing)}; point --ca-dir at "
                                   "the directory `hastate certs init` wrote")
    out = Path(out_dir) if out_dir else src
    existing = [n for n in (f"{node_id}.pem", f"{node_id}.key") if (out / n).exists()]
    if existing and not force:
        raise click.ClickException(f"{out} already has {', '.join(existing)}; use --force "
                                   "to replace them")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = tls.Issued((src / "ca.pem").read_bytes(), (src / "ca.key").read_bytes())
    _write_node_cert(out, ca, node_id, days)
    click.echo(f"wrote {node_id}.pem and {node_id}.key to {os.fspath(out)}, signed by "
               f"{os.fspath(src / 'ca.pem')}")
