"""Serving units: a :class:`Deployment` (phase, EP/DP size, batch shape, hardware, kernels), DeepSeek's
published units (:data:`DEPLOYMENTS`) and the unit matching an expert-placement topology
(:func:`deployment_for`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from eplb.cost import kernels as K
from eplb.errors import EplbError

__all__ = ["Deployment", "DEPLOYMENTS", "deployment", "deployment_for"]


@dataclass(frozen=True)
class Deployment:
    """A serving unit. EP size = DP size = ``num_gpus`` (DeepSeek's prefill EP32/DP32, decode EP144/DP144).

    prefill: ``tokens_per_gpu`` new tokens per GPU per step, from sequences of ``seq_new`` new tokens after a
    cached prefix of ``seq_prefix``; decode: ``requests_per_gpu`` requests with a mean KV length ``kv_len``.
    ``mtp_tokens`` tokens per request per decode step (1 without multi-token prediction).
    include_comm / include_elementwise / reserve_comm_sms switch terms off and elementwise_scale multiplies the
    element-wise kernel time, for attribution tables. ``deepep``: "benchmark" (DeepEP's published tables) or
    "trace" (prefill's normal kernels as fast as inside DeepSeek's H800 trace, notify kernels included).
    """

    phase: str
    num_gpus: int
    slots_per_gpu: int
    gpus_per_node: int = 8
    tokens_per_gpu: float = 16384.0
    seq_new: float = 4096.0
    seq_prefix: float = 0.0
    requests_per_gpu: float = 128.0
    kv_len: float = 4096.0
    micro_batches: int = 2
    overlap: bool = True
    stage_overhead_us: float = 0.0
    mtp_tokens: float = 1.0
    include_comm: bool = True
    include_elementwise: bool = True
    elementwise_scale: float = 1.0
    reserve_comm_sms: bool = True
    hardware: str = "h800"
    model: str = "deepseek-v3"
    kernels: str = "deepgemm"
    version: str = "2025-02"
    deepep: str = "benchmark"
    name: str = ""

    def __post_init__(self):
        if self.phase not in ("prefill", "decode"):
            raise EplbError(f"phase must be 'prefill' or 'decode', got {self.phase!r}")
        for f in ("num_gpus", "slots_per_gpu", "gpus_per_node", "micro_batches"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise EplbError(f"deployment {f} must be a positive integer, got {v!r}")
        for f in ("tokens_per_gpu", "seq_new", "requests_per_gpu", "kv_len", "mtp_tokens", "elementwise_scale"):
            v = getattr(self, f)
            if not np.isfinite(v) or v <= 0:
                raise EplbError(f"deployment {f} must be positive, got {v!r}")
        if self.deepep not in K.DEEPEP_SOURCES:
            raise EplbError(f"deployment deepep must be one of {', '.join(K.DEEPEP_SOURCES)}, got {self.deepep!r}")
        if self.seq_prefix < 0 or self.stage_overhead_us < 0:
            raise EplbError("deployment seq_prefix and stage_overhead_us must be non-negative")
        if self.num_gpus % self.gpus_per_node and self.num_gpus > self.gpus_per_node:
            raise EplbError(f"num_gpus {self.num_gpus} is not a whole number of {self.gpus_per_node}-GPU nodes")

    @property
    def num_nodes(self) -> int:
        return max(1, self.num_gpus // self.gpus_per_node)

    def with_(self, **changes) -> "Deployment":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


#: DeepSeek's published units (Day-6 overview) with the profile-data batch sizes. The decode unit's request
#: count is a placeholder: :func:`decode_throughput` solves it for a per-user speed.
DEPLOYMENTS = {
    "deepseek-v3-prefill": Deployment("prefill", 32, 9, tokens_per_gpu=16384, seq_new=4096, seq_prefix=0,
                                      name="deepseek-v3-prefill"),
    "deepseek-v3-decode": Deployment("decode", 144, 2, requests_per_gpu=128, kv_len=4989,
                                     name="deepseek-v3-decode"),
}


def deployment(name: str) -> Deployment:
    """A deployment preset by name (see :data:`DEPLOYMENTS`)."""
    try:
        return DEPLOYMENTS[name]
    except KeyError:
        raise EplbError(f"unknown deployment {name!r}; choose one of {', '.join(DEPLOYMENTS)}") from None


def deployment_for(topology, phase: str | None = None, per_gpu: float | None = None, **options) -> Deployment:
    """The deployment matching an expert-placement topology (an ``eplb.Topology``): EP = DP = its GPUs,
    its slots per GPU. phase: "prefill" | "decode" (default: "prefill" when the topology's name says so,
    else "decode"); per_gpu: prefill tokens or decode requests per GPU per step (default: the preset's);
    options: other :class:`Deployment` fields (hardware, model, kv_len, ...)."""
    if phase is None:
        phase = "prefill" if "prefill" in (getattr(topology, "name", "") or "") else "decode"
    base = DEPLOYMENTS["deepseek-v3-" + phase] if phase in ("prefill", "decode") else None
    if base is None:
        raise EplbError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    fields = {"num_gpus": topology.num_gpus, "slots_per_gpu": topology.slots_per_gpu,
              "gpus_per_node": topology.gpus_per_node, "name": ""}
    if per_gpu is not None:
        fields["tokens_per_gpu" if phase == "prefill" else "requests_per_gpu"] = float(per_gpu)
    return base.with_(**fields, **options)
