"""The interface of a similarity backend, and the matcher that picks an intent by its examples."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class ExampleIndex(Protocol):
    """A backend's view of a fixed list of example utterances."""

    def similarities(self, text: str) -> Sequence[float]:
        """Cosine similarity of ``text`` to each example, in the order they were indexed."""
        ...


class Embedder(Protocol):
    """A similarity backend: ``index`` a list of examples once, then score caller lines against it."""

    name: str
    threshold: float
    """Default similarity under which a line matches no intent (backends score on different scales)."""
    offload: bool
    """Scoring takes milliseconds outside the GIL: callers on an event loop run it in a thread."""

    def index(self, examples: Sequence[str]) -> ExampleIndex: ...


MAX_SCORED_CHARS = 1000
"""How much of a caller line is scored: its intent is in its first words (the embedding model reads
128 tokens, ~600 characters, anyway). A caller line may be as long as a client event (256 KiB): scored
whole, the n-gram backend took ~0.75 s of CPU on the agent's event loop, and the cache held it whole."""


def _key(text: str) -> str:
    """What is scored and cached: the line's first ``MAX_SCORED_CHARS``, lower-cased, blanks collapsed."""
    return " ".join(text[:MAX_SCORED_CHARS].lower().split())


@dataclass(frozen=True)
class IntentMatch:
    intent: str
    score: float
    example: str
    """The declared example the line was closest to."""


class IntentMatcher:
    """Nearest declared example wins; below ``threshold`` the line matches no intent."""

    def __init__(
        self,
        intents: Mapping[str, Sequence[str]],
        embedder: Embedder,
        threshold: float | None = None,
        *,
        cache_size: int = 4096,
    ) -> None:
        self.embedder = embedder
        self.threshold = embedder.threshold if threshold is None else threshold
        self._labels = [(name, example) for name, examples in intents.items() for example in examples]
        self._index = embedder.index([example for _, example in self._labels])
        # Callers repeat themselves ("yes", "hi there"): a line scored once is not scored again.
        # Bounded, and thread-safe (scoring runs in worker threads).
        self._cache_size = cache_size
        self._cache: OrderedDict[str, IntentMatch] = OrderedDict()
        self._lock = threading.Lock()

    def best(self, text: str) -> IntentMatch | None:
        """The closest example's intent, whatever its score (``None`` only for an empty matcher)."""
        key = _key(text)
        if not self._labels or not key:
            return None
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        found = self._score(key)
        with self._lock:
            self._cache[key] = found
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def cached(self, text: str) -> tuple[bool, IntentMatch | None]:
        """``(True, match)`` when ``match(text)`` needs no scoring (seen before, or nothing to score), so a
        caller that offloads scoring to a thread can skip the thread hop; ``(False, None)`` otherwise."""
        key = _key(text)
        if not self._labels or not key:
            return True, None
        with self._lock:
            found = self._cache.get(key)
        if found is None:
            return False, None
        return True, found if found.score >= self.threshold else None

    def _score(self, text: str) -> IntentMatch:
        scores = self._index.similarities(text)
        top = max(range(len(scores)), key=scores.__getitem__)
        name, example = self._labels[top]
        return IntentMatch(name, float(scores[top]), example)

    def match(self, text: str) -> IntentMatch | None:
        """The intent of ``text``, or ``None`` when no example is similar enough."""
        best = self.best(text)
        return best if best is not None and best.score >= self.threshold else None
