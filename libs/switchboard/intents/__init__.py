"""Intents for the offline model: example utterances per intent, matched by similarity.

An agent's YAML declares ``offline.intents`` (name -> example caller lines); its rules test
``when_intent``. A line takes the intent of its most similar example, unless that similarity is
under the backend's threshold. Backends: ``minilm`` (a sentence-embedding model shipped in a wheel,
the ``embeddings`` extra) and ``ngram`` (TF-IDF over words and character n-grams, always available).
"""

from ._base import Embedder, ExampleIndex, IntentMatch, IntentMatcher
from ._errors import EmbedderUnavailable, IntentError
from ._minilm import MiniLMEmbedder
from ._ngrams import NgramEmbedder
from ._select import BACKENDS, BackendName, get_embedder

__all__ = [
    "BACKENDS",
    "BackendName",
    "Embedder",
    "EmbedderUnavailable",
    "ExampleIndex",
    "IntentError",
    "IntentMatch",
    "IntentMatcher",
    "MiniLMEmbedder",
    "NgramEmbedder",
    "get_embedder",
]
