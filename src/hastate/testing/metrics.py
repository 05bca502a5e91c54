"""Read a node's ``/metrics`` as Prometheus families, and one sample out of them (tests)."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def scrape(http: str) -> dict[str, Any]:
    """Metric families of the node serving ``http`` ("host:port"), by family name."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float | None:
    """Value of the sample ``name`` (exposition name, e.g. ``x_total``) with ``labels``."""
    family = name
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            family = name[: -len(suffix)]
    for s in families[family].samples if family in families else ():
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None
