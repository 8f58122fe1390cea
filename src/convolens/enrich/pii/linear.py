"""Regular expressions in linear time: RE2 (``google-re2``), with a lighter ``finditer`` for ASCII text.

RE2 matches without backtracking, so its time is linear in the text whatever the pattern and the
input. Its Python module maps UTF-8 byte offsets back to ``str`` offsets on every match, which costs
~13 µs a search on a chat message (measured: the raw ``RE2.Match`` call is ~2 µs). For ASCII text the
offsets are the same, so ``Pattern.finditer`` calls RE2 directly on the bytes there and leaves other
text to the module's own (also linear) ``finditer``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import re2

# The module's own RE2 object and its Match(); private, so both are looked up defensively and their
# absence (another google-re2 version) falls back to the module's finditer.
_RAW = getattr(re2, "_re2", None)
_UNANCHORED = _RAW.RE2.Anchor.UNANCHORED if _RAW is not None else None


class AsciiMatch:
    """The part of ``re.Match`` the rules use, for a match in ASCII text."""

    __slots__ = ("_spans", "string")

    def __init__(self, string: str, spans: list[tuple[int, int]]) -> None:
        self.string = string
        self._spans = spans

    def start(self, group: int = 0) -> int:
        return self._spans[group][0]

    def end(self, group: int = 0) -> int:
        return self._spans[group][1]

    def group(self, group: int = 0) -> str:
        start, end = self._spans[group]
        return self.string[start:end] if start >= 0 else ""  # type: ignore[return-value]


class Pattern:
    """A compiled RE2 pattern with ``finditer`` and ``search``; groups are addressed by number."""

    def __init__(self, pattern: str) -> None:
        self.compiled = re2.compile(pattern)
        self.pattern = pattern
        raw = getattr(self.compiled, "_regexp", None)
        self._match = raw.Match if raw is not None and _UNANCHORED is not None else None

    def finditer(self, text: str, pos: int = 0) -> Iterator[Any]:
        match = self._match
        if match is None or not text.isascii():
            yield from self.compiled.finditer(text, pos)
            return
        data = text.encode("ascii")
        end = len(data)
        while pos <= end:
            spans = match(_UNANCHORED, data, pos, end)
            if spans[0][0] < 0:
                return
            yield AsciiMatch(text, spans)
            pos = spans[0][1] if spans[0][1] > spans[0][0] else spans[0][1] + 1

    def search(self, text: str, pos: int = 0) -> Any:
        return next(self.finditer(text, pos), None)

    def split(self, text: str) -> list[str]:
        pieces, last = [], 0
        for match in self.finditer(text):
            pieces.append(text[last : match.start()])
            last = match.end()
        pieces.append(text[last:])
        return pieces


def compile(pattern: str) -> Pattern:
    return Pattern(pattern)
