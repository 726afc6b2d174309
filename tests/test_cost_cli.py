"""``eplb cost`` and the predicted step time in ``eplb evaluate``."""
import json

import pytest

from eplb.cli import main


def test_cost_without_arguments(capsys):
    assert main(["cost"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("cost_per_day_usd", "revenue_per_day_usd", "cost_profit_margin", "prefill_tokens_per_s_per_node",
                "decode_tokens_per_s_per_node"):
        assert isinstance(out[key], float)
    assert out["cost_per_day_usd"] == pytest.approx(87072)
    assert round(out["cost_profit_margin"], 2) == pytest.approx(5.46, abs=0.01)
    assert out["decode"]["tokens_per_s_per_user"] >= 21
    assert out["prefill"]["cache_hit_rate"] == pytest.approx(342 / 608)
    assert out["fleet_plan"]["hours"] == 24
    # default fleet plan: the published hourly curve, with the published nodes beside it
    plan = out["fleet_plan"]
    assert plan["published_nodes"][0] == 278 and len(plan["hours_utc8"]) == 24
    assert plan["nodes"][0] > plan["nodes"][16]  # 12:00 busier than 04:00
    avg = out["day_average"]
    assert 0.9 < avg["busiest_hour_utilisation"] < 0.95
    assert avg["prefill_tokens_per_s_per_node"] == pytest.approx(
        out["prefill_tokens_per_s_per_node"] * avg["busiest_hour_utilisation"])
    assert avg["decode_vs_published"] == pytest.approx(avg["decode_tokens_per_s_per_node"] / 14.8e3)
    # the published decode figures as an operating point: 14.8k / 8 GPUs / 21 tokens/s = 88.1 requests per GPU
    op = out["decode"]["published_operating_point"]
    assert op["requests_per_gpu"] == pytest.approx(14.8e3 / 8 / 21)
    assert op["published_step_ms"] == pytest.approx(1e3 / 21)
    assert op["missing_ms"] == pytest.approx(op["published_step_ms"] - op["model_step_ms"])
    assert 0 < op["model_step_ms"] < out["decode"]["step_time_ms"]  # fewer requests than the capacity runs


def test_cost_options_and_errors(tmp_path, capsys):
    curve = tmp_path / "curve.csv"
    curve.write_text("input_tokens_per_s,output_tokens_per_s\n1e6,2e5\n4e6,8e5\n")
    dest = tmp_path / "out.json"
    assert main(["cost", "--load-curve", str(curve), "--gpu-hour-usd", "1", "-o", str(dest)]) == 0
    out = json.loads(dest.read_text())
    assert out["cost_per_day_usd"] == pytest.approx(87072 / 2)
    assert out["fleet_plan"]["hours"] == 2 and out["fleet_plan"]["load_curve"] == "given"
    assert main(["cost", "--phase", "decode", "--requests-per-gpu", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decode"]["requests_per_gpu"] == 64 and "prefill" not in out
    assert set(out["day_average"]) >= {"decode_tokens_per_s_per_node", "decode_vs_published"}
    assert "prefill_tokens_per_s_per_node" not in out["day_average"] and "fleet_plan" not in out
    assert main(["cost", "--load-curve", str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    # the pessimistic sourced readings from the command line: slower prefill, decode's DeepEP unchanged
    assert main(["cost", "--phase", "prefill"]) == 0
    base = json.loads(capsys.readouterr().out)["prefill_tokens_per_s_per_node"]
    assert main(["cost", "--phase", "prefill", "--deepep", "trace"]) == 0
    slow = json.loads(capsys.readouterr().out)["prefill_tokens_per_s_per_node"]
    assert 0.7 * base < slow < 0.85 * base
    assert main(["cost", "--phase", "prefill", "--elementwise-scale", "3.3"]) == 0
    assert json.loads(capsys.readouterr().out)["prefill_tokens_per_s_per_node"] < base
    # a time-to-first-token target shrinks the prefill batch and the fleet plan follows
    assert main(["cost", "--ttft", "0.3"]) == 0
    tight = json.loads(capsys.readouterr().out)
    assert tight["prefill"]["ttft_met"] and tight["prefill"]["time_to_first_token_ms"] <= 300
    assert tight["prefill"]["deployment"]["tokens_per_gpu"] == tight["prefill"]["tokens_per_gpu"] < 16384
    assert tight["prefill_tokens_per_s_per_node"] < base
    assert main(["cost", "--ttft", "-1"]) == 2
    assert "positive seconds" in capsys.readouterr().err
    assert main(["cost", "--elementwise-scale", "0"]) == 2
    assert "elementwise_scale must be positive" in capsys.readouterr().err
    assert not (tmp_path / "partial.json").exists()


def test_evaluate_shows_predicted_step_time(tmp_path, capsys):
    placement = tmp_path / "p.json"
    assert main(["place", "--workload", "prefill_in512", "--preset", "deepseek-v3-prefill", "-q", "-o",
                 str(placement)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--placement", str(placement)]) == 0
    text = capsys.readouterr().out
    assert "predicted MoE step time (prefill" in text
    assert main(["evaluate", "--placement", str(placement), "--json", "--phase", "decode", "--tokens-per-gpu",
                 "64"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert cost["phase"] == "decode" and cost["requests_per_gpu"] == 64
    assert cost["moe_time_ms"] >= cost["balanced_moe_time_ms"] > 0
    assert len(cost["moe_layer_time_us"]) == 58


def test_cost_with_expert_imbalance(capsys):
    assert main(["cost", "--phase", "decode"]) == 0
    balanced = json.loads(capsys.readouterr().out)
    assert main(["cost", "--phase", "decode", "--workload", "decode_in1000out1000"]) == 0
    hot = json.loads(capsys.readouterr().out)
    assert hot["expert_loads"] == {"workload": "decode_in1000out1000", "method": "deepseek"}
    assert hot["decode"]["moe"]["imbalance_lost_fraction"] > 0.01
    assert balanced["decode"]["moe"]["imbalance_lost_fraction"] == 0
    assert hot["decode_tokens_per_s_per_node"] < balanced["decode_tokens_per_s_per_node"]
    assert main(["cost", "--workload", "nope"]) == 2
