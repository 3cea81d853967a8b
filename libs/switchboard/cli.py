"""The ``switchboard`` command: run the edge, an agent, the whole local stack, or a chat client."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .agents.loader import ScenarioError
from .bus.errors import BusUnreachable
from .errors import ConfigError
from .local.nats_server import NatsConfigError
from .local.parent import stop_with_launcher
from .security.api_keys import DEFAULT_KEYS_FILE, KeyFileError
from .timeline import NoAuditStream

if TYPE_CHECKING:
    from .local.trace_viewer import PhoenixViewer
    from .runtime.service import LoopService

LAUNCHER_KEPT_LINES = 2000
"""Output lines of each process ``switchboard run`` keeps in memory (for the tail it shows when one exits;
everything goes to ``var/log``)."""


def _edge(args: argparse.Namespace) -> None:
    import uvicorn

    from . import logs
    from .roles import load_role
    from .settings import Settings

    settings = Settings()
    logs.configure("edge", settings.log_level)
    app = load_role("edge")(settings)

    class DrainingServer(uvicorn.Server):
        """The first SIGTERM/SIGINT drains sessions (responses finish, clients are told to reconnect)
        and then exits; a second one exits at once."""

        draining: asyncio.Task[None] | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.draining is not None or not hasattr(app.state, "deps"):
                app.state.stop_starting()  # still starting (e.g. waiting for NATS): stop that too
                return super().handle_exit(sig, frame)
            self.draining = asyncio.get_event_loop().create_task(self.drain())

        async def drain(self) -> None:
            await app.state.deps.drain(settings.drain_grace_s)
            self.should_exit = True

    stop_with_launcher()
    config = uvicorn.Config(
        app, host=settings.edge_host, port=settings.edge_port, log_config=None,
        ws_max_size=max(16 * 1024 * 1024, settings.max_event_bytes * 4), timeout_graceful_shutdown=5,
        ws_per_message_deflate=False,  # small realtime events: compressing them costs more CPU than it saves
        ws=getattr(app.state, "ws_protocol", "auto"),  # the edge's own: one socket write per burst of events
        ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key,
    )  # fmt: skip
    DrainingServer(config).run()


def _agent(args: argparse.Namespace) -> None:
    from .roles import load_role

    _serve(load_role("agent"), "agent", args.name)


def _supervisor(args: argparse.Namespace) -> None:
    from .roles import load_role

    _serve(load_role("supervisor"), "supervisor", args.name)


def _serve(service_class: type[LoopService[Any]], role: str, name: str) -> None:
    """Run one loop service until SIGTERM/SIGINT, then drain it."""
    from . import logs
    from .agents import load_scenario
    from .settings import Settings

    settings = Settings()
    logs.configure(f"{role}-{name}", settings.log_level)
    scenario = load_scenario(settings.scenario, settings.scenarios_dir)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service = service_class(settings, scenario, name)
        # A stop signal during start-up (e.g. still waiting for NATS) ends the start, not only later.
        starting = asyncio.create_task(service.start())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()
                await stopping
        finally:
            for task in (starting, stopping):
                task.cancel()
            await asyncio.gather(starting, stopping, return_exceptions=True)
            await service.stop()

    stop_with_launcher()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (``uvicorn[standard]`` brings it; the edge runs on it too), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(args: argparse.Namespace) -> None:
    """Start nats-server, every agent and the edge; keep them running; stop all, in order, on Ctrl-C."""
    from . import logs
    from .agents import load_scenario
    from .local.ports import in_use
    from .local.stack import ConsoleFormatter, Stack
    from .local.var_lock import lock_var_dir
    from .settings import Settings

    settings = Settings()
    if args.nats_port is None:  # read here, not while building the parser: a bad value must not break --help
        port = os.environ.get("SWITCHBOARD_NATS_PORT", "4222")
        if not port.isdigit():
            raise ConfigError(f"SWITCHBOARD_NATS_PORT must be a port number, got {port!r}")
        args.nats_port = int(port)
    if not 0 <= args.nats_port < 65536:  # 0: any free port
        raise ConfigError(f"nats port {args.nats_port} is not a port number (1-65535, or 0 for any free one)")
    if args.nats_port and args.nats_port == settings.edge_port:  # one of them would crash-loop on the other's port
        raise ConfigError(
            f"nats-server and the edge cannot share port {args.nats_port}: change --nats-port or SWITCHBOARD_EDGE_PORT"
        )
    # a broken scenario is one line before anything starts (it was found while starting nats-server, after
    # "starting ...", and reported after the stop's lines)
    load_scenario(settings.scenario, settings.scenarios_dir)
    var_lock = lock_var_dir(Path(args.var_dir))  # before anything is written there, and held to the end
    wanted = [(args.nats_port, "127.0.0.1", "nats-server's; --nats-port"),
              (settings.edge_port, settings.edge_host, "the edge's; SWITCHBOARD_EDGE_PORT")]  # fmt: skip
    for port, host, what in wanted:  # a stack on a port someone holds would talk to them, not to itself
        if port and in_use(port, host):
            raise ConfigError(f"port {port} ({what} chooses another) is in use: by another stack or nats-server?")
    logs.configure("launcher", settings.log_level)
    if not args.quiet:  # beside the processes' echoed lines, in their form; JSON lines otherwise
        logging.getLogger().handlers[0].setFormatter(ConsoleFormatter("launcher"))
    plain = settings.api_keys.get_secret_value()
    key = plain.split(",")[0].strip() if plain else f"sb-dev-{secrets.token_hex(12)}"
    var = Path(args.var_dir)
    keys_file = (settings.api_keys_file or var / DEFAULT_KEYS_FILE).resolve()
    viewer_env, viewer = _trace_viewer(var)
    tls_env, tls_note = _dev_tls(var) if args.tls else ({}, "")
    stack = Stack(
        var, scenario=settings.scenario, api_key=plain or key, edge_port=settings.edge_port,
        nats_port=args.nats_port, nats_cluster=settings.nats_cluster, echo=sys.stdout if not args.quiet else None,
        env={"SWITCHBOARD_SCENARIOS_DIR": str(settings.scenarios_dir.resolve()),
             "SWITCHBOARD_API_KEYS_FILE": str(keys_file)} | viewer_env | tls_env,
        stop_grace_s=settings.drain_grace_s + 2, keep_lines=LAUNCHER_KEPT_LINES,
    )  # fmt: skip
    servers = f"a {settings.nats_cluster}-node nats cluster" if settings.nats_cluster > 1 else "nats-server"
    _console(f"starting {servers}, agents of scenario '{settings.scenario}' and the edge ...")
    stop = threading.Event()
    signals = 0
    launching = True

    def on_signal(signum: int, frame: object) -> None:
        nonlocal signals, launching
        signals += 1
        stop.set()
        if signals > 1:  # a second Ctrl-C: no more waiting
            stack.kill_all()
            if launching:  # the start would wait for what was just killed (nats-server accepting, a cluster leader)
                launching = False
                raise KeyboardInterrupt  # once; caught below

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)  # its terminal closed: stop in order, not die at once
    try:
        # supervised from the start: a process that crashes while starting is restarted, one that
        # crash-loops is reported, and the others start and serve without it
        stack.launch()
        launching = False
        stack.supervise()
        # Ctrl-C while starting stops at once; a process still not ready by the deadline does not stop the others
        not_serving = stack.wait_serving(args.ready_timeout, stop)
        if not stop.is_set():
            replicas = f"; JetStream replicas: {stack.js_replicas}" if stack.js_replicas > 1 else ""
            _console(
                f"""
  Switchboard is running (scenario: {settings.scenario})
    realtime edge : {stack.ws_base}/realtime   (OpenAI Realtime protocol, text and audio)
    API key       : {key}   (development key; production keys: switchboard keys create, into {keys_file})
    nats          : {"  ".join(stack.nats.client_urls)}   (data in {var / "nats"}{replicas})
    bus identities: {var / "bus"}   (one NKey per service; operator login: {stack.operator_env_file})
    logs          : {var / "log"}
  Talk to it:   .venv/bin/switchboard chat --url {stack.ws_base} --key {key}
  Operator commands (rollout, trace, store, keys, audit):   set -a; . {stack.operator_env_file}; set +a
  A crashed process is restarted. Ctrl-C stops everything.
{tls_note}"""
            )
            if not_serving:
                why = ", ".join(f"{label} ({reason})" for label, reason in not_serving.items())
                _console(f"  NOT serving (see {var / 'log'}): {why}\n")
            while not stop.wait(0.5):  # ok-sleep: the launcher idles; the supervisor thread does the work
                pass
    except KeyboardInterrupt:  # from on_signal: a second Ctrl-C while starting; the stop below reaps what started
        pass
    finally:
        _console("stopping ...")
        timings = stack.stop()
        if viewer:
            viewer.stop()
        _console(f"stopped in {timings.total_s:.2f}s.")
        var_lock.close()


def _console(text: str) -> None:
    """One of the launcher's own lines. A console that is gone (a closed terminal, ``switchboard run | head``,
    a pipe reader that a Ctrl-C ended first) must not end the run or skip its orderly stop: what follows
    goes nowhere."""
    try:
        print(text, flush=True)
    except OSError:  # BrokenPipeError from a pipe, EIO from a terminal that was closed
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _trace_viewer(var: Path) -> tuple[dict[str, str], PhoenixViewer | None]:
    """With ``SWITCHBOARD_TRACE_VIEWER=phoenix``, start Phoenix and send every process's traces to it."""
    choice = os.environ.get("SWITCHBOARD_TRACE_VIEWER", "").strip().lower()
    if not choice:
        return {}, None
    if choice != "phoenix":
        raise SystemExit(f"SWITCHBOARD_TRACE_VIEWER={choice!r}: the only local viewer is 'phoenix'")
    from .local.trace_viewer import PhoenixViewer

    viewer = PhoenixViewer(var / "phoenix")
    viewer.start()
    print(f"  trace viewer  : {viewer.ui_url}   (Arize Phoenix)", flush=True)
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": viewer.otlp_endpoint}, viewer


def _dev_tls(var: Path) -> tuple[dict[str, str], str]:
    """``run --tls``: a local development CA and edge certificate (created once under ``var/tls``)."""
    from .local.devcert import ensure_dev_certificate

    dev = ensure_dev_certificate(var / "tls")
    note = f"""  TLS (local development CA, not for production):
    CA certificate   : {dev.ca.resolve()}
    edge certificate : {dev.cert.resolve()}  key: {dev.key.resolve()}
    trust it         : NODE_EXTRA_CA_CERTS={dev.ca.resolve()} (Node)   SSL_CERT_FILE={dev.ca.resolve()} (Python)
"""
    return {k: str(Path(v).resolve()) for k, v in dev.edge_env().items()}, note


def _chat(args: argparse.Namespace) -> None:
    from .chat import chat, refusal

    try:
        if args.voice:
            from .voice_chat import chat_voice

            wav_in, wav_out = (Path(p) for p in args.voice)
            if not wav_out.parent.is_dir():  # found out before the turn, not after it, with its answer lost
                sys.exit(f"switchboard chat: {wav_out.parent}: no such folder for the answer's WAV")
            sys.exit(asyncio.run(chat_voice(args.url, args.key, args.session, wav_in, wav_out)))
        asyncio.run(chat(args.url, args.key, args.session, args.say))
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C ends the chat quietly, as Ctrl-D does
    except Exception as exc:
        said = refusal(exc, args.url)
        if said is None:
            raise
        sys.exit(f"switchboard chat: {said}")  # one line, exit status 1: not a traceback


def _trace(args: argparse.Namespace) -> None:
    from . import timeline
    from .bus import subjects
    from .settings import Settings

    settings = Settings()
    subjects.check_token(args.session, "session id")  # before waiting on NATS for a session that cannot exist
    servers = (args.nats_url or settings.nats_url).split(",")
    records = asyncio.run(timeline.read(servers, args.session, seed_file=settings.nats_seed_file))
    if not records:  # exit 1 (as grep finding nothing), --json too: a script tells it from a timeline
        sys.exit(f"switchboard trace: no audit records for session {args.session}")
    print(timeline.as_json(records) if args.json else timeline.render(args.session, records))


def _validate(args: argparse.Namespace) -> None:
    """Load a scenario the way every process does and say whether it is valid (exit 2 if not)."""
    from .agents import load_scenario
    from .settings import Settings

    settings = Settings()
    scenario = load_scenario(args.scenario or settings.scenario, settings.scenarios_dir)
    config = scenario.config
    handoffs = sum(len(a.handoffs) for a in config.agents)
    print(
        f"scenario {config.name!r} is valid: {len(config.agents)} agents, {handoffs} handoffs, "
        f"{len(scenario.tools.names())} tools ({scenario.path})"
    )


def _store(args: argparse.Namespace) -> None:
    from . import store_dump
    from .agents import load_scenario
    from .bus import subjects
    from .settings import Settings

    settings = Settings()
    name = load_scenario(args.scenario or settings.scenario, settings.scenarios_dir).config.name  # a path too
    if args.collection is not None:
        subjects.check_token(args.collection, "collection")
    servers = (args.nats_url or settings.nats_url).split(",")
    docs = asyncio.run(store_dump.read(servers, name, args.collection, seed_file=settings.nats_seed_file))
    try:
        for line in store_dump.render(docs):
            print(line)
    except BrokenPipeError:  # `switchboard store | head`: the reader has what it wanted
        sys.stderr.close()


def _voice(args: argparse.Namespace) -> None:
    try:
        from .voice.cli import main as voice_main
    except ImportError as exc:  # numpy and the engines come with the voice extra (not in the service image)
        raise ConfigError(f"needs the voice extra: pip install 'switchboard[voice]' ({exc})") from None
    voice_main(args)


def _bus_keys(args: argparse.Namespace) -> None:
    """NKey identities of a Helm release's services as a chart values file (see ``security.chart_keys``)."""
    from .agents import load_scenario
    from .security import chart_keys
    from .settings import Settings

    settings = Settings()
    config = load_scenario(args.scenario or settings.scenario, settings.scenarios_dir).config
    out = Path(args.out)
    agents = [(a.name, a.role) for a in config.agents]
    try:
        values = chart_keys.write(out, config.name, agents, rotate=args.rotate, retire=args.retire_old)
    except (chart_keys.RotationError, chart_keys.ValuesFileError) as exc:
        sys.exit(f"switchboard bus-keys: {exc}")
    if args.nats_config:
        Path(args.nats_config).write_text(chart_keys.nats_config(values))
    names = ", ".join(values["busAuth"]["seeds"])
    print(f"{out}: bus identities {names} (secret, mode 0600); helm install ... -f {out}")
    if values["busAuth"].get("retiring"):
        print("the old keys are still accepted: once every pod runs its new seed, run again with --retire-old")


def _schemas(args: argparse.Namespace) -> None:
    from .schemas.export import export_command

    sys.exit(export_command(Path(args.dir), check=args.check, allow_breaking=args.allow_breaking))


def _routing_eval(args: argparse.Namespace) -> None:
    from .testing.routing_eval import command

    sys.exit(asyncio.run(command([Path(p) for p in args.sets], Path(args.scenarios_dir), args.backend)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("edge", help="run the realtime edge (settings from SWITCHBOARD_* variables)").set_defaults(fn=_edge)
    p = sub.add_parser("agent", help="serve one agent of the scenario")
    p.add_argument("--name", required=True, help="agent name from the scenario")
    p.set_defaults(fn=_agent)
    p = sub.add_parser("supervisor", help="serve one supervisor of the scenario (chat-supervisor pattern)")
    p.add_argument("--name", required=True, help="supervisor name from the scenario")
    p.set_defaults(fn=_supervisor)
    p = sub.add_parser("run", help="start nats-server, every agent and the edge locally")
    p.add_argument("--var-dir", default="var", help="where data and logs go (default: var)")
    p.add_argument("--nats-port", type=int, default=None, help="default SWITCHBOARD_NATS_PORT, else 4222")
    p.add_argument("--quiet", action="store_true", help="do not echo the processes' logs")
    p.add_argument(
        "--ready-timeout", type=float, default=60.0, metavar="SECONDS",
        help="wait this long for every process to be ready; the ones that are not by then are named, and the "
        "others serve (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--tls", action="store_true", default=os.environ.get("SWITCHBOARD_DEV_TLS", "") == "1",
        help="serve wss:// with a local development CA and certificate (var/tls); also SWITCHBOARD_DEV_TLS=1",
    )  # fmt: skip
    p.set_defaults(fn=_run)
    p = sub.add_parser("bus-keys", help="NKey identities of every service of a Helm release (a values file)")
    p.add_argument("--scenario", default=None, help="name or path; default SWITCHBOARD_SCENARIO")
    p.add_argument(
        "--out", default="bus-values.yaml",
        help="the values file (completed if it exists: its other values are kept, its comments are not; "
        "default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--rotate", action="store_true",
        help="new seeds for every identity; the old keys stay accepted until --retire-old",
    )  # fmt: skip
    p.add_argument(
        "--retire-old", action="store_true",
        help="after a rotation, once every pod runs its new seed: stop accepting the old keys",
    )  # fmt: skip
    p.add_argument("--nats-config", default=None, help="also write the authorization block for your own NATS")
    p.set_defaults(fn=_bus_keys)
    p = sub.add_parser("chat", help="talk to a running edge with the official openai SDK realtime client")
    p.add_argument("--url", default="ws://127.0.0.1:8080/v1", help="edge WebSocket base URL (default: %(default)s)")
    p.add_argument(
        "--key", default=os.environ.get("SWITCHBOARD_API_KEY", ""), help="API key; default SWITCHBOARD_API_KEY"
    )
    p.add_argument("--session", default=None, help="session id to resume")
    p.add_argument("--say", action="append", help="send these lines instead of reading stdin")
    p.add_argument(
        "--voice", nargs=2, metavar=("IN_WAV", "OUT_WAV"),
        help="say IN_WAV (PCM16) as one spoken turn and write the spoken answer to OUT_WAV (voice extra)",
    )  # fmt: skip
    p.set_defaults(fn=_chat)
    p = sub.add_parser("trace", help="print a session's timeline (turns, handoffs, consults, errors, trace ids)")
    p.add_argument("session", help="session id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--nats-url", default=None, help="NATS URL(s); default SWITCHBOARD_NATS_URL")
    p.set_defaults(fn=_trace)
    p = sub.add_parser("store", help="print the documents the scenario's tools stored (JSON lines)")
    p.add_argument("collection", nargs="?", default=None, help="only this collection, e.g. returns")
    p.add_argument("--scenario", default=None, help="default SWITCHBOARD_SCENARIO")
    p.add_argument("--nats-url", default=None, help="NATS URL(s); default SWITCHBOARD_NATS_URL")
    p.set_defaults(fn=_store)
    p = sub.add_parser("voice", help="offline speech: speak text into a WAV file, transcribe a WAV file")
    verbs = p.add_subparsers(dest="voice_command", required=True)
    say = verbs.add_parser("say", help="synthesise TEXT with Piper into OUT (24 kHz mono PCM16 WAV)")
    say.add_argument("text")
    say.add_argument("out")
    verbs.add_parser("transcribe", help="print what Whisper hears in a PCM16 WAV file (any rate)").add_argument("wav")
    p.set_defaults(fn=_voice)
    p = sub.add_parser("schemas", help="export the v1 wire JSON Schemas (refuses breaking changes)")
    p.add_argument("--dir", default="schemas/v1", help="where the JSON Schemas are (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="fail if the files are not up to date")
    p.add_argument("--allow-breaking", action="store_true")
    p.set_defaults(fn=_schemas)
    p = sub.add_parser("validate", help="check a scenario (agents, handoffs, contracts, tools) without starting it")
    p.add_argument("scenario", nargs="?", default=None, help="name or path; default SWITCHBOARD_SCENARIO")
    p.set_defaults(fn=_validate)
    p = sub.add_parser(
        "routing-eval", help="score the offline routing on labelled caller lines (tests/data/routing_*.yaml)"
    )
    p.add_argument("sets", nargs="+", help="labelled sets (YAML)")
    p.add_argument("--backend", default=os.environ.get("SWITCHBOARD_INTENT_BACKEND", "auto"),
                   choices=["auto", "minilm", "ngram"], help="intent similarity backend (default: auto)")  # fmt: skip
    p.add_argument(
        "--scenarios-dir", default=os.environ.get("SWITCHBOARD_SCENARIOS_DIR", "scenarios"),
        help="where the sets' scenarios are (default: SWITCHBOARD_SCENARIOS_DIR, else scenarios)",
    )  # fmt: skip
    p.set_defaults(fn=_routing_eval)
    from .capacity import register as register_capacity
    from .rollout.command import register as register_rollout
    from .security.command import register as register_security

    register_rollout(sub)
    register_security(sub)
    register_capacity(sub)
    args = parser.parse_args(argv)
    if args.command in _OPERATOR_COMMANDS:  # each connect attempt's warning is noise: the command says why in one line
        logging.getLogger("switchboard.bus").setLevel(logging.ERROR)
    try:
        args.fn(args)
    except (
        ConfigError,
        ScenarioError,
        ValidationError,
        NoAuditStream,
        BusUnreachable,
        KeyFileError,
        NatsConfigError,
    ) as exc:
        # one line
        print(f"switchboard {args.command}: {_one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        from .chat import is_wav_error

        named_file = isinstance(exc, OSError) and bool(exc.filename)
        if not named_file and not is_wav_error(exc):  # not a file the user named: a real failure
            raise
        said = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        print(f"switchboard {args.command}: {said}", file=sys.stderr)
        sys.exit(2)


_OPERATOR_COMMANDS = frozenset({"trace", "store", "keys", "audit", "rollout"})
"""Commands that connect to NATS as the operator, do one thing and exit."""


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):  # settings: name the variable
        first = exc.errors(include_url=False)[0]
        name = "SWITCHBOARD_" + "_".join(str(p) for p in first["loc"]).upper()
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{name}: {first['msg'].removeprefix('Value error, ')}{more}" if first["loc"] else str(first["msg"])
    return str(exc)
