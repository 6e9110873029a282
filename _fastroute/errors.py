"""The one exception hierarchy of the router core: errors carry data, not prose."""
from __future__ import annotations


class FastrouteError(Exception):
    """Base of every error `_fastroute` raises."""


class TableError(FastrouteError, ValueError):
    """An invalid table: `path` names the field, `reason` is a stable code.

    Reasons: ``bad_regex``, ``all_zero_weights``, ``unknown_target``,
    ``unknown_router``, ``unknown_node``, ``duplicate_name``, ``duplicate_port``,
    ``bad_value``, ``bad_type``, ``missing``, ``conflict``, ``unknown_event``.
    """

    def __init__(self, path: str, reason: str, value: object = None) -> None:
        super().__init__(path, reason, value)
        self.path = path
        self.reason = reason
        self.value = value

    def __str__(self) -> str:
        return f"{self.path}: {self.reason} ({self.value!r})"


class BadRegex(FastrouteError, ValueError):
    """A pattern RE2 cannot compile: `pattern`, RE2's error as a stable `code` (such as
    ``bad_escape`` for a backreference, ``bad_perl_op`` for lookaround) and its `reason`."""

    def __init__(self, pattern: str, code: str, reason: str) -> None:
        super().__init__(pattern, code, reason)
        self.pattern = pattern
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason} (in {self.pattern!r})"


class InvalidTransition(FastrouteError):
    """A request-lifecycle input that the retry state table has no row for."""

    def __init__(self, state: int, input: int) -> None:
        super().__init__(state, input)
        self.state = state
        self.input = input


class UnknownNode(FastrouteError, KeyError):
    """An endpoint update named a virtual node that the table does not have."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


class UnknownHandle(FastrouteError, KeyError):
    """A pool call named a connection handle the pool does not track."""

    def __init__(self, handle: object) -> None:
        super().__init__(handle)
        self.handle = handle


class BadResult(FastrouteError, ValueError):
    """`Router.result` got a result kind it does not know."""

    def __init__(self, kind: object, code: object) -> None:
        super().__init__(kind, code)
        self.kind = kind
        self.code = code
