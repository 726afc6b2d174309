"""Expected expert loads from the windows observed so far, with detection of abrupt shifts.

Every window's counts [L, E] are first normalised per layer (each layer's counts sum to 1; a layer
with no tokens in a window contributes nothing), so the averages below are mixtures of load
shares and the distance between two of them is a plain total variation distance.

Two averages are kept:

- the *long* average, the forecast: an exponentially weighted moving average (``window="ewma"``;
  a window's weight halves every ``half_life`` windows) or the mean of the last ``window_length``
  windows (``window="sliding"``);
- the *short* average, an EWMA with ``short_half_life`` (1 window by default), which follows a
  change within a window or two.

After each window the distance between the two, ``0.5 * sum_e |short - long|`` averaged over the
layers (0: same shares, 1: disjoint), is compared with ``shift_threshold``. Above it the loads
have shifted abruptly (a workload switch rather than slow drift): both averages restart from the
latest window, so the forecast forgets the old regime at once instead of over several half-lives.

The scale of the forecast is the EWMA (same half-life) of each layer's total count per window,
so :attr:`Forecast.loads` is in counts per window. Updating costs a few passes over [L, E]:
no solver, no allocation beyond one temporary.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from eplb.errors import EplbError
from eplb.online.checks import number

__all__ = ["Forecast", "WINDOWS"]

#: Kinds of long average.
WINDOWS = ("ewma", "sliding")
_TINY = np.finfo(np.float64).tiny


def _inverse(rows: np.ndarray) -> np.ndarray:
    """1 / rows, with empty rows (whose counts are all 0) mapped to any finite factor."""
    return 1.0 / np.maximum(rows, _TINY)


def _toward(avg: np.ndarray, x: np.ndarray, weight: float, buf: np.ndarray) -> None:
    """avg += weight * (x - avg), in place (``buf``: scratch of the same shape)."""
    np.subtract(x, avg, out=buf)
    buf *= weight
    avg += buf


class Forecast:
    """Sliding or exponential average of observed windows with change detection (see module docs).

    >>> import numpy as np
    >>> f = Forecast(half_life=4)
    >>> f.observe(np.array([[3.0, 1.0]]))
    False
    >>> f.loads.tolist()
    [[3.0, 1.0]]
    """

    def __init__(self, *, window: str = "ewma", half_life: float = 8.0, window_length: int = 8,
                 short_half_life: float = 1.0, shift_threshold: float = 0.1):
        if window not in WINDOWS:
            raise EplbError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        self.window = window
        self.half_life = number("half_life", half_life)
        self.window_length = number("window_length", window_length, integer=True)
        self.short_half_life = number("short_half_life", short_half_life)
        self.shift_threshold = number("shift_threshold", shift_threshold)
        self._keep = 0.5 ** (1.0 / self.half_life)  # weight kept by the long EWMA per window
        self._keep_short = 0.5 ** (1.0 / self.short_half_life)
        self.windows = 0  #: windows observed
        self.shifts = 0  #: abrupt shifts detected
        self.last_shift: int | None = None  #: index of the window where the last shift was detected
        self.distance = 0.0  #: short-to-long distance after the last window
        self._shape: tuple[int, int] | None = None

    # ------------------------------------------------------------------ input
    def _check(self, counts) -> tuple[np.ndarray, np.ndarray]:
        """counts as float64 [L, E] and their row sums; EplbError on a bad window."""
        try:
            x = np.asarray(counts, dtype=np.float64)
        except (TypeError, ValueError):
            raise EplbError("counts must be an array of numbers [layers, experts]") from None
        if x.shape != self._shape:
            if self._shape is not None:
                raise EplbError(f"counts have shape {x.shape} but earlier windows had {self._shape}; "
                                "give every window the same layers and experts")
            if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
                raise EplbError(f"counts must be [layers, experts] with at least one of each, got shape {x.shape}")
        rows = x.sum(axis=1)
        if not np.isfinite(rows).all():
            raise EplbError("counts must be finite (no NaN or infinity); drop or repair the bad window")
        if x.min() < 0:
            raise EplbError("counts must be non-negative (tokens routed to each expert); drop or repair the bad window")
        return x, rows

    # ------------------------------------------------------------------ update
    def observe(self, counts) -> bool:
        """Add one window's counts [L, E]; returns True when it revealed an abrupt shift."""
        x, rows = self._check(counts)
        if self._shape is None:
            self._shape = x.shape
            self._buf = np.empty(x.shape)
            self._restart(x, rows)
            self.windows = 1
            return False
        self.windows += 1
        share = np.multiply(x, _inverse(rows)[:, None], out=self._buf)
        self._total += (1.0 - self._keep) * (rows - self._total)
        _toward(self._short, share, 1.0 - self._keep_short, self._diff)
        if self.window == "ewma":
            _toward(self._long, share, 1.0 - self._keep, self._diff)
            long = self._long
        else:
            self._recent.append(share.copy())
            self._sum += share
            if len(self._recent) > self.window_length:
                self._sum -= self._recent.popleft()
            long = np.multiply(self._sum, 1.0 / len(self._recent), out=self._diff)
        diff = np.subtract(self._short, long, out=self._diff)
        self.distance = float(np.abs(diff, out=diff).sum()) * 0.5 / x.shape[0]
        if self.distance <= self.shift_threshold:
            return False
        self.shifts += 1
        self.last_shift = self.windows - 1
        self._restart(x, rows)
        return True

    def _restart(self, x: np.ndarray, rows: np.ndarray) -> None:
        """Both averages start again from one window (counts ``x``, row sums ``rows``)."""
        share = x * _inverse(rows)[:, None]
        self._short = share
        self._diff = np.empty_like(share)
        self._total = rows.astype(np.float64)
        self.distance = 0.0
        if self.window == "ewma":
            self._long = share.copy()
        else:
            self._recent = deque([share.copy()])
            self._sum = share.copy()

    # ------------------------------------------------------------------ output
    @property
    def loads(self) -> np.ndarray:
        """The forecast [L, E] in counts per window (a new array); EplbError before any window."""
        if self._shape is None:
            raise EplbError("no window observed yet; call observe(counts) first")
        long = self._long if self.window == "ewma" else self._sum / len(self._recent)
        return long * self._total[:, None]

    @property
    def windows_since_shift(self) -> int | None:
        """Windows observed since the last detected shift (None when none was detected)."""
        return None if self.last_shift is None else self.windows - 1 - self.last_shift
