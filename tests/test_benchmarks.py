"""Smoke tests of benchmarks/: the small modes run end to end, their last line is the JSON summary, and every
comparison they print is like for like (bench_train: both sides of a ratio in one precision and layout;
bench_sweep: Ray's cost with MLflow off on both sides, MLflow's cost on the same Ray sweep).

Speed is measured by the benchmarks, never asserted here (the machine may be shared and noisy).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


@pytest.mark.slow
def test_bench_train_quick_pairs_only_same_setting_variants():
    pytest.importorskip("torchattacks")
    proc = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600,
                          cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1])
    for key in ("images_per_s", "images_per_s_all", "variants", "pairs", "goals", "goals_met", "images", "repeats",
                "threads", "torch", "device", "cpu_model", "model_gflop_per_image", "loadavg_1min"):
        assert key in result, key
    assert result["images"] == 256 and result["repeats"] == 1 and result["device"] == "cpu"
    variants = result["variants"]
    for name in ("public_w0", "torchattacks", "latune", "public_bf16_cl_w0", "torchattacks_bf16_cl", "latune_bf16_cl"):
        assert result["images_per_s"][name] > 0, name
    # both settings run by default: each latune setting paired with both references in the same setting
    assert {(p["setting"], p["reference"]) for p in result["pairs"]} == {
        ("fp32", "public"), ("fp32", "torchattacks"), ("bf16_cl", "public_bf16_cl"),
        ("bf16_cl", "torchattacks_bf16_cl")}
    for pair in result["pairs"]:
        latune, reference = variants[pair["latune"]], variants[pair["reference_variant"]]
        assert latune["loop"] == "latune" and reference["loop"] != "latune" and not latune["la"]
        assert (latune["precision"], latune["channels_last"]) == (reference["precision"], reference["channels_last"])
        assert latune["setting"] == reference["setting"] == pair["setting"]
        assert pair["ratio"] == pytest.approx(result["images_per_s"][pair["latune"]]
                                              / result["images_per_s"][pair["reference_variant"]])
        assert pair["met"] == (pair["ratio"] >= pair["goal"])
    assert set(result["goals_met"]) == {"fp32", "bf16_cl"}
    for met in result["goals_met"].values():
        assert set(met) == {"vs_public", "vs_torchattacks"} and all(isinstance(v, bool) for v in met.values())
    # the printout: one goal line per pair, each naming its setting; nothing across settings is a speed-up
    goal_lines = [line for line in lines if "goal >=" in line]
    assert len(goal_lines) == 4 and all(("fp32" in line) != ("bf16" in line) for line in goal_lines), goal_lines
    assert all("met" in line for line in goal_lines)
    assert "speedup" not in proc.stdout.lower() and "speed-up" not in proc.stdout.lower()
    # latune's attack asks only for input gradients: 10 x (fwd + input bwd) + (fwd + weight bwd) ~ 23 forwards
    flops = result["model_gflop_per_image"]
    assert flops["pgd_train"] == pytest.approx(23 * flops["forward"], rel=0.05)


@pytest.mark.slow
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
def test_bench_train_unknown_variant_is_a_usage_error():
    proc = subprocess.run([sys.executable, str(BENCH), "--variants", "latune,nope"], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parents[1])
    assert proc.returncode == 2 and "--variants" in proc.stderr


@pytest.mark.slow
def test_bench_sweep_quick_reports_ray_and_mlflow_costs_apart(tmp_path):
    bench = BENCH.with_name("bench_sweep.py")
    env = {**os.environ, "RAY_ADDRESS": "local"}
    proc = subprocess.run([sys.executable, str(bench), "--quick"], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    walls = result["wall_s"]
    assert set(walls) == {"plain", "ray", "ray_mlflow"} and all(len(w) == 1 and w[0] > 0 for w in walls.values())
    median = result["wall_s_median"]
    # Ray's cost compares the Ray sweep with MLflow off against plain processes; MLflow's, the same sweep on vs off
    assert result["ray_cost_mlflow_off"]["ratio"] == pytest.approx(median["ray"] / median["plain"])
    assert result["mlflow_cost_same_ray_sweep"]["ratio"] == pytest.approx(median["ray_mlflow"] / median["ray"])
    assert result["goal_met"] is None  # --quick is a smoke test, not a measurement
    assert len(result["runs"]["plain"][0]["trial_s"]) == 2
    assert any("MLflow off on both sides" in line for line in lines)
    assert any("MLflow's cost, same Ray sweep" in line for line in lines)
    assert not list(tmp_path.iterdir())  # runs, checkpoints and the MLflow store live in temporary folders


@pytest.mark.slow
def test_bench_early_stopping_small_reports_hypervolume_per_epoch_and_saves_the_png(tmp_path):
    bench = BENCH.with_name("bench_early_stopping.py")
    env = {**os.environ, "RAY_ADDRESS": "local"}
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
