"""Every NATS subject, queue group, stream and bucket name Switchboard uses — in one place.

===========================================  =====================================================
``switchboard.v1.agent.<agent>.turn``        turn requests for one agent's stable track; queue group
                                             ``agent.<agent>`` so N replicas share the load
``switchboard.v1.agent.<agent>.canary.turn``  turn requests for its canary track; queue group
                                             ``agent.<agent>.canary``
``switchboard.v1.supervisor.<name>.consult``  consult requests for a supervisor; queue group
                                             ``supervisor.<name>``
``switchboard.v1.agent.<agent>.cancel``      a caller stops a request it sent (every replica and track
``switchboard.v1.supervisor.<name>.cancel``  of it listens, no queue group; the one running it stops)
``switchboard.v1.audit.handoff.<session>``   handoff decisions (JetStream stream ``SWITCHBOARD_AUDIT``)
``switchboard.v1.audit.turn.<session>``      one record per caller turn (same stream)
``switchboard.v1.control.<action>``          control-plane changes (keys, rollouts): stream
                                             ``SWITCHBOARD_CONTROL``, listed by ``switchboard audit``
``switchboard.v1.edge.session.<session>.takeover``  request to the edge holding a live connection on
                                             the session: close it (the newer connection wins)
KV bucket ``switchboard_sessions``           session state, key = session id
KV bucket ``switchboard_rollouts``           rollout of one agent (weight, state), key = agent
KV bucket ``switchboard_client_secrets``     used client secrets (single use), key = secret id, TTL
KV bucket ``switchboard_edge``               the edges' shared signing secret when none is configured
===========================================  =====================================================

Turn replies (deltas, then one result or error) go to the request's private reply inbox.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

PREFIX = "switchboard.v1"
AUDIT_STREAM = "SWITCHBOARD_AUDIT"
AUDIT_SUBJECTS = f"{PREFIX}.audit.>"
SESSIONS_BUCKET = "switchboard_sessions"
ROLLOUTS_BUCKET = "switchboard_rollouts"
STABLE = "stable"
CONTROL_STREAM = "SWITCHBOARD_CONTROL"
CONTROL_SUBJECTS = f"{PREFIX}.control.>"
CLIENT_SECRETS_BUCKET = "switchboard_client_secrets"
EDGE_BUCKET = "switchboard_edge"
HISTORY_STREAM = "SWITCHBOARD_HISTORY"
"""Conversation items that left a session's hot window, one message per item (the full transcript)."""
HISTORY_SUBJECTS = f"{PREFIX}.history.>"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_token(value: str, what: str) -> str:
    """Names that become subject tokens or KV keys: letters, digits, ``_`` and ``-`` only."""
    if not _TOKEN.match(value):
        raise ConfigError(f"invalid {what} {value!r}: use 1-128 letters, digits, '_' or '-'")
    return value


def agent_turn(agent: str, track: str = STABLE) -> str:
    """The stable track keeps the subject it always had; another track adds its name before ``turn``."""
    name = check_token(agent, "agent name")
    if track == STABLE:
        return f"{PREFIX}.agent.{name}.turn"
    return f"{PREFIX}.agent.{name}.{check_token(track, 'track')}.turn"


def agent_queue(agent: str, track: str = STABLE) -> str:
    name = check_token(agent, "agent name")
    return f"agent.{name}" if track == STABLE else f"agent.{name}.{check_token(track, 'track')}"


def agent_cancel(agent: str) -> str:
    """Every replica of ``agent``, on every track, listens here for requests their callers stopped."""
    return f"{PREFIX}.agent.{check_token(agent, 'agent name')}.cancel"


def supervisor_cancel(name: str) -> str:
    return f"{PREFIX}.supervisor.{check_token(name, 'supervisor name')}.cancel"


def audit_handoff(session_id: str) -> str:
    return f"{PREFIX}.audit.handoff.{check_token(session_id, 'session id')}"


def supervisor_consult(name: str) -> str:
    return f"{PREFIX}.supervisor.{check_token(name, 'supervisor name')}.consult"


def supervisor_queue(name: str) -> str:
    return f"supervisor.{check_token(name, 'supervisor name')}"


def audit_turn(session_id: str) -> str:
    return f"{PREFIX}.audit.turn.{check_token(session_id, 'session id')}"


def audit_session(session_id: str) -> str:
    """Every audit record of one session."""
    return f"{PREFIX}.audit.*.{check_token(session_id, 'session id')}"


def session_takeover(session_id: str) -> str:
    """The edge holding a live connection on ``session_id`` listens here; a request closes that connection."""
    return f"{PREFIX}.edge.session.{check_token(session_id, 'session id')}.takeover"


def history_items(session_id: str) -> str:
    """Archived conversation items of one session (stream ``SWITCHBOARD_HISTORY``)."""
    return f"{PREFIX}.history.{check_token(session_id, 'session id')}"


def control_action(action: str) -> str:
    """The subject of one control-plane change, e.g. ``key.created`` -> ``switchboard.v1.control.key_created``."""
    return f"{PREFIX}.control.{check_token(action.replace('.', '_'), 'control action')}"
