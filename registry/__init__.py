"""registry: meshd's etcd-backed store of keys, transactions, leases and watches.

It stores opaque values under relative paths and enforces the integrity rules it is told
about (parents, references, empty child collections, expected revisions); it knows nothing
of routing, protobuf or the admin API.
"""
from registry.errors import (
    AlreadyExists,
    Compacted,
    Conflict,
    IdempotencyMismatch,
    InUse,
    NotFound,
    RegistryError,
    Unavailable,
)
from registry.store import Event, Item, Page, Store, Write

__all__ = [
    "AlreadyExists", "Compacted", "Conflict", "Event", "IdempotencyMismatch", "InUse", "Item",
    "NotFound", "Page", "RegistryError", "Store", "Unavailable", "Write",
]
