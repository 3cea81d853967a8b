"""Chaos harness: real processes, really killed (SIGKILL) or stopped (SIGSTOP) while turns run.

A run starts the whole system for one fault (:class:`FaultSpec`), drives ``sessions`` concurrent
conversations over real WebSockets until ``turns`` caller turns were attempted, injects the fault
``injections`` times while turns are in flight (each time followed by the fault's recovery), and
then checks what the caller was told against what the system stored:

* **completed**: ``response.done`` (completed) from the agent that should answer, naming the label
  the caller asked about (every chaos reply repeats it, so a mixed-up answer is caught);
* **completed by fallback**: completed, but answered by the fallback agent (or after a failed consult);
* **failed**: ``response.done`` with ``failed``/``cancelled``, an unexpected answer, or nothing at all
  within ``turn_timeout_s`` (a hang). The reasons are kept verbatim;
* **lost**: completed (or fallback) for the caller, but its user message or the reply it heard is
  missing from the session history in JetStream KV afterwards;
* **duplicated**: side effects beyond one per label, counted in the tool's own SQLite store, so a
  double execution shows even when the idempotency key changed between the two;
* latency p50/p99/max of every turn, and of the turns that overlapped a fault window.

A real client is simulated: a connection that drops is reopened on any live edge with
``?session_id=<id>``; the turn whose ``response.done`` never arrived is asked again, re-sending the
same client item id (so an already-committed message is not duplicated: the edge answers

The workload runs on the ``chaos`` scenario (``chaos/scenarios/chaos`` in the repository): the
offline model sleeps ``delay_s`` per call so kills land inside turns, and ``record_effect`` writes
the effect rows. :class:`ChaosModel` answers the same way over HTTP for the model-provider fault.

One concern a module: ``workload`` (what callers say, one turn's record), ``client`` (one caller's
WebSocket), ``model`` (the scripted provider), ``faults`` / ``actions`` / ``catalog`` (what a fault
is, how it is injected and recovered, every fault by name), ``effects`` (the side-effect witness),
``checks`` (stored history and audit against what callers were told), ``stats`` (percentiles,
reasons), ``report`` (the figures and their table), ``run`` (one fault end to end).
"""

from .actions import JETSTREAM_ASSETS, MIN_INFLIGHT, inflight_requests, nats_roles
from .catalog import DEFAULT_FAULTS, fault_catalog
from .checks import lost_turns, platform_retries
from .client import ChaosClient, Clock
from .effects import EFFECTS_DB, EFFECTS_DB_ENV, EffectTally, create_witness, effect_labels, tally_effects
from .errors import ChaosError
from .faults import SESSIONS_STREAM, FaultAction, FaultEnv, FaultSpec
from .model import ChaosModel, ModelFaults
from .report import FaultReport, markdown_table
from .run import ChaosConfig, ChaosRun, Injection, Progress, run_fault
from .stats import percentiles, reason
from .workload import CLERK, CONSULT, FALLBACK_AGENT, SCENARIO, ChaosTurn, Outcome, Workload

__all__ = [
    "CLERK",
    "CONSULT",
    "DEFAULT_FAULTS",
    "EFFECTS_DB",
    "EFFECTS_DB_ENV",
    "FALLBACK_AGENT",
    "JETSTREAM_ASSETS",
    "MIN_INFLIGHT",
    "SCENARIO",
    "SESSIONS_STREAM",
    "ChaosClient",
    "ChaosConfig",
    "ChaosError",
    "ChaosModel",
    "ChaosRun",
    "ChaosTurn",
    "Clock",
    "EffectTally",
    "FaultAction",
    "FaultEnv",
    "FaultReport",
    "FaultSpec",
    "Injection",
    "ModelFaults",
    "Outcome",
    "Progress",
    "Workload",
    "create_witness",
    "effect_labels",
    "fault_catalog",
    "inflight_requests",
    "lost_turns",
    "markdown_table",
    "nats_roles",
    "percentiles",
    "platform_retries",
    "reason",
    "run_fault",
    "tally_effects",
]
