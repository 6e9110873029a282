"""Reading the watch stream for metrics: when the newest change in a WatchResponse was
written, from the resources' own timestamps."""
from __future__ import annotations


def written_at(resp) -> float | None:
    """Wall-clock seconds of the newest write in `resp` (a meshd.v1 WatchResponse): a
    resource's metadata.lastUpdatedAt, an instance's registeredAt. None for a snapshot
    (reset: its resources were written long ago) or a response without timestamps."""
    if resp.reset:
        return None
    newest = None
    for ev in resp.events:
        r = ev.resource
        kind = r.WhichOneof("kind")
        if kind is None:
            continue
        value = getattr(r, kind)
        ts = value.registered_at if kind == "instance" else value.metadata.last_updated_at
        if ts.seconds:
            t = ts.seconds + ts.nanos / 1e9
            newest = t if newest is None or t > newest else newest
    return newest


__all__ = ["written_at"]
