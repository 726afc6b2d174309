"""Kernel efficiency curves, calibrated only to kernel measurements.

Sources (bundled in ``eplb/cost/data``, see its SOURCES.md):
- ``expert_ffn.csv``: one DeepSeek-V3 expert FFN (FP8, cuBLAS) on one H200, tokens 1..16384;
- ``attention.csv``: causal flash attention, 128 heads, d_qk 192, d_v 128, on one H200;
- ``deepgemm_h800.csv``: DeepGEMM's published H800 FP8 GEMM rates (normal, grouped contiguous, grouped masked).

Every curve has the same roofline form, with hardware-relative efficiencies so it transfers between GPUs of
one architecture: ``t = ((bytes / (eta_mem * HBM))**p + (flops / (eta_flop * peak))**p) ** (1/p)``.
The fits never see the throughput targets (tokens per node) nor the validation tables
(``gpu_experts_fp8.csv``, ``attention_flash_parts.csv``).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from eplb.errors import EplbError

__all__ = ["Roofline", "AttentionCurve", "read_csv", "fit_expert_h200", "fit_expert_deepgemm", "fit_dense_deepgemm",
           "fit_attention", "deepgemm_rows", "trace_forward_us", "VERSIONS"]

#: Kernel-library snapshots with published H800 figures; "2025-02" matches the published serving day.
VERSIONS = ("2025-02", "2025-04")

#: FA3 tile for head dim 192 (kBlockM = kBlockN = 128 in the kernel name of DeepSeek's H800 trace,
#: ``Flash_fwd_kernel_traits<192, 128, 128, ...>``).
ATTENTION_TILE = 128


def read_csv(name: str) -> list[dict]:
    """Rows of a bundled CSV in ``eplb/cost/data`` as dicts of strings."""
    with resources.files("eplb.cost").joinpath("data/" + name).open("r", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def trace_forward_us(stage: str, key: str) -> float:
    """Mean microseconds per layer of the one row of DeepSeek's H800 training-forward trace
    (``h800_train_forward_per_layer.csv``) in ``stage`` whose component contains ``key``."""
    hits = [float(r["mean_us"]) for r in read_csv("h800_train_forward_per_layer.csv")
            if r["stage"] == stage and key in r["component"]]
    if len(hits) != 1:
        raise EplbError(f"h800_train_forward_per_layer.csv: expected one {stage} row with {key!r}, found {len(hits)}")
    return hits[0]


@dataclass(frozen=True)
class Roofline:
    """Smoothed roofline with efficiencies relative to the GPU's peak HBM bandwidth and tensor rate."""

    eta_mem: float
    eta_flop: float
    p: float
    source: str = ""

    def time_s(self, bytes_, flops, hbm_tbps: float, peak_tflops: float) -> np.ndarray:
        """Seconds for work of ``bytes_`` and ``flops`` (arrays of one shape)."""
        t_mem = np.asarray(bytes_, dtype=np.float64) / (self.eta_mem * hbm_tbps * 1e12)
        t_flop = np.asarray(flops, dtype=np.float64) / (self.eta_flop * peak_tflops * 1e12)
        hi = np.maximum(t_mem, t_flop)
        lo = np.minimum(t_mem, t_flop)
        ratio = np.divide(lo, hi, out=np.zeros_like(hi), where=hi > 0)
        return hi * (1.0 + ratio ** self.p) ** (1.0 / self.p)


@dataclass(frozen=True)
class AttentionCurve:
    """Prefill flash attention: ``t = launch_us + tile-rounded pairs * flops_per_pair / (eta * bf16 peak)
    + work items * block_us / SMs``, a work item being one (query tile, head) block of the kernel's grid
    (its prologue and epilogue: loading the query tile, normalising and writing the output)."""

    launch_us: float
    eta_flop: float
    tile: int = ATTENTION_TILE
    source: str = ""
    block_us: float = 0.0


def _fit_roofline(bytes_, flops, t_s, hbm, peak, source) -> Roofline:
    from scipy.optimize import least_squares

    bytes_, flops, t_s = (np.asarray(x, dtype=np.float64) for x in (bytes_, flops, t_s))

    def resid(x):
        return np.log(Roofline(x[0], x[1], x[2]).time_s(bytes_, flops, hbm, peak) / t_s)

    r = least_squares(resid, [0.5, 0.5, 2.0], bounds=([0.01, 0.01, 1.0], [1.0, 1.0, 20.0]))
    return Roofline(float(r.x[0]), float(r.x[1]), float(r.x[2]), source)


def _expert_work(tokens, hidden=7168, inter=2048):
    """Bytes (FP8 weights + FP8 in, BF16 out activations) and FLOPs of one expert FFN on ``tokens``."""
    t = np.asarray(tokens, dtype=np.float64)
    weights = 3.0 * hidden * inter
    return weights + t * (hidden + 2 * inter + 2 * hidden), 2.0 * weights * t


@lru_cache(maxsize=None)
def fit_expert_h200() -> Roofline:
    """Expert-FFN curve of cuBLAS FP8 (per-tensor scaling) on one H200 (HBM 4.8 TB/s, FP8 1978 TFLOPS),
    fitted to every FP8 row of ``expert_ffn.csv`` (one expert, SwiGLU included)."""
    rows = [r for r in read_csv("expert_ffn.csv") if r["dtype"] == "fp8"]
    tokens = np.array([float(r["tokens"]) for r in rows])
    b, f = _expert_work(tokens)
    t = np.array([float(r["us_per_expert"]) for r in rows]) * 1e-6
    return _fit_roofline(b, f, t, 4.8, 1978.0, "fit to h200-calibration/expert_ffn.csv (fp8 rows)")


def deepgemm_rows(version: str = "2025-02") -> list[dict]:
    """DeepGEMM's published H800 rows as of ``version``: that snapshot's rows, plus older rows for the
    shapes it did not change. Each row: layout, groups, m, n, k, tflops, us (derived = 2*G*M*N*K / rate)."""
    if version not in VERSIONS:
        raise EplbError(f"unknown kernel version {version!r}; choose one of {', '.join(VERSIONS)}")
    chosen: dict[tuple, dict] = {}
    for r in sorted(read_csv("deepgemm_h800.csv"), key=lambda r: r["version"]):
        if r["version"] <= version:
            key = (r["layout"], int(r["groups"]), int(r["m"]), int(r["n"]), int(r["k"]))
            chosen[key] = {"layout": key[0], "groups": key[1], "m": key[2], "n": key[3], "k": key[4],
                           "tflops": float(r["tflops"]), "version": r["version"]}
    for r in chosen.values():
        r["us"] = 2.0 * r["groups"] * r["m"] * r["n"] * r["k"] / (r["tflops"] * 1e12) * 1e6
    return list(chosen.values())


@lru_cache(maxsize=None)
def fit_expert_deepgemm(version: str = "2025-02") -> Roofline:
    """Expert-FFN curve of DeepGEMM grouped FP8 GEMMs on H800, fitted to the published grouped rows
    (contiguous and masked layouts): per expert, gate/up time + down time at the same tokens per expert."""
    rows = [r for r in deepgemm_rows(version) if r["layout"] in ("contiguous", "masked")]
    per = {}
    for r in rows:
        per.setdefault((r["layout"], r["groups"], r["m"]), 0.0)
        per[(r["layout"], r["groups"], r["m"])] += r["us"] / r["groups"]
    tokens = np.array([k[2] for k in per], dtype=np.float64)
    t = np.array(list(per.values())) * 1e-6
    b, f = _expert_work(tokens)
    return _fit_roofline(b, f, t, 3.35, 1978.0, f"fit to DeepGEMM H800 grouped GEMM figures ({version})")


@lru_cache(maxsize=None)
def fit_dense_deepgemm(version: str = "2025-02") -> Roofline:
    """Dense FP8 GEMM curve (projections, shared expert, dense FFN) fitted to DeepGEMM's normal-layout rows.
    Bytes counted as DeepGEMM does: FP8 A and B, BF16 output."""
    rows = [r for r in deepgemm_rows(version) if r["layout"] == "normal"]
    m, n, k = (np.array([r[c] for r in rows], dtype=np.float64) for c in ("m", "n", "k"))
    t = np.array([r["us"] for r in rows]) * 1e-6
    return _fit_roofline(n * k + m * k + 2 * m * n, 2 * m * n * k, t, 3.35, 1978.0,
                         f"fit to DeepGEMM H800 normal GEMM figures ({version})")


def causal_tile_pairs(n, tile: int = ATTENTION_TILE) -> np.ndarray:
    """Query-key pairs a tiled causal kernel computes for ``n`` new tokens: full tiles on and below the
    diagonal. n: [...] -> [...]."""
    nb = np.ceil(np.asarray(n, dtype=np.float64) / tile)
    return nb * (nb + 1) / 2 * tile * tile


@lru_cache(maxsize=None)
def fit_attention() -> AttentionCurve:
    """Prefill attention curve fitted to the causal rows of ``attention.csv`` (H200, BF16, 128 heads,
    d_qk 192, d_v 128). Rates are BF16 tensor-core bound, the same on H800/H100/H200."""
    from scipy.optimize import least_squares

    rows = [r for r in read_csv("attention.csv") if int(r["prefix"]) == 0]
    n = np.array([float(r["new_tokens"]) for r in rows])
    t = np.array([float(r["us"]) for r in rows])
    heads = np.array([float(r["heads"]) for r in rows])
    f = causal_tile_pairs(n) * 2.0 * heads * (192 + 128)
    blocks = np.ceil(n / ATTENTION_TILE) * heads  # (query tile, head) work items of the grid

    def resid(x):
        return np.log((x[0] + f / (x[1] * 989e12) * 1e6 + blocks * x[2] / 132) / t)

    r = least_squares(resid, [10.0, 0.5, 1.0], bounds=([0.0, 0.01, 0.0], [500.0, 1.0, 100.0]))
    return AttentionCurve(float(r.x[0]), float(r.x[1]), ATTENTION_TILE,
                          "fit to h200-calibration/attention.csv (causal rows, prefix 0; 132 SMs)", float(r.x[2]))
