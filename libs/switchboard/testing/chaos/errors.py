"""The harness's error."""

from __future__ import annotations

from ...errors import SwitchboardError


class ChaosError(SwitchboardError):
    """A turn could not be carried out; the message is the clear error the caller would see."""
