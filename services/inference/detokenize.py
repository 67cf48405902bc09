"""A completion's text as its tokens arrive: what can be sent to the caller already, and where a
stop sequence ends it.

Text is held back while it could still change or still be the start of a stop sequence: a
trailing incomplete UTF-8 character (decoded as U+FFFD) and the longest tail that a stop sequence
begins with. So a streamed delta is never taken back, and a stop sequence never reaches the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

INCOMPLETE = "\ufffd"  # what byte-level decoding gives for the first bytes of a character


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of text may still be the beginning of a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Where the first stop sequence in text[start:] begins, or None."""
    found = [i for stop in stops if (i := text.find(stop, start)) >= 0]
    return min(found) if found else None


class Detokenizer:
    def __init__(self, decode: Callable[[list[int]], str], stops: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stops = tuple(s for s in stops if s)
        self.longest_stop = max((len(s) for s in self.stops), default=0)
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far
        self.sent = 0  # characters of text handed out as deltas
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add a generated token; returns the text that can be sent now (maybe ""). Sets
        ``stopped`` when a stop sequence appeared; the text then ends before it."""
        self.ids.append(token_id)
        self.text = self.decode(self.ids)
        where = find_stop(self.text, self.stops, max(0, self.sent - self.longest_stop))
        if where is not None:
            self.text, self.stopped = self.text[:where], True
            return self._send(len(self.text))
        end = len(self.text.rstrip(INCOMPLETE))
        return self._send(end - held_back(self.text[:end], self.stops))

    def finish(self) -> str:
        """The text held back, once no token will follow."""
        return self._send(len(self.text))

    def _send(self, end: int) -> str:
        if end <= self.sent:
            return ""
        delta, self.sent = self.text[self.sent:end], end
        return delta
