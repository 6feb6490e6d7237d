"""benchmarks/gpu_check.py on the CPU (--small), as documented, so that the GPU check never rots; and its
exit status and error handling on stand-in sections."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ["environment", "throughput", "fp16", "parity", "losses", "teacher", "search"]
LOSSES = ["mined pairs", "mined mask", "nearest pairwise", "nearest per_clip", "multiframe", "denseav", "speechclip",
          "ccl"]


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--small", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_every_section_runs_and_passes_on_the_cpu(run):
    result, stdout = run
    assert list(result["sections"]) == SECTIONS
    assert result["device"] == "cpu" and result["small"] is True
    assert result["failed"] == [] and result["parity_passed"] is True
    for name, section in result["sections"].items():
        assert section["status"] == "ok", (name, section)
        for check in section["checks"]:  # one printed line per check
            assert f"[{name}] {check}" in stdout
    assert "parity PASS" in stdout.splitlines()[-1]


def test_throughput_figures(run):
    checks = run[0]["sections"]["throughput"]["checks"]
    bare, trainer = checks["bare loop"], checks["trainer"]
    for key in ("steps_per_s", "samples_per_s", "peak_memory_mib", "flops_per_step", "loss"):
        assert positive(bare[key]), key
    assert bare["mfu"] is None  # no MFU on the CPU
    assert bare["samples_per_s"] == pytest.approx(bare["steps_per_s"] * bare["batch"])
    for key in ("steps_per_s", "samples_per_s", "ratio_to_bare", "peak_memory_mib", "loss"):
        assert positive(trainer[key]), key
    assert 0 <= trainer["data_wait_fraction"] < 1
    assert trainer["workers"] == 0  # the trainer builds batches in the loop on the CPU


def test_parity_compares_something_real(run):
    checks = run[0]["sections"]["parity"]["checks"]
    fp32, bf16 = checks["fp32"], checks["bf16"]
    assert fp32["passed"] and bf16["passed"]
    assert "float64" in fp32["compared"]  # on the CPU: fp32 against float64, said in the output
    assert 0 < fp32["rel_diff"] <= 1e-4 and 0.9999 <= fp32["grad_cosine"] <= 1 + 1e-9
    assert 0 < bf16["rel_diff"] <= 2e-2  # bf16 rounding shows, within the bound
    assert all(positive(x) for x in fp32["losses"] + bf16["losses"])


def test_fp16_losses_teacher_and_search(run):
    sections = run[0]["sections"]
    fp16 = sections["fp16"]["checks"]
    assert fp16["fp16 + GradScaler"]["passed"] and fp16["scaler state round trip"]["passed"]
    assert all(positive(x) for x in fp16["fp16 + GradScaler"]["losses"])
    assert fp16["fp16 + GradScaler"]["project_scaler_enabled"] is False  # and the output says so
    losses = sections["losses"]["checks"]
    assert list(losses) == LOSSES
    assert all(c["passed"] and positive(c["loss"]) for c in losses.values())
    teacher = sections["teacher"]["checks"]["teacher"]
    assert positive(teacher["images_per_s"]) and teacher["image_cosine"] >= 0.999 and teacher["text_cosine"] >= 0.999
    search = sections["search"]["checks"]["search"]
    assert search["passed"] and search["gpu_search"] is False and positive(search["queries_per_s"])


def test_a_failed_parity_exits_1_and_an_error_elsewhere_does_not_stop_the_run(monkeypatch, tmp_path, capsys):
    def broken(c):
        raise RuntimeError("no such kernel")

    def parity(c):
        c.say("fp32", "FAIL", passed=False)

    ran = []
    fakes = {name: (lambda c, n=name: ran.append(n)) for name in SECTIONS}
    monkeypatch.setattr(gpu_check, "SECTIONS", fakes | {"throughput": broken, "parity": parity})
    assert gpu_check.main(["--device", "cpu", "--small", "--out", str(tmp_path / "r.json")]) == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert ran == ["environment", "fp16", "losses", "teacher", "search"]  # every section after the error ran
    broken_section = result["sections"]["throughput"]
    assert broken_section["status"] == "error" and "no such kernel" in broken_section["error"]
    assert result["sections"]["parity"]["status"] == "fail" and result["parity_passed"] is False
    assert result["failed"] == ["parity: fp32", "throughput: RuntimeError: no such kernel"]
    assert "[throughput] ERROR RuntimeError: no such kernel" in capsys.readouterr().out
    fakes["parity"] = lambda c: None
    monkeypatch.setattr(gpu_check, "SECTIONS", fakes | {"teacher": broken})
    assert gpu_check.main(["--device", "cpu", "--small"]) == 0  # a failure outside parity: recorded, exit 0
