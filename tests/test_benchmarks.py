"""Smoke test of benchmarks/bench_train.py: --quick runs end to end and its last line is the JSON summary.

Speed is measured by the benchmark, never asserted here (the machine may be shared and noisy).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchattacks")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


@pytest.mark.slow
def test_bench_train_quick_prints_json_summary_last():
    proc = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300,
                          cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1])
    for key in ("images_per_s", "images_per_s_all", "ratios", "goals", "goals_met", "goals_met_by_variant",
                "images", "repeats", "threads", "torch", "device", "model_gflop_per_image"):
        assert key in result, key
    assert result["images"] == 256 and result["repeats"] == 1 and result["device"] == "cpu"
    for variant in ("public_w0", "public", "torchattacks", "latune", "latune_la", "latune_bf16_cl"):
        assert result["images_per_s"][variant] > 0, variant
    for ratio in ("latune_vs_public", "latune_vs_torchattacks", "latune_la_vs_public", "latune_la_vs_torchattacks"):
        assert result["ratios"][ratio] > 0, ratio
    assert set(result["goals_met"]) == {"vs_public", "vs_torchattacks"}
    assert all(isinstance(v, bool) for v in result["goals_met"].values())
    # latune's attack asks only for input gradients: 10 x (fwd + input bwd) + (fwd + weight bwd) ~ 23 forwards
    flops = result["model_gflop_per_image"]
    assert flops["pgd_train"] == pytest.approx(23 * flops["forward"], rel=0.05)


def test_bench_train_cuda_request_without_cuda_is_a_clean_skip():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = subprocess.run([sys.executable, str(BENCH), "--device", "cuda"], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"] == "cuda" and "skipped" in result
    assert "CUDA" in proc.stderr


@pytest.mark.slow
def test_bench_sweep_quick_reports_sweep_plain_and_ray_figures(tmp_path):
    bench = BENCH.with_name("bench_sweep.py")
    env = {**__import__("os").environ, "RAY_ADDRESS": "local"}
    proc = subprocess.run([sys.executable, str(bench), "--quick"], capture_output=True, text=True, timeout=400,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("efficiency", "efficiency_plain", "ray_vs_plain", "sweep_wall_s", "plain_wall_s", "trial_s"):
        assert result[key] > 0 if not isinstance(result[key], list) else len(result[key]) == 2, key
    assert result["ideal_s"] == pytest.approx(sum(result["trial_s"]) / 2)


@pytest.mark.slow
def test_bench_early_stopping_small_reports_hypervolume_per_epoch_and_saves_the_png(tmp_path):
    bench = BENCH.with_name("bench_early_stopping.py")
    env = {**__import__("os").environ, "RAY_ADDRESS": "local"}
    proc = subprocess.run([sys.executable, str(bench), "--small", "--out", str(tmp_path / "es.png")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    [seed] = result["per_seed"]
    assert seed["full_epochs"] == 2 * 2 and seed["full_statuses"] == {"TERMINATED": 2}
    assert sum(seed["es_statuses"].values()) == 4 and set(seed["es_statuses"]) <= {"TERMINATED", "PRUNED"}
    for split in ("validation", "test"):
        figures = seed[split]
        assert 0 <= figures["es_hv_at_full_budget"] <= figures["es_hv_final"] <= 1 and 0 <= figures["full_hv"] <= 1
        assert figures["fraction_to_reach"] is None or 0 < figures["fraction_to_reach"] <= 1
        assert {"fraction_to_reach", "seeds_reached", "goal_met", "full_hv"} <= set(result["summary"][split])
    for key in ("full", "es"):  # curves start at 0 epochs and never lose hypervolume
        points = result["curves"][0][key]
        assert points[0] == [0, {"validation": 0.0, "test": 0.0}]
        assert [p[0] for p in points] == sorted(p[0] for p in points)
        assert all(a[1]["validation"] <= b[1]["validation"] + 1e-12 for a, b in zip(points, points[1:]))
    assert (tmp_path / "es.png").stat().st_size > 10_000 and result["png"] == str(tmp_path / "es.png")
