"""The router core of meshd: a sans-IO Cython `Router` plus its plain-Python twin.

`Router` is the compiled core (`_fastroute._core`); `reference.Router` is the model
with the same API. Both take a `spec.Table` and return decisions; see `spec` for the
input format and `constants` for the integer codes.
"""
from . import constants
from ._core import Conditions, Decision, RetryDecision, Router
from .errors import BadRegex, BadResult, FastrouteError, InvalidTransition, TableError, UnknownHandle, UnknownNode
from .spec import (
    DEFAULT_RETRY,
    NO_RETRY,
    ConnectionPool,
    Endpoint,
    GrpcMatch,
    HeaderMatch,
    HttpMatch,
    OutlierDetection,
    QueryMatch,
    RetryPolicy,
    Route,
    Table,
    Target,
    TcpMatch,
    Timeouts,
    VirtualNode,
    VirtualRouter,
    VirtualService,
)

__all__ = [
    "BadRegex", "BadResult", "Conditions", "ConnectionPool", "DEFAULT_RETRY", "Decision", "Endpoint", "FastrouteError",
    "GrpcMatch", "HeaderMatch", "HttpMatch", "InvalidTransition", "NO_RETRY", "OutlierDetection",
    "QueryMatch", "RetryDecision", "RetryPolicy", "Route", "Router", "Table", "TableError",
    "Target", "TcpMatch", "Timeouts", "UnknownHandle", "UnknownNode", "VirtualNode", "VirtualRouter",
    "VirtualService", "constants",
]
