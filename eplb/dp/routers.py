"""Request routers: each sends every arriving request to one of ``D`` data-parallel attention ranks.

A router sees the ranks' state (:class:`eplb.dp.ranks.RankState`, arrays over ranks) and a batch of
arriving requests (:class:`eplb.dp.ranks.Batch`, those that arrived since the last step, in arrival
order) and returns one rank per request. Requests then stay on their rank. Online baselines decide
one request at a time and update their own copy of the state optimistically between requests, as
the engines do between load reports; ours (:mod:`eplb.dp.minmax`) decide the batch together.

Baselines, as the engines implement them (scores over ranks, lowest wins):

- ``round-robin``: next rank in turn (SGLang's default DP-attention method).
- ``shortest-queue``: fewest waiting + running requests, ties to the lowest rank (SGLang
  ``total_requests``; vLLM before its KV-aware score was ``4 * waiting + running``, see below).
- ``least-tokens``: fewest queued tokens (prefill: prompt tokens still to compute; decode: KV tokens
  in use plus the prompts of waiting requests), ties by request count (SGLang ``total_tokens``).
- ``vllm``: vLLM's current internal DP load balancer
  ``max(in_flight, waiting + running) + 6 * waiting * max(0, kv_usage - 0.5)`` with a scan start
  that rotates by one rank per request; with one front-end and exact state ``in_flight`` equals
  ``waiting + running``. In prefill there is no KV limit, so ``kv_usage`` is 0.
- ``vllm-legacy``: the earlier vLLM score ``4 * waiting + running``, first lowest from rank 0.

Ours: ``min-max`` (the default), ``min-max-arrival`` and ``min-max-cpsat``, see
:mod:`eplb.dp.minmax`.

Every router is a class registered in :data:`ROUTERS`; its options are the keyword parameters of
its ``__init__``, and an option it does not take raises :class:`eplb.errors.UnknownOptionError`.
"""
from __future__ import annotations

import numpy as np

from eplb._registry import Registry
from eplb.dp.minmax import MinMax, MinMaxArrival, MinMaxCpsat
from eplb.dp.ranks import Batch, RankState, Router
from eplb.errors import EplbError

__all__ = [
    "BASELINES",
    "DEFAULT_ROUTER",
    "ROUTERS",
    "Router",
    "describe_routers",
    "make_router",
    "register_router",
    "routers",
]


#: Every router by name: the baselines first, then ours.
ROUTERS = Registry("router")
#: The router used when none is named.
DEFAULT_ROUTER = "min-max"
#: Engine baselines, in the order reports list them.
BASELINES = ("round-robin", "shortest-queue", "least-tokens", "vllm", "vllm-legacy")


def register_router(name: str, description: str):
    """Class decorator: register a :class:`Router` subclass in :data:`ROUTERS` under ``name``,
    which becomes its ``name``."""
    def deco(cls):
        cls.name = name
        return ROUTERS.register(name, description)(cls)
    return deco


class _Online(Router):
    """One request at a time: lowest ``score`` wins; ties to the first in scan order."""

    rotate = False
    start = 0

    def reset(self, num_ranks: int) -> None:
        self.start = 0

    def score(self, st: RankState, j: int, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def assign(self, state: RankState, batch: Batch) -> np.ndarray:
        st = state.copy()
        D = st.num_ranks
        out = np.empty(len(batch), dtype=np.int64)
        pairs = batch.pairs
        for j in range(len(batch)):
            s = self.score(st, j, batch)
            if self.start:
                s = np.roll(s, -self.start)
                r = (int(np.argmin(s)) + self.start) % D
            else:
                r = int(np.argmin(s))
            if self.rotate:
                self.start = (self.start + 1) % D
            out[j] = r
            st.add(r, float(batch.new_tokens[j]), float(pairs[j]), float(batch.prompt[j]))
        return out


@register_router("round-robin", "next rank in turn (SGLang default)")
class RoundRobin(Router):
    next = 0

    def reset(self, num_ranks: int) -> None:
        self.next = 0

    def assign(self, state: RankState, batch: Batch) -> np.ndarray:
        D = state.num_ranks
        out = (self.next + np.arange(len(batch), dtype=np.int64)) % D
        self.next = int((self.next + len(batch)) % D)
        return out


@register_router("shortest-queue", "fewest waiting + running requests (SGLang total_requests)")
class ShortestQueue(_Online):
    def score(self, st, j, batch):
        return (st.waiting + st.running).astype(np.float64)


@register_router("least-tokens", "fewest queued tokens, ties by requests (SGLang total_tokens)")
class LeastTokens(_Online):
    def score(self, st, j, batch):
        # lexicographic on integers: tokens first, then request count (a fraction below 1)
        n = (st.waiting + st.running).astype(np.float64)
        return np.round(st.tokens) + n / (n.max() + 1.0)


@register_router("vllm", "vLLM: max(in-flight, waiting+running) + 6*waiting*max(0, kv_usage-0.5), rotating start")
class Vllm(_Online):
    rotate = True

    def score(self, st, j, batch):
        w = st.waiting.astype(np.float64)
        return w + st.running + 6.0 * w * np.maximum(0.0, st.kv_usage - 0.5)


@register_router("vllm-legacy", "earlier vLLM: 4*waiting + running, first lowest")
class VllmLegacy(_Online):
    def score(self, st, j, batch):
        return 4.0 * st.waiting + st.running


# ours, the default first
register_router("min-max", "ours (default): prefill binds queued requests at the step a rank has budget, "
                "min-L-inf of the step's (attention, tokens), chunks cut to an attention target; decode "
                "binds queued requests when a rank can admit them, balancing (KV, requests)")(MinMax)
register_router("min-max-arrival", "ours, binding at arrival: 2-D min-L-inf greedy over the batch on the "
                "ranks' backlog")(MinMaxArrival)
register_router("min-max-cpsat", "ours: the min-max-arrival objective solved per batch by CP-SAT (time limit, "
                "default 0.05 s)")(MinMaxCpsat)


def routers() -> list[str]:
    """Names of the routers: baselines first, then ours."""
    return ROUTERS.names()


def describe_routers() -> dict[str, str]:
    """Router name -> one-line description."""
    return ROUTERS.describe()


def make_router(name: str | Router, **options) -> Router:
    """A fresh router by name (see :func:`routers`) with its ``options``; a :class:`Router` passes
    through unchanged (then no options may be given). Unknown options raise
    :class:`eplb.errors.UnknownOptionError` listing those the router takes."""
    if isinstance(name, Router):
        if options:
            raise EplbError(f"router {name.name} is already made; give its options when making it")
        return name
    ROUTERS.check_options(name, options)
    return ROUTERS.get(name)(**options)
