"""What a router sees: the ranks' state (:class:`RankState`) and the requests arriving together
(:class:`Batch`); and what every router does (:class:`Router`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eplb.dp.costs import attention_pairs

__all__ = ["Batch", "RankState", "Router"]


@dataclass
class RankState:
    """What a router knows about each rank; arrays are [D].

    waiting: requests assigned but not started. running: requests started and not finished.
    tokens: prefill: prompt tokens still to compute; decode: KV tokens in use plus the prompt
    tokens of waiting requests. attention: prefill: attention pairs still to compute; decode: KV
    tokens in use. kv_usage: fraction of KV capacity in use (0 in prefill). kv_capacity and
    max_batch: per-rank limits (inf when none). mean_output: expected output length of a request.
    """

    phase: str
    waiting: np.ndarray
    running: np.ndarray
    tokens: np.ndarray
    attention: np.ndarray
    kv_usage: np.ndarray
    kv_capacity: float = np.inf
    max_batch: float = np.inf
    mean_output: float = 0.0

    @classmethod
    def empty(cls, phase: str, ranks: int, kv_capacity: float = np.inf, max_batch: float = np.inf,
              mean_output: float = 0.0) -> "RankState":
        z = np.zeros(ranks, dtype=np.float64)
        return cls(phase, np.zeros(ranks, dtype=np.int64), np.zeros(ranks, dtype=np.int64), z.copy(), z.copy(),
                   z.copy(), kv_capacity, max_batch, mean_output)

    @property
    def num_ranks(self) -> int:
        return len(self.waiting)

    def copy(self) -> "RankState":
        return RankState(self.phase, self.waiting.copy(), self.running.copy(), self.tokens.copy(),
                         self.attention.copy(), self.kv_usage.copy(), self.kv_capacity, self.max_batch,
                         self.mean_output)

    def add(self, rank: int, new_tokens: float, pairs: float, prompt: float) -> None:
        """Count one more waiting request on ``rank`` (the optimistic update between reports)."""
        self.waiting[rank] += 1
        if self.phase == "prefill":
            self.tokens[rank] += new_tokens
            self.attention[rank] += pairs
        else:
            self.tokens[rank] += prompt


@dataclass(frozen=True)
class Batch:
    """Requests arriving together, in arrival order; arrays are [B].

    new_tokens: prompt tokens to compute; cached: cached prefix tokens; prompt: prompt length
    (the KV the request brings to a decode rank). Output lengths are not shown: a router does not
    know them.
    """

    new_tokens: np.ndarray
    cached: np.ndarray
    prompt: np.ndarray

    def __len__(self) -> int:
        return len(self.new_tokens)

    @property
    def pairs(self) -> np.ndarray:
        """[B] float64 prefill attention pairs."""
        return attention_pairs(self.new_tokens, self.cached)


class Router:
    """Base class: ``assign(state, batch) -> [B] int64 ranks``. A subclass takes its options as
    keyword parameters of ``__init__``."""

    name = ""
    #: True: prefill requests wait in the router and are bound by ``fill`` step by step
    late_binding = False

    def reset(self, num_ranks: int) -> None:
        """Forget any internal state before a new run."""

    def assign(self, state: RankState, batch: Batch) -> np.ndarray:
        raise NotImplementedError
