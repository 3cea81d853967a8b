"""``switchboard bus-keys``: the bus identities of a Helm release, as a values file for the chart.

The file holds one NKey seed per service of the scenario (the edge, every agent and supervisor) and an
``admin`` seed for operators (``busAuth.seeds``: the chart makes one Secret per identity and mounts each
Deployment's own), and the bundled NATS's ``authorization`` block with the public keys and subject
permissions of ``bus_access`` (``nats.config.merge``). It is a secret: written with mode 0600.
Run again on the same file, it keeps the seeds it holds and adds the missing ones.

Rotation is a two-step rollover, so no pod is ever cut off: ``rotate`` gives every identity a new seed
(the chart mounts only that one) and keeps the old public key in the authorization, with the same
permissions, under ``busAuth.retiring``; once every pod runs the new seed, ``retire`` drops the old keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import SwitchboardError
from .bus_access import ADMIN, Identity, generate_seed, public_key, service_identities

HEADER = (
    "# Bus identities of a Switchboard release, made by `switchboard bus-keys`: NKey seeds (SECRET: keep\n"
    "# this file out of version control) and the bundled NATS's authorization block. helm install -f it.\n"
)


def identities(scenario: str, agents: Iterable[tuple[str, str]]) -> list[Identity]:
    """Every service of the scenario and the operators' ``admin``."""
    return [*service_identities(scenario, agents), ADMIN]


class RotationError(SwitchboardError):
    """A rotation step asked out of order (a second rotation before the first is retired)."""


class ValuesFileError(SwitchboardError):
    """The values file to complete cannot be read as a chart values file (one line says why)."""


def chart_values(
    identities: list[Identity], seeds: Mapping[str, str], retiring: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The chart values: ``busAuth`` with the seeds (and the ``retiring`` public keys of a rotation) and
    the NATS chart's ``authorization`` block, where a retiring key has its identity's permissions."""
    old = {i.name: (retiring or {})[i.name] for i in identities if i.name in (retiring or {})}
    users = [i.authorization_entry(public_key(seeds[i.name].encode())) for i in identities]
    users += [i.authorization_entry(old[i.name]) for i in identities if i.name in old]
    bus: dict[str, Any] = {"enabled": True, "seeds": {i.name: seeds[i.name] for i in identities}}
    if old:
        bus["retiring"] = old
    return {"busAuth": bus, "nats": {"config": {"merge": {"authorization": {"users": users}}}}}


def nats_config(values: Mapping[str, Any]) -> str:
    """The same ``authorization`` block as nats-server configuration, for a NATS the chart does not install."""
    block = values["nats"]["config"]["merge"]["authorization"]
    return "authorization " + json.dumps(block, indent=2) + "\n"


def write(
    path: Path, scenario: str, agents: Iterable[tuple[str, str]], *, rotate: bool = False, retire: bool = False
) -> dict[str, Any]:
    """Write (or complete) the values file at ``path``; return its values. ``rotate``: a new seed per
    identity, the old public keys still accepted; ``retire``: the retiring keys refused from now on."""
    if rotate and retire:
        raise RotationError("rotate and retire are two steps: retire the old keys once every pod runs the new seed")
    wanted = identities(scenario, agents)
    existing = _read_values(path)
    old = existing.get("busAuth") or {}
    if not isinstance(old, dict) or not isinstance(old.get("seeds", {}), dict):
        raise ValuesFileError(f"{path}: busAuth and busAuth.seeds must be mappings")
    seeds: dict[str, str] = dict(old.get("seeds", {}))
    retiring: dict[str, str] = {} if retire else dict(old.get("retiring", {}))
    if rotate:
        if retiring:
            raise RotationError(
                f"{path}: a rotation is under way (busAuth.retiring); once every pod runs the new seed, "
                "run `switchboard bus-keys --retire-old` and helm upgrade, then rotate again"
            )
        retiring = {name: public_key(seed.encode()) for name, seed in seeds.items()}
        seeds = {}
    for identity in wanted:
        if identity.name not in seeds:
            seeds[identity.name] = generate_seed().decode()
    values = chart_values(wanted, seeds, retiring)
    merged = {**existing, "busAuth": values["busAuth"]}  # the file's other values are kept (its comments are not)
    try:
        merge = merged.setdefault("nats", {}).setdefault("config", {}).setdefault("merge", {})
    except AttributeError:
        raise ValuesFileError(f"{path}: nats, nats.config and nats.config.merge must be mappings") from None
    merge["authorization"] = values["nats"]["config"]["merge"]["authorization"]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(HEADER + yaml.safe_dump(merged, sort_keys=False, width=120))
    os.chmod(path, 0o600)  # an existing file keeps its mode on open: tighten it
    return values


def _read_values(path: Path) -> dict[str, Any]:
    """The values already in ``path`` (none when it does not exist)."""
    if not path.exists():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValuesFileError(f"{path}: cannot read it as a values file: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValuesFileError(f"{path}: a values file is a YAML mapping, not a {type(loaded).__name__}")
    return loaded
