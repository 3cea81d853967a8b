"""``switchboard keys create|list|revoke`` and ``switchboard audit``: edge API keys and the control-plane audit.

A key change is written to the key file and recorded in the control-plane audit stream; when the record
cannot be stored (NATS unreachable), the change is undone and the command fails: no change goes unaudited.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

from ..bus import Bus
from ..bus.errors import BusUnreachable
from ..errors import SwitchboardError
from ..options import option_error
from ..schemas import ControlAction, ControlRecord
from ..state.control import ControlAudit
from .api_keys import DEFAULT_KEYS_FILE, ApiKey, KeyFile, KeyFileError, KeyLimits, new_key

CONNECT_TIMEOUT_S = 10.0
T = TypeVar("T")


class CommandError(SwitchboardError):
    """Something to fix, said in one line (exit status 1)."""


def register(sub: Any) -> None:
    """Add ``keys`` and ``audit`` to the ``switchboard`` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--file", default=None, help=f"key file; default SWITCHBOARD_API_KEYS_FILE or var/{DEFAULT_KEYS_FILE}"
    )
    common.add_argument(
        "--nats-url", default=None, help="NATS URL(s) of the audit stream; default SWITCHBOARD_NATS_URL"
    )
    p = sub.add_parser("keys", help="edge API keys: create (shown once, stored hashed), list, revoke")
    verbs = p.add_subparsers(dest="verb", required=True)
    c = verbs.add_parser("create", parents=[common], help="make a key for a tenant; prints it once")
    c.add_argument("--tenant", required=True, help="whose sessions the key opens (sessions are isolated per tenant)")
    c.add_argument("--name", default="", help="a note: who or what uses the key")
    for name, field in KeyLimits.model_fields.items():
        kind = int if field.annotation == int | None else float
        setting = name if name.startswith("session_") else f"key_{name}"  # the edge's default for every key
        c.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=None,
            help=f"{field.description} Default: the edge's SWITCHBOARD_{setting.upper()}",
        )  # fmt: skip
    ls = verbs.add_parser("list", parents=[common], help="every key: id, tenant, state, limits (never a secret)")
    ls.add_argument("--json", action="store_true")
    r = verbs.add_parser("revoke", parents=[common], help="refuse a key from now on (edges re-read the file)")
    r.add_argument("key_id")
    r.add_argument(
        "--close-sessions", action="store_true",
        help="also end the sessions open with the key (a leaked key), within seconds; without it they run to their end",
    )  # fmt: skip
    p.set_defaults(fn=keys_main)
    a = sub.add_parser(
        "audit",
        help="control-plane changes: keys created or revoked, rollout changes, agent configurations that went "
        "live (who, what, when)",
    )
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    a.add_argument("--nats-url", default=None, help="NATS URL(s); default SWITCHBOARD_NATS_URL")
    a.set_defaults(fn=audit_main)


def _fail(command: str, exc: Exception) -> NoReturn:
    print(f"switchboard {command}: error: {exc}", file=sys.stderr)
    sys.exit(1)


def keys_main(args: argparse.Namespace) -> None:
    try:
        print(asyncio.run(keys(args)))
    except (CommandError, KeyFileError) as exc:
        _fail(f"keys {args.verb}", exc)


def audit_main(args: argparse.Namespace) -> None:
    try:
        records = asyncio.run(_with_audit(args.nats_url, lambda audit: audit.read()))
    except CommandError as exc:
        _fail("audit", exc)
    print(render_audit(records, as_json=args.json))


async def _with_audit(nats_url: str | None, use: Callable[[ControlAudit], Awaitable[T]]) -> T:
    from ..settings import Settings

    settings = Settings()
    servers = (nats_url or settings.nats_url).split(",")
    bus = Bus(servers, name="switchboard-control", seed_file=settings.nats_seed_file,
              inbox_prefix=settings.nats_inbox_prefix)  # fmt: skip
    try:  # the bus retries a lost server forever (right for a service); a command gives up, saying why
        await bus.connect_within(CONNECT_TIMEOUT_S)
    except BusUnreachable as exc:
        raise CommandError(str(exc)) from None
    async with bus:
        return await use(await ControlAudit.open(bus.js, replicas=settings.js_replicas))


def _key_file(args: argparse.Namespace) -> KeyFile:
    from ..settings import Settings

    path = args.file or Settings().api_keys_file or Path("var") / DEFAULT_KEYS_FILE
    return KeyFile(Path(path))


async def keys(args: argparse.Namespace) -> str:
    """Run one ``keys`` verb; its output (the new key, the list, what was revoked)."""
    file = _key_file(args)
    if args.verb == "list":
        return render_keys(file.read(), as_json=args.json)
    if args.verb == "create":
        try:
            limits = KeyLimits(**{k: getattr(args, k) for k in KeyLimits.model_fields})
            key, record = new_key(args.tenant, name=args.name, limits=limits)
        except ValidationError as exc:
            raise CommandError(option_error(exc)) from None
        except ValueError as exc:
            raise CommandError(str(exc).splitlines()[0]) from None
        details = {"tenant": record.tenant} | ({"name": record.name} if record.name else {})
        details |= limits.model_dump(exclude_none=True)
        await _audited(file, "key.created", record.id, details, lambda ks: [*ks, record], args.nats_url)
        return f"{key}\n(key {record.id} of tenant {record.tenant}: store it now, it is not shown again)"
    now = time.time()

    def revoke(ks: list[ApiKey]) -> list[ApiKey]:
        found = [k for k in ks if k.id == args.key_id]
        if not found:
            raise CommandError(f"no key {args.key_id!r} in {file.path}")
        if not found[0].active:
            raise CommandError(f"key {args.key_id!r} is already revoked")
        update = {"revoked_at": now, "close_sessions": args.close_sessions}
        return [k.model_copy(update=update) if k.id == args.key_id else k for k in ks]

    tenant = next((k.tenant for k in file.read() if k.id == args.key_id), "")
    said: dict[str, Any] = {"tenant": tenant} | ({"close_sessions": True} if args.close_sessions else {})
    await _audited(file, "key.revoked", args.key_id, said, revoke, args.nats_url)
    if args.close_sessions:
        return f"key {args.key_id} revoked; edges refuse it from their next connection and end its open sessions"
    return f"key {args.key_id} revoked; edges refuse it from their next connection (its open sessions run on)"


async def _audited(
    file: KeyFile,
    action: ControlAction,
    target: str,
    details: dict[str, Any],
    change: Callable[[list[ApiKey]], list[ApiKey]],
    nats_url: str | None,
) -> None:
    """Apply ``change`` to the key file and record it; undo the change if the record cannot be stored.

    The undo puts back only the keys this change touched, so another command's change made meanwhile stays.
    """
    with file.change() as ks:
        before = {k.id: k for k in ks}
        ks[:] = change(ks)
        touched = {k.id for k in ks if before.get(k.id) != k}
    try:
        await _with_audit(nats_url, lambda audit: audit.record(action, target, details))
    except BaseException:
        with file.change() as ks:
            ks[:] = [before.get(k.id, k) if k.id in touched else k for k in ks if k.id in before or k.id not in touched]
        raise


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def render_keys(keys: list[ApiKey], *, as_json: bool) -> str:
    if as_json:
        return "\n".join(json.dumps(k.model_dump(mode="json", exclude={"hash"})) for k in keys)
    if not keys:
        return "no keys"
    rows = [["id", "tenant", "name", "created", "state", "limits"]]
    for k in keys:
        state = "active" if k.active else f"revoked {_when(k.revoked_at or 0)}"
        limits = ", ".join(f"{n}={v}" for n, v in k.limits.model_dump(exclude_none=True).items())
        rows.append([k.id, k.tenant, k.name, _when(k.created_at), state, limits])
    return _table(rows)


def render_audit(records: list[ControlRecord], *, as_json: bool) -> str:
    if as_json:
        return "\n".join(r.model_dump_json() for r in records)
    if not records:
        return "no control-plane changes recorded"
    rows = [["when", "actor", "action", "target", "details"]]
    for r in records:
        details = ", ".join(f"{k}={v}" for k, v in r.details.items())
        rows.append([_when(r.ts), r.actor, r.action, r.target, details])
    return _table(rows)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
