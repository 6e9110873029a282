"""The surface of the RE2 binding that Python sees (see _re2.pxd for the C side)."""
from .errors import BadRegex as BadRegex

__all__ = ["BadRegex", "Regex"]

class Regex:
    pattern: str
    def __init__(self, pattern: str) -> None: ...
    def fullmatch(self, text: str, endpos: int = ...) -> bool: ...
