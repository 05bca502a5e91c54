"""URL parsing shared by the cloud backends: ``scheme://bucket/prefix?key=value``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from hastate.errors import SnapshotError


def split_cloud_url(url: str, *, container: str, example: str,
                    options: frozenset[str]) -> tuple[str, str, dict[str, str]]:
    """``(bucket, prefix, query options)`` of ``url``; SnapshotError naming what is wrong.

    ``container`` is the backend's word for the top level ("bucket", "container"),
    ``options`` the query keys it accepts (each at most once).
    """
    parts = urlsplit(url)
    if not parts.netloc:
        raise SnapshotError(f"{url}: the store URL needs a {container}, e.g. {example}")
    if parts.fragment:
        raise SnapshotError(f"{url}: a store URL has no #fragment; remove it")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in options:
            raise SnapshotError(f"{url}: unknown URL option {key!r}; this store accepts "
                                f"{sorted(options) or 'none'}")
        if key in query:
            raise SnapshotError(f"{url}: URL option {key!r} is given twice")
        if not value:
            raise SnapshotError(f"{url}: URL option {key!r} is empty")
        query[key] = value
    return parts.netloc, parts.path.strip("/"), query


def check_endpoint(endpoint: str, url: str) -> str:
    """``endpoint`` if it is an ``http(s)://host[:port]`` URL; SnapshotError otherwise."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SnapshotError(f"{url}: endpoint_url {endpoint!r} must look like "
                            "https://host[:port] (http:// only for a local test server)")
    return endpoint
