"""Base class and version constants shared by every v1 wire model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SCHEMA_MAJOR = 1
SCHEMA_VERSION = "1.4"
"""Version written into the ``Switchboard-Schema`` header of every bus message.

Minor bumps are additive (new optional fields); consumers ignore unknown fields, so a
1.x producer can talk to any 1.y consumer. A different major is refused with a typed error.
1.1: ``SessionState.tracks``, ``TurnRecord.tracks`` and the ``rollout`` record (per-agent canaries).
1.2: ``TurnRequest.tail_in_result`` (the end of an answer may travel in the result only), ``TurnResult.config``
(the agent configuration's fingerprint) and the ``control_record`` (control-plane audit).
1.3: the ``cancel_request`` (a caller stops a request it no longer wants the replies of).
1.4: ``SessionState.archive_head`` (archived items in batches that only a stored state makes part of the
conversation; see ``switchboard.state.history``).
"""

TYPE_PREFIX = "switchboard.v1."


class WireModel(BaseModel):
    """A message that crosses a process boundary.

    Unknown fields are ignored so that additive (minor) schema changes never break an older
    consumer; models are frozen because a message, once built, is a fact.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
