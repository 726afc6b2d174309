"""Our routers, which balance the ranks' two loads together (the min-max of normalized loads).

- ``min-max`` (default). Prefill: late binding. Requests wait in the router's first-come queue
  and are bound to a rank in the step that rank has token budget left, to the rank where the
  request's first chunk keeps that step's normalized (attention pairs, tokens) L-inf smallest; then
  they stay. Chunks are sized against both the token budget and an attention target per step
  (:meth:`MinMax.attention_target`): no rank computes more than ``attention_balance`` (1.6) times
  the step's mean attention, except that a rank's first chunk keeps at least ``min_chunk`` (5120)
  tokens so deep prompts keep moving. Decode: late binding too (``decode_late_binding``, on by
  default): requests wait in the router's first-come queue and are bound, when some rank can admit
  them now, to the admitting rank where they raise the sum over ranks of squared normalized (KV
  tokens, requests) least; a request that would lift a rank above the current maximum KV or request
  count (plus a small slack) waits a little (:class:`BalanceGate`). With
  ``decode_late_binding=False`` each arriving request (largest prompt first) goes to that rank at once, skipping ranks where it would not fit in the KV
  capacity with its expected growth (the mean output length of the requests finished so far)
  unless they hold fewer requests than the mean, or that are at the batch limit, while other ranks
  remain.
- ``min-max-arrival``: for routers that must bind at arrival: prefill batches go through the 2-D
  min-L-inf greedy on the ranks' backlog (attention pairs, tokens still to compute), largest first;
  decode as ``min-max`` with ``decode_late_binding=False``.
- ``min-max-cpsat``: prefill batches bound at arrival by CP-SAT on the ``min-max-arrival`` objective
  (time-limited, warm-started from the greedy, never worse on the batch objective); decode as
  ``min-max-arrival``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eplb.dp.ranks import Batch, RankState, Router
from eplb.errors import EplbError
from solvers.assign import default_scale, exact_assign, greedy_assign

__all__ = ["ATTENTION_BALANCE", "BalanceGate", "MIN_CHUNK", "MinMax", "MinMaxArrival", "MinMaxCpsat",
           "attention_target"]

#: Default ``alpha`` of :func:`attention_target`: no rank's step attention above this times the mean.
#: Chosen by hand, not derived, while looking at the tuning traces of benchmarks/bench_dp.py (see
#: docs/dp.md): it trades some tokens balance and queueing for shorter steps; the held-out trace
#: played no part.
ATTENTION_BALANCE = 1.6
#: Default tokens a rank's first chunk in a step keeps above the attention target (deep prompts move
#: on). Chosen by hand on the same tuning traces, not derived: large enough that a deep prompt keeps
#: a useful pace and TTFT stays bounded.
MIN_CHUNK = 5120


def _sizes_base(state: RankState, batch: Batch):
    """Two axes per phase: sizes [B, 2] and base [D, 2]."""
    if state.phase == "prefill":
        sizes = np.stack([batch.pairs, batch.new_tokens.astype(np.float64)], axis=1)
        base = np.stack([state.attention, state.tokens], axis=1)
        cap = None
    else:
        sizes = np.stack([batch.prompt.astype(np.float64), np.ones(len(batch))], axis=1)
        base = np.stack([state.tokens, (state.waiting + state.running).astype(np.float64)], axis=1)
        cap = np.array([state.kv_capacity - state.mean_output, state.max_batch], dtype=np.float64)
        cap = np.where(np.isfinite(cap), np.maximum(cap, 0.0), 1e300)
    return sizes, base, cap


class MinMaxArrival(Router):
    """Binds each batch at arrival: prefill by the 2-D min-L-inf greedy on the ranks' backlog, decode
    by :func:`_decode_marginal`. No options."""

    def assign(self, state: RankState, batch: Batch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros(0, dtype=np.int64)
        if state.phase == "decode":
            return _decode_marginal(state, batch)
        sizes, base, cap = _sizes_base(state, batch)
        return self._assign_prefill(sizes, state.num_ranks, base, default_scale(sizes, state.num_ranks, base), cap)

    def _assign_prefill(self, sizes, ranks, base, scale, cap) -> np.ndarray:
        """Prefill batch: sizes [B, 2] (attention, tokens) onto ``ranks`` ranks holding ``base`` [D, 2]."""
        return greedy_assign(sizes, ranks, base, scale, order="decreasing", capacity=cap).assign


def _decode_marginal(state: RankState, batch: Batch) -> np.ndarray:
    """Decode: each request (largest prompt first) to the rank where it raises the sum over ranks of
    squared normalized (KV, request count) the least, among ranks where it fits with its expected
    growth; this sends long prompts to ranks short of KV and short ones to ranks short of requests.
    A rank holding fewer requests than the mean stays eligible even when its KV is tight (it admits
    the request as soon as one of its fewer, longer requests leaves)."""
    D = state.num_ranks
    B = len(batch)
    if B == 1:  # the online router's path: few numpy operations over [D]
        x = float(batch.prompt[0])
        kv = state.tokens
        cnt = state.waiting + state.running
        ksum = float(kv.sum()) + x
        csum = float(cnt.sum()) + 1.0
        # marginal sum of squares up to terms equal on every rank: 2*x*kv/km^2 + 2*cnt/nm^2
        score = kv * (x * D * D / (ksum * ksum)) + cnt * (D * D / (csum * csum))
        fits = ((kv <= state.kv_capacity - state.mean_output - x) | (cnt * D < csum - 1.0)) & (cnt < state.max_batch)
        if not fits.all() and fits.any():
            score[~fits] = np.inf
        return np.array([score.argmin()], dtype=np.int64)
    kv = state.tokens.astype(np.float64)            # a fresh array
    cnt = (state.waiting + state.running).astype(np.float64)
    prompts = batch.prompt.astype(np.float64)
    km = max(1.0, (float(kv.sum()) + float(prompts.sum())) / D)
    nm = max(1.0, (float(cnt.sum()) + B) / D)
    inv_k = 1.0 / (km * km)
    base_n = (2.0 * cnt + 1.0) * (1.0 / (nm * nm))
    room_kv = state.kv_capacity - state.mean_output
    cnt_mean = float(cnt.mean())
    short = cnt < cnt_mean
    batch_ok = cnt + 1.0 <= state.max_batch
    out = np.empty(B, dtype=np.int64)
    order = np.argsort(-prompts, kind="stable") if B > 1 else (0,)
    for j in order:
        x = float(prompts[j])
        score = (2.0 * kv + x) * (x * inv_k) + base_n
        fits = ((kv <= room_kv - x) | short) & batch_ok
        if not fits.all() and fits.any():
            score[~fits] = np.inf
        r = int(score.argmin())
        out[j] = r
        if B > 1:
            kv[r] += x
            cnt[r] += 1.0
            base_n[r] = (2.0 * cnt[r] + 1.0) / (nm * nm)
            short[r] = cnt[r] < cnt_mean
            batch_ok[r] = cnt[r] + 1.0 <= state.max_batch
    return out


@dataclass(frozen=True)
class BalanceGate:
    """Decode late binding: when a request waits in the router's queue rather than unbalance a rank.

    Requests: with ``requests_eps`` not None a request is bound only to a rank whose request count
    stays at or below the larger of the current maximum and ``1 + requests_eps`` times the mean after
    binding (the ranks holding the fewest requests always qualify). KV: a request whose prompt is at
    least ``big`` times the mean KV of a running request (0: every request) is bound only to a rank
    whose KV stays at or below the larger of the current maximum and ``1 + eps`` times the mean
    after binding. So a request never lifts a rank above the current maximum of either axis by more
    than the slack. When no rank qualifies it waits, for at most ``steps`` steps. In each step at
    most ``reserve`` held requests (the oldest first) reserve the rank with the most free KV, which
    receives nothing else and drains until the held request fits there; the other held requests
    reserve nothing, so a burst of long prompts does not starve several ranks at once. The KV rule
    is off while the router's queue holds more than ``queue * D`` requests (the ranks are then short
    of work, not of balance), except for prompts of at least ``giant`` times the mean KV of a
    running request: one of those can lift a rank by half its mean KV, more than a short wait costs.
    """

    # chosen by hand on the tuning traces of benchmarks/bench_dp.py (docs/dp.md), not derived
    eps: float = 0.01
    steps: int = 40
    big: float = 0.0
    queue: float = 2.0
    requests_eps: "float | None" = 0.03
    reserve: int = 1
    giant: float = 4.0


def _make_gate(g) -> "BalanceGate | None":
    if g is None or g is False:
        return None
    if g is True:
        return BalanceGate()
    if isinstance(g, BalanceGate):
        out = g
    elif isinstance(g, dict):
        try:
            out = BalanceGate(**g)
        except TypeError as e:
            raise EplbError(f"balance_gate: {e}; fields are eps, steps, big, queue, requests_eps, reserve, "
                            f"giant") from None
    else:
        raise EplbError(f"balance_gate must be True, False, a dict (eps, steps, big, queue, requests_eps, reserve, "
                        f"giant) or a BalanceGate, got {g!r}")
    if (out.eps < 0 or out.steps < 0 or out.big < 0 or out.queue < 0 or out.reserve < 0 or out.giant < 0
            or (out.requests_eps is not None and out.requests_eps < 0)):
        raise EplbError(f"balance_gate fields must be nonnegative, got {out}")
    return out


class MinMax(MinMaxArrival):
    """Prefill: late binding. Requests wait in the router's queue (first come, first served) and are
    bound to a rank only in the step the rank has token budget left; each goes to the rank where its
    first chunk keeps the step's normalized (attention, tokens) L-inf smallest, and then stays there.
    Chunks are sized against the token budget and an attention target (:meth:`attention_target`).
    Decode: late binding as well (:meth:`bind`); with ``decode_late_binding=False`` as
    ``min-max-arrival``.

    Options: ``attention_balance`` (alpha of :func:`attention_target`, default 1.6; 0 or None: plain
    token-budget chunking), ``min_chunk`` (tokens a rank's first chunk keeps above the target,
    default 5120), ``decode_late_binding`` (default True), ``balance_gate`` (decode late binding: a
    :class:`BalanceGate`, a dict of its fields, True for the defaults (default) or False/None: off).
    """

    late_binding = True

    def __init__(self, attention_balance: float = ATTENTION_BALANCE, min_chunk: int = MIN_CHUNK,
                 decode_late_binding: bool = True, balance_gate: "BalanceGate | dict | bool | None" = True):
        a = attention_balance
        if a and not float(a) >= 1.0:
            raise EplbError(f"attention_balance must be at least 1 (a max/mean ratio) or 0 to turn the "
                            f"attention target off, got {a}")
        if int(min_chunk) < 1:
            raise EplbError(f"min_chunk must be at least 1 token, got {min_chunk}")
        self.attention_balance = attention_balance
        #: Tokens a rank's first chunk in a step keeps even above the attention target.
        self.min_chunk = int(min_chunk)
        self.decode_late_binding = bool(decode_late_binding)
        self._gate = _make_gate(balance_gate)

    @property
    def balance_gate(self) -> "BalanceGate | None":
        return self._gate

    def gate(self, kv: np.ndarray, nrun: np.ndarray, prompt: float, waited: int, queued: int):
        """Decode late binding: the ranks ``[D] bool`` a request may be bound to now, or None (any).
        kv, nrun: [D] KV tokens and running requests per rank; prompt: the request's KV; waited:
        steps it has waited; queued: requests in the router's queue. See :class:`BalanceGate`."""
        g = self._gate
        if g is None or waited >= g.steps:
            return None
        D = len(kv)
        total = float(kv.sum())
        n = nrun.astype(np.float64)
        per_request = total / max(1.0, float(n.sum()))
        out = None
        if g.requests_eps is not None:
            # a request is one unit: the ranks holding the fewest requests always qualify
            out = n + 1.0 <= max(float(n.max()), float(n.min()) + 1.0,
                                 (1.0 + g.requests_eps) * (float(n.sum()) + 1.0) / D)
        if (queued > g.queue * D and prompt < g.giant * per_request) or prompt < g.big * per_request:
            return out
        kv_ok = kv + prompt <= max(float(kv.max()), (1.0 + g.eps) * (total + prompt) / D)
        return kv_ok if out is None else kv_ok & out

    @property
    def gate_reserve(self) -> int:
        """Decode late binding: how many requests held by :meth:`gate` may reserve a rank per step."""
        return self._gate.reserve if self._gate is not None else 0

    #: decode late binding: the arrivals of one step enter the router's queue largest prompt first
    largest_first = True

    def bind(self, state: RankState, prompt: float, ok: np.ndarray) -> int:
        """Decode late binding: the rank for one request leaving the router's queue, among the ranks
        ``ok: [D] bool`` that can admit it now: preferring those where it also fits with the expected
        growth of the requests there (``mean_output`` tokens each), the one where it raises the sum
        over ranks of squared normalized (KV tokens, requests) least. Returns a rank index."""
        D = state.num_ranks
        kv = state.attention
        cnt = (state.waiting + state.running).astype(np.float64)
        ksum = float(kv.sum()) + prompt
        csum = float(cnt.sum()) + 1.0
        # the marginal sum of squares up to terms equal on every rank (see _decode_marginal)
        score = kv * (prompt * D * D / (ksum * ksum)) + cnt * (D * D / (csum * csum))
        roomy = ok & (kv + prompt + state.mean_output * (1.0 + cnt) <= state.kv_capacity)
        score = np.where(roomy if roomy.any() else ok, score, np.inf)
        return int(score.argmin())

    def attention_target(self, att: np.ndarray) -> float:
        """Attention cap for every rank this step (inf: none), from the ranks' planned attention
        ``att: [D]``: :func:`attention_target` with ``alpha`` = option ``attention_balance``."""
        return attention_target(att, self.attention_balance)

    def fill(self, left: np.ndarray, att: np.ndarray, tok: np.ndarray, new_tokens: np.ndarray,
             cached: np.ndarray) -> list[tuple[int, int, int]]:
        """Bind queued requests (in queue order) to ranks for this step.

        left: [D] token budget left this step; att, tok: [D] attention pairs and tokens already in
        the step; new_tokens, cached: [Q] of the queue head. Returns (queue index, rank, chunk)
        triples; stops when no budget is left.
        """
        left = left.astype(np.float64)  # fresh copies
        att = att.astype(np.float64)
        tok = tok.astype(np.float64)
        D = len(left)
        att_sum, tok_sum = float(att.sum()), float(tok.sum())
        att_max, tok_max = float(att.max()), float(tok.max())
        closed = left <= 0
        n_open = D - int(closed.sum())
        out = []
        for j in range(len(new_tokens)):
            if n_open == 0:
                break
            n = float(new_tokens[j])
            p = float(cached[j])
            c = np.minimum(n, left)
            a = c * (p + (c + 1.0) * 0.5)
            cm = min(n, float(left.max()))          # = c.max(); a grows with c, so a.max() is a at cm
            a_mean = max(1.0, (att_sum + cm * (p + (cm + 1.0) * 0.5)) / D)
            t_mean = max(1.0, (tok_sum + cm) / D)
            peak = np.maximum((att + a) * (1.0 / a_mean), (tok + c) * (1.0 / t_mean))
            if n_open < D:
                peak[closed] = np.inf
            # the step's L-inf after binding: max(peak of the chosen rank, the current maximum)
            top = max(att_max / a_mean, tok_max / t_mean)
            best = max(float(peak.min()), top)
            ties = peak <= best * (1 + 1e-12)
            r = int(np.argmax(np.where(ties, left, -1.0)))
            cr, ar = float(c[r]), float(a[r])
            out.append((j, r, int(cr)))
            left[r] -= cr
            if left[r] <= 0:
                closed[r] = True
                n_open -= 1
            att[r] += ar
            tok[r] += cr
            att_sum += ar
            tok_sum += cr
            att_max = max(att_max, float(att[r]))
            tok_max = max(tok_max, float(tok[r]))
        return out


def attention_target(att, alpha) -> float:
    """Water-filling cap: the largest ``T`` with ``T <= alpha * mean(min(att, T))``; inf when
    ``max(att) <= alpha * mean(att)`` already or ``alpha`` is falsy.

    att: [D] nonnegative per-rank attention of a step; alpha: >= 1. Capping every rank at ``T`` leaves
    max/mean <= alpha.

    >>> float(attention_target(np.array([10.0, 1.0, 1.0, 1.0]), 2.0))
    3.0
    """
    if not alpha:
        return np.inf
    alpha = float(alpha)
    if alpha < 1.0:
        raise EplbError(f"attention_balance must be at least 1 (a max/mean ratio), got {alpha}")
    a = np.asarray(att, dtype=np.float64)
    a = np.sort(a[a > 0])[::-1]     # idle ranks have nothing to take over: capping cannot help them
    D = len(a)
    total = float(a.sum())
    if D == 0 or total <= 0 or a[0] <= alpha * total / D * (1.0 + 1e-12):
        return np.inf
    tail = np.concatenate([np.cumsum(a[::-1])[::-1], [0.0]])   # tail[k] = a[k:].sum(), no cancellation
    for k in range(1, D + 1):       # the k largest capped at T, the others kept
        rest = float(tail[k])
        denom = D - alpha * k
        if denom <= 0:
            break
        T = alpha * rest / denom
        if T >= (a[k] if k < D else 0.0):
            return min(T, float(a[k - 1]))
    return float(a[-1]) if D else np.inf


class MinMaxCpsat(MinMaxArrival):
    """The prefill batch solved by CP-SAT within ``time_limit`` seconds; decode uses min-max-arrival's
    rule (capacity rules are not in the model)."""

    def __init__(self, time_limit: float = 0.05):
        self.time_limit = float(time_limit)

    def _assign_prefill(self, sizes, ranks, base, scale, cap) -> np.ndarray:
        return exact_assign(sizes, ranks, base, scale, time_limit=self.time_limit,
                            seed=0, workers=1).assign
