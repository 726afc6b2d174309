"""Analytic cost model for MoE serving: hardware and model specifications with sources, kernel time
curves calibrated to kernel measurements, per-layer step time of prefill and decode under a deployment,
throughput, and fleet economics."""
from eplb.cost.economics import DAY, PublishedDay, daily_cost, daily_revenue, fleet_plan, margin
from eplb.cost.kernels import KernelProfile, kernel_profile
from eplb.cost.specs import HARDWARE, MODELS, Hardware, MoEModel, hardware, model
from eplb.cost.step import (DEPLOYMENTS, Deployment, StepTime, decode_rank_time, decode_throughput, deployment,
                            deployment_for,
                            hbm_max_requests, layer_stages, moe_step_time, prefill_rank_time, prefill_throughput,
                            step_time)

__all__ = ["DAY", "DEPLOYMENTS", "Deployment", "HARDWARE", "Hardware", "KernelProfile", "MODELS", "MoEModel",
           "PublishedDay", "StepTime", "daily_cost", "daily_revenue", "decode_rank_time", "decode_throughput",
           "deployment", "deployment_for", "fleet_plan", "hardware", "hbm_max_requests", "kernel_profile", "layer_stages", "margin",
           "model", "moe_step_time", "prefill_rank_time", "prefill_throughput", "step_time"]
