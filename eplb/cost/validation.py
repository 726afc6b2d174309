"""Per-row comparison of the kernel curves with the bundled H200 measurements (shared by tests and the
benchmark). The measurements validated here were never used to fit the curves."""
from __future__ import annotations

import numpy as np

from eplb.cost import calibration as cal
from eplb.cost import hardware, kernel_profile, model
from eplb.cost import kernels as K


def zipf_counts(num_experts: int, total: float, max_expert: float) -> np.ndarray:
    """Per-expert tokens of a Zipf(1.2) split: the heaviest expert as measured, the rest in proportion
    to rank^-1.2 (the table records the total and the heaviest expert only)."""
    if num_experts == 1:
        return np.array([float(total)])
    w = np.arange(2, num_experts + 1, dtype=np.float64) ** -1.2
    return np.concatenate([[max_expert], (total - max_expert) * w / w.sum()])


def expert_rows() -> list[dict]:
    """Every row of gpu_experts_fp8.csv with the predicted time (H200, cuBLAS curve) and the error."""
    m, hw, prof = model("deepseek-v3"), hardware("h200"), kernel_profile("cublas-h200")
    out = []
    for r in cal.read_csv("gpu_experts_fp8.csv"):
        s, total, mx = int(r["S"]), float(r["total_tokens"]), float(r["max_expert_tokens"])
        counts = np.full(s, total / s) if r["split"] == "balanced" else zipf_counts(s, total, mx)
        pred = float(K.expert_ffn_time(counts, m, hw, prof)) * 1e6
        meas = float(r["us"])
        out.append({"S": s, "total_tokens": int(total), "split": r["split"], "measured_us": meas,
                    "predicted_us": pred, "error": pred / meas - 1})
    return out


def attention_rows() -> list[dict]:
    """Every row of attention_flash_parts.csv with the predicted time and the error."""
    m, hw, prof = model("deepseek-v3"), hardware("h200"), kernel_profile()
    out = []
    for r in cal.read_csv("attention_flash_parts.csv"):
        n, pre = float(r["new_tokens"]), float(r["prefix"])
        pred = float(K.prefill_attention_time(n, pre, m, hw, prof)) * 1e6
        meas = float(r["us_total"])
        out.append({"new_tokens": int(n), "prefix": int(pre), "measured_us": meas, "predicted_us": pred,
                    "error": pred / meas - 1})
    return out


def elementwise_in_trace() -> tuple[float, float, float]:
    """Non-GEMM kernel time of DeepSeek's H800 training forward (per layer, 4096 tokens, 32768 routed pairs)
    against the model's element-wise estimate for the same work: (trace us, model us, ratio). The ratio
    is the ``elementwise_scale`` of the "as slow as in the trace" reading."""
    from eplb.cost.step import ACT_BYTES_PER_PAIR, ACT_BYTES_PER_TOKEN

    non_gemm = ("norm", "FP8 cast", "attn other", "rotary", "permute", "SwiGLU", "mlp other")
    trace = sum(float(r["mean_us"]) for r in cal.read_csv("h800_train_forward_per_layer.csv")
                if r["stage"] in ("attn(F)", "mlp(F)") and any(k in r["component"] for k in non_gemm)
                and "GEMM" not in r["component"] and "topk" not in r["component"])
    mod = float(K.elementwise_time(4096 * ACT_BYTES_PER_TOKEN * 7168 + 32768 * (ACT_BYTES_PER_PAIR * 7168 + 5 * 2048)
                                   + 4096 * 5 * 2048, hardware("h800"))) * 1e6
    return trace, mod, trace / mod
