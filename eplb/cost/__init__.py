"""Analytic cost model for MoE serving: hardware and model specifications with sources, kernel time
curves calibrated to kernel measurements, per-layer step time of prefill and decode under a deployment,
throughput, and fleet economics."""
from eplb.cost.economics import (DAY, PublishedDay, busiest_hour_utilisation, daily_cost, daily_revenue, fleet_plan,
                                 hourly_load, margin, published_hours)
from eplb.cost.kernels import KernelProfile, kernel_profile
from eplb.cost.specs import HARDWARE, MODELS, Hardware, MoEModel, hardware, model
from eplb.cost.deployment import DEPLOYMENTS, Deployment, deployment, deployment_for
from eplb.cost.step import (StepTime, decode_rank_time, layer_stages, moe_step_time, per_step_moe_time,
                            prefill_rank_time, step_time)
from eplb.cost.throughput import (attention_spread, decode_throughput, hbm_max_requests, prefill_pairs_per_token,
                                  prefill_throughput)

__all__ = ["DAY", "DEPLOYMENTS", "Deployment", "HARDWARE", "Hardware", "KernelProfile", "MODELS", "MoEModel",
           "PublishedDay", "StepTime", "attention_spread", "busiest_hour_utilisation", "daily_cost", "daily_revenue",
           "decode_rank_time", "decode_throughput", "deployment", "deployment_for", "fleet_plan", "hardware",
           "hbm_max_requests", "hourly_load", "kernel_profile", "layer_stages", "margin", "model", "moe_step_time",
           "per_step_moe_time", "prefill_pairs_per_token", "prefill_rank_time", "prefill_throughput",
           "published_hours", "step_time"]
