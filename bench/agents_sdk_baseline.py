"""In-process yardstick: OpenAI Agents SDK `Runner.run` latency/throughput with a zero-latency fake model.

python bench/agents_sdk_baseline.py --runs 2000 --concurrency 200 --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, ModelResponse, Runner, Usage, set_tracing_disabled
from agents import __version__ as sdk_version
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

REPLY = "Hello! How can I help?"
RETURNS_REPLY = "Sure, I can help with your return."
USER_INPUT = "I want to return my order."
_ids = itertools.count()


class FakeModel(Model):
    """Stateless scripted model: hands off if the agent has handoffs, else answers `text` instantly."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _output(self, handoffs: list[Handoff[Any, Any]]) -> list[TResponseOutputItem]:
        n = next(_ids)
        if handoffs:  # triage: call the handoff tool by the name the SDK's Handoff object carries
            name = handoffs[0].tool_name
            return [ResponseFunctionToolCall(type="function_call", name=name, arguments="{}", call_id=str(n))]
        text = ResponseOutputText(type="output_text", text=self.text, annotations=[])
        return [ResponseOutputMessage(id=str(n), type="message", role="assistant", status="completed", content=[text])]

    # fmt: off
    async def get_response(
        self, system_instructions: str | None, input: str | list[TResponseInputItem], model_settings: Any,
        tools: list[Any], output_schema: Any, handoffs: list[Handoff[Any, Any]], tracing: ModelTracing,
        *, previous_response_id: str | None, conversation_id: str | None, prompt: Any,
    ) -> ModelResponse:
        return ModelResponse(output=self._output(handoffs), usage=Usage(), response_id=None)

    async def stream_response(
        self, system_instructions: str | None, input: str | list[TResponseInputItem], model_settings: Any,
        tools: list[Any], output_schema: Any, handoffs: list[Handoff[Any, Any]], tracing: ModelTracing,
        *, previous_response_id: str | None, conversation_id: str | None, prompt: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        response = Response(
            id=f"r{next(_ids)}", created_at=0, model="fake", object="response", output=self._output(handoffs),
            tool_choice="none", tools=[], top_p=None, parallel_tool_calls=False, status="completed",
        )
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=0)
    # fmt: on


def build_agents() -> tuple[Agent[Any], Agent[Any]]:
    plain = Agent(name="triage", instructions="Triage the user.", model=FakeModel(REPLY))
    returns = Agent(name="returns", instructions="Handle returns.", model=FakeModel(RETURNS_REPLY))
    triage = Agent(name="triage", instructions="Triage the user.", model=FakeModel(REPLY), handoffs=[returns])
    return plain, triage


async def run_checked(agent: Agent[Any], handoff: bool) -> None:
    result = await Runner.run(agent, USER_INPUT)
    if handoff:
        if result.last_agent.name != "returns" or result.final_output != RETURNS_REPLY:
            raise RuntimeError(f"handoff broken: {result.last_agent.name!r} -> {result.final_output!r}")
    elif result.final_output != REPLY:
        raise RuntimeError(f"plain run broken: final_output={result.final_output!r}")


def pct(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    return sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)]


async def latency(agent: Agent[Any], handoff: bool, runs: int, warmup: int) -> dict[str, float | int]:
    for _ in range(warmup):
        await run_checked(agent, handoff)
    samples: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await run_checked(agent, handoff)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    mean = statistics.fmean(samples)
    return {"p50_ms": pct(samples, 50), "p99_ms": pct(samples, 99), "mean_ms": mean, "n": runs}


async def throughput(agent: Agent[Any], handoff: bool, runs: int, concurrency: int) -> float:
    remaining = iter(range(runs))

    async def worker() -> None:
        for _ in remaining:  # shared iterator: workers pull until `runs` are done
            await run_checked(agent, handoff)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return runs / (time.perf_counter() - t0)


async def measure(runs: int = 2000, concurrency: int = 200, warmup: int = 200) -> dict[str, Any]:
    set_tracing_disabled(True)
    plain_agent, triage = build_agents()
    plain = await latency(plain_agent, False, runs, warmup)
    handoff = await latency(triage, True, runs, warmup)
    return {
        "sdk_version": sdk_version,
        "plain": plain,
        "handoff": handoff,
        "handoff_added_ms_p50": handoff["p50_ms"] - plain["p50_ms"],
        "concurrent": {
            "concurrency": concurrency,
            "runs": runs,
            "plain_runs_per_s": await throughput(plain_agent, False, runs, concurrency),
            "handoff_runs_per_s": await throughput(triage, True, runs, concurrency),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--out", default=None, help="write JSON results here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    res = asyncio.run(measure(args.runs, args.concurrency, args.warmup))
    p, h, c = res["plain"], res["handoff"], res["concurrent"]
    print(f"openai-agents {res['sdk_version']} (fake model, tracing off), n={args.runs}")
    print(f"  plain   p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms  mean {p['mean_ms']:.3f} ms")
    print(f"  handoff p50 {h['p50_ms']:.3f} ms  p99 {h['p99_ms']:.3f} ms  mean {h['mean_ms']:.3f} ms")
    print(f"  handoff adds {res['handoff_added_ms_p50']:.3f} ms at p50")
    pr, hr = c["plain_runs_per_s"], c["handoff_runs_per_s"]
    print(f"  C={c['concurrency']}: plain {pr:.0f} runs/s, handoff {hr:.0f} runs/s")
    print(f"  total {time.perf_counter() - t0:.1f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
