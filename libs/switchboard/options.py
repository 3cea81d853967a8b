"""What a command says about a bad option: one line naming the option, as the user typed it."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError


def option_error(exc: ValidationError, renamed: Mapping[str, str] | None = None) -> str:
    """``--max-sessions: Input should be greater than or equal to 1`` for a model validated from options
    of the same names (``renamed``: model field option -> the option's real name)."""
    first = exc.errors(include_url=False)[0]
    option = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "input"
    return f"{(renamed or {}).get(option, option)}: {first['msg'].removeprefix('Value error, ')}"
