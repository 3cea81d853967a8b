"""Switchboard's benchmark (``make bench``), one concern per module.

``client`` (the Realtime load generator's session), ``workload`` (closed-loop, paced, handoff and idle
phases), ``retail`` (the headline: the shipped default scenario as ``make run`` starts it), ``baselines``
(raw NATS, the Agents SDK in-process), ``tracing`` and ``consult`` (phase groups on stacks of their own),
``stats`` (percentiles, CPU per process and turn), ``results`` and ``report`` (JSON, markdown, README),
``main`` (the order of it all). Helper processes stay scripts in ``bench/``: ``agents_sdk_baseline.py``,
``nats_echo.py``, ``otlp_sink.py``, ``scripted_model.py``.
"""

from .main import main

__all__ = ["main"]
