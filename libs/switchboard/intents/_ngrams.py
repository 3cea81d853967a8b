"""The dependency-free backend: TF-IDF over words and character n-grams of the declared examples.

Character n-grams (3 to 5, inside word boundaries) let inflections and compounds meet ("charged",
"overcharge", "charge"); IDF is fit on the agent's own examples, so words every intent uses weigh
little. A line's words that no example uses still count in its norm: a long line that shares one
word with an example is not taken for that example.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[^\W_]+(?:'[^\W\d_]+)?")
"""Letters and digits of any script (was ``[a-z0-9]``: a Cyrillic, Greek or Japanese example had no feature at
all, so even the example itself matched nothing, and accented words were cut at the accent)."""
_STOP = frozenset(
    "a an the and or but so if of to in on at for from with by about as into is are am was were be been "
    "being do does did i im me my mine we us our you your it its this that these those there heres theres "
    "whats he she they them their can could would will shall should may might must just please um uh oh "
    "well like want wanted need needed also something anything thing things get got tell know".split()
)
_SIZES = (3, 4, 5)
Vector = dict[str, float]


def _words(text: str) -> list[str]:
    words = [w.replace("'", "") for w in _WORD.findall(text.lower().replace("\u2019", "'"))]
    words = ["0" if any(ch.isdigit() for ch in w) else w for w in words]  # A1001, 1234: an id is an id
    content = [w for w in words if w not in _STOP]
    return content or words  # "hi there" is all stop words, yet it is what the caller said


def features(text: str) -> Counter[str]:
    """Sparse term counts: ``w:`` words, ``b:`` adjacent-word pairs, ``c:`` character n-grams."""
    words = _words(text)
    counts: Counter[str] = Counter()
    for word in words:
        counts["w:" + word] += 1
        padded = f"<{word}>"
        for size in _SIZES:
            for start in range(len(padded) - size + 1):
                counts["c:" + padded[start : start + size]] += 1
    for left, right in zip(words, words[1:], strict=False):
        counts[f"b:{left}_{right}"] += 1
    return counts


class _NgramIndex:
    def __init__(self, examples: Sequence[str]) -> None:
        counted = [features(e) for e in examples]
        docs = len(counted)
        df: Counter[str] = Counter()
        for c in counted:
            df.update(c.keys())
        self._idf = {term: math.log((1 + docs) / (1 + n)) + 1.0 for term, n in df.items()}
        self._unseen_idf = math.log(1 + docs) + 1.0
        self._size = docs
        self._postings: dict[str, list[tuple[int, float]]] = {}
        """term -> (example, weight): a line only visits the examples that share its terms."""
        for n, c in enumerate(counted):
            for term, weight in self._vector(c).items():
                self._postings.setdefault(term, []).append((n, weight))

    def _vector(self, counts: Counter[str]) -> Vector:
        weights = {t: (1.0 + math.log(n)) * self._idf.get(t, self._unseen_idf) for t, n in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {t: w / norm for t, w in weights.items()}

    def similarities(self, text: str) -> list[float]:
        scores = [0.0] * self._size
        for term, weight in self._vector(features(text)).items():
            for n, other in self._postings.get(term, ()):
                scores[n] += weight * other
        return scores


class NgramEmbedder:
    """TF-IDF cosine over words and character n-grams; pure Python, always available."""

    name = "ngram"
    threshold = 0.15
    offload = False  # ~0.1 ms of pure Python: a thread hop would cost more than it frees

    def index(self, examples: Sequence[str]) -> _NgramIndex:
        return _NgramIndex(examples)
