"""Work of a request on a data-parallel attention rank.

Prefill of a request with cached prefix ``p`` and ``n`` new tokens:
- tokens: ``n`` (linear layers and MoE dispatch send volume scale with it);
- attention pairs: ``n * p + n * (n + 1) / 2`` (causal query-key pairs of core attention).
A chunk of ``c`` tokens computed on top of ``q`` tokens already in the KV cache costs
``c * q + c * (c + 1) / 2`` pairs, so the chunks of one request add up to the whole-request cost.

Decode of a running request: one token per step, attention over its current KV length; a rank's work
per step is (KV tokens in use, running requests).
"""
from __future__ import annotations

import numpy as np

__all__ = ["attention_pairs", "chunk_attention"]


def attention_pairs(new_tokens, cached) -> np.ndarray:
    """Causal attention query-key pairs of prefilling ``new_tokens`` on top of ``cached`` tokens.

    new_tokens: [N]; cached: [N] (broadcastable). Returns [N] float64 ``n*p + n*(n+1)/2``.

    >>> attention_pairs(np.array([4]), np.array([10]))
    array([50.])
    """
    n = np.asarray(new_tokens, dtype=np.float64)
    p = np.asarray(cached, dtype=np.float64)
    return n * p + n * (n + 1.0) / 2.0


def chunk_attention(chunk, context) -> np.ndarray:
    """Attention pairs of a prefill chunk of ``chunk`` tokens after ``context`` tokens: [N] float64."""
    return attention_pairs(chunk, context)
