"""The one check of the numeric options of eplb.online (controller, forecast, pricing, policies)."""
from __future__ import annotations

import math

import numpy as np

from eplb.errors import EplbError

__all__ = ["number"]


def number(name: str, value, *, integer: bool = False, zero: bool = False, none: bool = False):
    """``value`` as a float (an int with ``integer``); EplbError naming ``name`` unless it is a finite
    number above 0 (at least 0 with ``zero``). With ``none``, None passes through unchanged."""
    if value is None and none:
        return None
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        what = ("a non-negative " if zero else "a positive ") + ("integer" if integer else "number")
        raise EplbError(f"{name} must be {what}, got {value!r}")
    return int(value) if integer else float(value)
