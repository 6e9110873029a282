"""The router core of meshd: a sans-IO Cython `Router` plus its plain-Python twin.

`Router` is the compiled core (`_fastroute._core`); `reference.Router` is the model
with the same API. Both take a `spec.Table` and return decisions; see `spec` for the
input format and `constants` for the integer codes.
"""
from . import constants
from ._core import Conditions, Decision, RetryDecision, Router, TokenBucket
from .errors import BadRegex, BadResult, FastrouteError, InvalidTransition, TableError, UnknownHandle, UnknownNode
from .spec import (
    DEFAULT_RETRY,
    NO_RETRY,
    ConnectionPool,
    Endpoint,
    Fault,
    FaultAbort,
    FaultDelay,
    GrpcMatch,
    HeaderMatch,
    HttpMatch,
    LocalityLb,
    Mirror,
    OutlierDetection,
    QueryMatch,
    RateLimit,
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
    "Fault", "FaultAbort", "FaultDelay", "GrpcMatch", "HeaderMatch", "HttpMatch", "InvalidTransition", "LocalityLb",
    "Mirror", "NO_RETRY", "OutlierDetection", "QueryMatch", "RateLimit", "RetryDecision", "RetryPolicy", "Route",
    "Router", "Table", "TableError", "Target", "TcpMatch", "Timeouts", "TokenBucket", "UnknownHandle", "UnknownNode",
    "VirtualNode", "VirtualRouter", "VirtualService", "constants",
]
