"""Hardware and model specifications, as data with a source for every value.

The values live in ``eplb/cost/data/specs.json``; :func:`hardware` and :func:`model` turn them into
small frozen dataclasses. ``Hardware.sources`` / ``MoEModel.source`` say where each figure comes from.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from eplb.errors import EplbError

__all__ = ["Hardware", "MoEModel", "hardware", "model", "HARDWARE", "MODELS", "specs_data"]


@lru_cache(maxsize=None)
def specs_data() -> dict:
    """The raw specification table (hardware, models, kernel figures) with sources."""
    with resources.files("eplb.cost").joinpath("data/specs.json").open("r", encoding="utf-8") as fh:
        return json.load(fh)


@dataclass(frozen=True)
class Hardware:
    """One GPU type. Rates are dense (no sparsity); bandwidths per GPU and per direction."""

    name: str
    sms: int
    bf16_tflops: float
    fp8_tflops: float
    hbm_gb: float
    hbm_tbps: float
    nvlink_gbps: float
    nvlink_usable_gbps: float
    rdma_gbps: float
    gpus_per_node: int
    description: str = ""
    sources: dict = field(default_factory=dict, compare=False, repr=False)


_HW_FIELDS = ("sms", "bf16_tflops", "fp8_tflops", "hbm_gb", "hbm_tbps", "nvlink_gbps", "nvlink_usable_gbps",
              "rdma_gbps", "gpus_per_node")


@lru_cache(maxsize=None)
def hardware(name: str) -> Hardware:
    """A GPU by name: ``"h800"``, ``"h100"``, ``"h200"`` or ``"b200"`` (see :data:`HARDWARE`)."""
    table = specs_data()["hardware"]
    key = name.lower()
    if key not in table:
        raise EplbError(f"unknown hardware {name!r}; choose one of {', '.join(sorted(table))}")
    d = table[key]
    values = {f: d[f]["value"] for f in _HW_FIELDS}
    values["sms"] = int(values["sms"])
    values["gpus_per_node"] = int(values["gpus_per_node"])
    return Hardware(name=key, description=d.get("description", ""),
                    sources={f: d[f]["source"] for f in _HW_FIELDS}, **values)


@dataclass(frozen=True)
class MoEModel:
    """An MoE transformer's shape. ``attention`` is ``"mla"`` (DeepSeek multi-head latent attention)
    or ``"gqa"`` (grouped-query attention with ``kv_heads`` key/value heads of ``head_dim``)."""

    name: str
    layers: int
    dense_layers: int
    hidden: int
    dense_intermediate: int
    moe_intermediate: int
    routed_experts: int
    shared_experts: int
    top_k: int
    groups: int
    topk_groups: int
    vocab: int
    attention: str
    heads: int
    kv_heads: int
    head_dim: int
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    description: str = ""
    source: str = field(default="", compare=False, repr=False)

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert (gate, up and down projections)."""
        return 3 * self.hidden * self.moe_intermediate

    def attention_gemms(self, phase: str) -> list[tuple[int, int]]:
        """(N, K) of the weight GEMMs of one attention block, per token. Prefill runs MLA with the
        up-projection materialised (wkv_b as a GEMM); decode absorbs it into two per-head batched
        GEMMs, which read the same weights (listed as the same (N, K) for time purposes)."""
        h = self.hidden
        if self.attention == "mla":
            qk_head = self.qk_nope_head_dim + self.qk_rope_head_dim
            return [
                (self.q_lora_rank + self.kv_lora_rank + self.qk_rope_head_dim, h),  # wq_a + wkv_a fused
                (self.heads * qk_head, self.q_lora_rank),                          # wq_b
                (self.heads * (self.qk_nope_head_dim + self.v_head_dim), self.kv_lora_rank),  # wkv_b
                (h, self.heads * self.v_head_dim),                                 # wo
            ]
        return [
            (self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim, h),    # qkv
            (h, self.heads * self.head_dim),                                        # o
        ]

    def core_flops_per_pair(self, phase: str) -> float:
        """FLOPs of core attention per (query token, key token) pair."""
        if self.attention == "mla":
            if phase == "decode":  # absorbed: keys are the 576-wide latent+rope, values the 512 latent
                return 2.0 * self.heads * (self.kv_lora_rank + self.qk_rope_head_dim + self.kv_lora_rank)
            return 2.0 * self.heads * (self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)
        return 2.0 * self.heads * 2 * self.head_dim

    @property
    def kv_bytes_per_token_layer(self) -> int:
        """BF16 KV-cache bytes per token and layer (MLA: 576 latent+rope values)."""
        if self.attention == "mla":
            return 2 * (self.kv_lora_rank + self.qk_rope_head_dim)
        return 2 * 2 * self.kv_heads * self.head_dim

    @property
    def attention_params(self) -> int:
        return sum(n * k for n, k in self.attention_gemms("prefill"))


_MODEL_INT_FIELDS = ("layers", "dense_layers", "hidden", "dense_intermediate", "moe_intermediate", "routed_experts",
                     "shared_experts", "top_k", "groups", "topk_groups", "vocab", "heads", "kv_heads", "head_dim",
                     "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


@lru_cache(maxsize=None)
def model(name: str) -> MoEModel:
    """A model by name: ``"deepseek-v3"`` or ``"qwen3-235b-a22b"`` (see :data:`MODELS`)."""
    table = specs_data()["models"]
    key = name.lower()
    if key not in table:
        raise EplbError(f"unknown model {name!r}; choose one of {', '.join(sorted(table))}")
    d = table[key]
    return MoEModel(name=key, attention=d["attention"], description=d.get("description", ""), source=d["source"],
                    **{f: int(d[f]) for f in _MODEL_INT_FIELDS})


HARDWARE = tuple(sorted(specs_data()["hardware"]))
MODELS = tuple(sorted(specs_data()["models"]))
