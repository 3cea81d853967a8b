"""Semantic end of turn: Silero finds the pauses, the caller's words decide how long a pause may last.

``turn_detection: {"type": "semantic_vad", "eagerness": ...}`` with no extra model: when the caller has
been silent for ``PROBE_MS``, the edge transcribes the words so far (Whisper, the same call as a partial
transcript) and :func:`end_of_turn` reads them. A sentence that is plainly unfinished (it ends on a
conjunction, a preposition, an article, a filler such as "um", a comma or an ellipsis) holds the turn
open up to the eagerness's maximum (GA: 8 s low, 4 s medium, 2 s high); a complete sentence or a
question closes it after a short wait; anything else waits as long as a plain pause. While the words are
being transcribed the turn stays open (at most the maximum), so a slow decode on a busy machine delays
the answer rather than cutting the caller off. Speech resuming forgets the verdict. docs/voice.md has
the figures against server VAD.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .turn_detection import ServerVadConfig, TurnDetector

Eagerness = Literal["low", "medium", "high", "auto"]
Verdict = Literal["complete", "unfinished", "unknown"]

WAITS: dict[str, dict[Verdict, int]] = {
    "high": {"complete": 250, "unknown": 500, "unfinished": 2000},
    "medium": {"complete": 300, "unknown": 800, "unfinished": 4000},
    "low": {"complete": 600, "unknown": 1500, "unfinished": 8000},
}
"""Silence (ms, from the last speech frame) that ends a turn, by eagerness and verdict on the words."""

_PREPOSITIONS = {"to", "for", "of", "at", "with", "from", "about", "into", "onto", "by", "as", "like", "after",
                 "before", "than", "without", "between"}  # fmt: skip
_WH = {"what", "what's", "who", "who's", "where", "where's", "which", "how", "whom", "whose", "when"}
_COPULAS = {"is", "are", "was", "were", "am"}
_PRONOUNS = {"it", "that", "this", "he", "she", "there", "here", "they", "we", "you", "i", "who", "what", "which"}
_FILLERS = {"um", "umm", "uh", "uhm", "er", "erm", "hmm", "mm", "ah"}
_GO_ON = {
    # conjunctions: something must follow
    "and", "or", "but", "nor", "so", "because", "cause", "since", "although", "though", "if", "unless",
    "until", "while", "whereas", "whether", "plus",
    # prepositions that do not end a phrasal verb ("log in", "sign up" end sentences; "for" does not)
    *_PREPOSITIONS,
    # articles, possessive determiners, and a subject waiting for its verb
    "a", "an", "the", "my", "your", "our", "their", "i", "i'm", "i'd", "i'll", "i've", "it's", "there's",
    "we're", "you're", "they're", "just",
}  # fmt: skip
_COMPLETE_SO = {"think", "hope", "guess", "believe", "suppose", "said", "say"}  # "I think so." ends
_TRAILING = re.compile(r"(,|;|:|-|—|–|\.\.\.|…)\s*$")


def end_of_turn(text: str) -> Verdict:
    """Whether ``text`` (a transcript so far) reads as a finished turn, plainly unfinished, or neither."""
    text = text.strip()
    if not text:
        return "unknown"
    if _TRAILING.search(text):
        return "unfinished"
    said = re.findall(r"[a-z']+", text.lower())
    last, before = (said[-1] if said else ""), (said[-2] if len(said) > 1 else "")
    if text.endswith("?") and (last not in _GO_ON or (last in _PREPOSITIONS and _WH & set(said))):
        return "complete"  # "Who is this for?" ends; "Can you tell me about?" (Whisper's "?") does not
    if last in _FILLERS or (last in _GO_ON and not (last == "so" and before in _COMPLETE_SO)):
        return "unfinished"
    if last in _COPULAS and before not in _PRONOUNS:  # "My order number is." goes on; "Yes, it is." ends
        return "unfinished"
    if text[-1] in ".!":
        return "complete"
    return "unknown"


class SemanticVadConfig(BaseModel):
    """``session.audio.input.turn_detection`` with ``type: semantic_vad`` (GA ``SemanticVad``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Eagerness = "auto"
    """``low`` waits longer for the caller to go on, ``high`` answers sooner; ``auto`` is ``medium``."""
    create_response: bool = True
    interrupt_response: bool = True

    @property
    def prefix_padding_ms(self) -> int:
        return self.vad().prefix_padding_ms

    @property
    def waits(self) -> dict[Verdict, int]:
        return WAITS["medium" if self.eagerness == "auto" else self.eagerness]

    def vad(self) -> ServerVadConfig:
        """The server VAD under it: default threshold and padding; a pause not yet judged waits ``unknown``."""
        return ServerVadConfig(
            silence_duration_ms=self.waits["unknown"],
            create_response=self.create_response,
            interrupt_response=self.interrupt_response,
        )


TurnDetection = ServerVadConfig | SemanticVadConfig


class SemanticTurnDetector(TurnDetector):
    """:class:`TurnDetector` whose required silence follows the verdict on the words of the current pause.

    The caller (the edge, or the benchmark) asks :meth:`pause` after feeding audio; a token means "a pause
    began: transcribe the words so far and call :meth:`judge` with them". A verdict for a pause that
    speech has since ended is ignored.
    """

    def __init__(self, config: SemanticVadConfig) -> None:
        self.semantic = config
        self.verdict: Verdict | None = None
        super().__init__(config.vad())

    def silence_ms(self) -> float:
        if self.verdict is None and self._asked:  # the words are being transcribed: wait for them, at most the max
            return self.semantic.waits["unfinished"]
        return self.semantic.waits[self.verdict or "unknown"]

    def _new_pause(self) -> None:
        if self.verdict is not None and not self._asked:
            self._pause += 1
        super()._new_pause()
        self.verdict = None

    def judge(self, token: int, text: str) -> Verdict | None:
        """Apply the verdict on the words said before pause ``token``; None when that pause is over."""
        if token != self._pause or not self.speaking:
            return None
        self.verdict = end_of_turn(text)
        return self.verdict
