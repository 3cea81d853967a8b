"""Cut a stream of text deltas into sentences as soon as each one is complete."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (and closing quotes/brackets) followed by whitespace; "$89.99" does not end one.
_END = re.compile(r"""[.!?…]+["')\]]*\s+|\n+""")
# A clause ends at , ; : or a dash followed by whitespace ("1,000" does not end one).
_CLAUSE = re.compile(r"""[,;:—–]["')\]]*\s+""")


class SentenceSplitter:
    """Feed deltas with :meth:`push`; it returns the sentences they completed. :meth:`flush` the rest.

    A run-on text longer than ``max_chars`` without an end mark is cut at its last comma or space,
    so one long sentence cannot hold back the first audio. With ``first_clause`` (the default) the first
    piece ends at its first clause mark already ("Hi," of "Hi, you've reached the help line."): it is
    synthesised in a fraction of the sentence's time and speaks while the rest is synthesised, so the
    caller hears the answer sooner; later pieces are whole sentences, which sound better.
    """

    def __init__(self, max_chars: int = 220, *, first_clause: bool = True) -> None:
        self.max_chars = max_chars
        self._text = ""
        self._first = first_clause

    def push(self, delta: str) -> list[str]:
        self._text += delta
        out: list[str] = []
        while True:
            match = _END.search(self._text)
            if self._first:
                clause = _CLAUSE.search(self._text, 0, match.start() if match else len(self._text))
                match = clause or match
            if match is None:
                break
            sentence, self._text = self._text[: match.end()].strip(), self._text[match.end() :]
            if sentence:
                out.append(sentence)
                self._first = False
        while len(self._text) > self.max_chars:
            cut = self._text.rfind(",", 0, self.max_chars)
            if cut <= 0:
                cut = self._text.rfind(" ", 0, self.max_chars)
            cut = cut + 1 if cut > 0 else self.max_chars
            piece, self._text = self._text[:cut].strip(), self._text[cut:]
            if piece:
                out.append(piece)
                self._first = False
        return out

    def flush(self) -> str | None:
        rest, self._text = self._text.strip(), ""
        return rest or None
