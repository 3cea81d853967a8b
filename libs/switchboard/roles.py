"""The services the ``switchboard`` command runs, found by role name among installed entry points.

Each service package (``services/edge``, ``services/agent``, ``services/supervisor``) registers what
runs it in the ``switchboard.roles`` entry-point group (``pyproject.toml``), so the library never
imports a service: dependencies point from services to the library only.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .errors import SwitchboardError

__all__ = ["ROLE_GROUP", "RoleNotInstalled", "load_role"]

ROLE_GROUP = "switchboard.roles"


class RoleNotInstalled(SwitchboardError):
    """No installed package provides the role (the project was installed before it declared it)."""


def load_role(name: str) -> Any:
    """What runs role ``name``: the edge's app factory, or an agent or supervisor service class."""
    found = entry_points(group=ROLE_GROUP, name=name)
    if not found:
        raise RoleNotInstalled(
            f"no installed package provides the {name!r} role (entry points {ROLE_GROUP!r}); "
            "reinstall the project (make install)"
        )
    return next(iter(found)).load()
