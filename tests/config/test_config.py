"""Cluster files: valid ones load, every bad one names the file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from hastate.config import load_config, parse_config
from hastate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def base(**cluster: object) -> dict:
    return {"cluster": {"name": "c", **cluster}, "nodes": [
        {"id": f"n{i}", "raft": f"127.0.0.1:{4000 + i}", "http": f"127.0.0.1:{5000 + i}",
         "data_dir": f"/tmp/n{i}"} for i in range(3)]}


@pytest.mark.parametrize("name", ["local.toml", "three-region.toml"])
def test_shipped_cluster_files_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HASTATE_CLUSTER_SECRET", "s3cret")
    cfg = load_config(ROOT / "cluster" / name)
    assert len(cfg.nodes) == 3 and len({n.region for n in cfg.nodes}) == 3


def test_tls_paths_resolve_and_expand_the_node_id(tmp_path: Path) -> None:
    doc = base(transport="tls")
    doc["tls"] = {"ca": "tls/ca.pem", "cert": "tls/{id}.pem", "key": "/k/{id}.key"}
    cfg = parse_config(doc, base_dir=tmp_path)
    assert cfg.tls.for_node("n1") == (str(tmp_path / "tls/ca.pem"), str(tmp_path / "tls/n1.pem"),
                                      "/k/n1.key")


def test_relative_data_dir_resolves_against_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[cluster]\nname="x"\n[[nodes]]\nid="a"\nraft="127.0.0.1:1"\ndata_dir="d/a"\n')
    assert load_config(f).nodes[0].data_dir == tmp_path / "d" / "a"


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["cluster"].update(colour="red"), r"cluster: unknown key\(s\) \['colour'\]"),
    (lambda d: d["nodes"][1].update(id="n0"), r"nodes\[1\].id: duplicate id 'n0'"),
    (lambda d: d["nodes"][2].update(raft="127.0.0.1:4000"), r"nodes\[2\].raft: duplicate raft"),
    (lambda d: d["nodes"][2].update(http="127.0.0.1:5000"), r"nodes\[2\].http: duplicate http"),
    (lambda d: d["nodes"][0].update(raft="nohost"), r"nodes\[0\].raft: bad address 'nohost'"),
    (lambda d: d["nodes"][0].update(raft="h:99999"), r"outside 1-65535"),
    (lambda d: d["nodes"][0].pop("data_dir"), r"nodes\[0\].data_dir: missing required key"),
    (lambda d: d["cluster"].update(profile="moon"), r"cluster.profile: unknown profile 'moon'"),
    (lambda d: d.update(nodes=[]), r"nodes: at least one"),
    (lambda d: d["nodes"][0].update(raft="10.0.0.1:4000"), r"tls: transport \"tls\" needs a \[tls\]"),
    (lambda d: (d["nodes"][0].update(raft="10.0.0.1:4000"), d["cluster"].update(transport="plaintext")),
     r"cluster.transport: plaintext Raft traffic is allowed only"),
    (lambda d: d["cluster"].update(transport="psk"), r"cluster.secret_env: transport \"psk\" needs"),
    (lambda d: d["cluster"].update(transport="carrier-pigeon"), r"unknown transport"),
    (lambda d: d.update(tls={"ca": "x"}), r"tls.cert: missing required key"),
    (lambda d: d.update(snapshots={"interval": -1}), r"snapshots.interval: must be at least 0.1s"),
    (lambda d: d.update(snapshots={"store": "bucket"}), r"snapshots.store: must be a URL"),
    (lambda d: d.update(extra={}), r"unknown key\(s\) \['extra'\]"),
    (lambda d: d["cluster"].update(watch_history=0),
     r"cluster.watch_history: must be an integer >= 1"),
    (lambda d: d["cluster"].update(watch_buffer="big"),
     r"cluster.watch_buffer: must be an integer >= 1"),
])
def test_bad_config_names_key_and_fix(mutate, match) -> None:
    doc = base()
    mutate(doc)
    with pytest.raises(ConfigError, match=match):
        parse_config(doc, path="cluster.toml")


def test_watch_settings_default_and_parse() -> None:
    assert (parse_config(base()).watch_history, parse_config(base()).watch_buffer) == (10_000, 1024)
    doc = base()
    doc["cluster"].update(watch_history=50, watch_buffer=7)
    assert (parse_config(doc).watch_history, parse_config(doc).watch_buffer) == (50, 7)


def test_error_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[cluster\nname=")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_config(f)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read cluster file"):
        load_config(tmp_path / "nope.toml")


def test_unknown_node_id_lists_known_ones() -> None:
    cfg = parse_config(base())
    with pytest.raises(ConfigError, match=r"unknown node id 'n9'.*\['n0', 'n1', 'n2'\]"):
        cfg.node("n9")


def test_missing_secret_env_value_with_psk(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = base(secret_env="HST_TEST_SECRET", transport="psk")
    doc["nodes"][0]["raft"] = "10.1.1.1:4000"
    cfg = parse_config(doc)
    monkeypatch.delenv("HST_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match="export HST_TEST_SECRET"):
        cfg.secret()
    monkeypatch.setenv("HST_TEST_SECRET", "x")
    assert cfg.secret() == "x"


ids = st.lists(st.text("abcdefgh-", min_size=1, max_size=8), min_size=1, max_size=5, unique=True)


@given(ids, st.sampled_from(["lan", "multi-region"]))
def test_any_valid_cluster_parses_faithfully(node_ids: list[str], profile: str) -> None:
    doc = {"cluster": {"name": "p", "profile": profile},
           "nodes": [{"id": n, "raft": f"127.0.0.1:{2000 + i}", "data_dir": f"/d/{n}"}
                     for i, n in enumerate(node_ids)]}
    cfg = parse_config(doc)
    assert [n.id for n in cfg.nodes] == node_ids and cfg.profile == profile
    assert all(cfg.node(n).raft == f"127.0.0.1:{2000 + i}" for i, n in enumerate(node_ids))
