"""benchmarks/gpu.sh in its CPU smoke mode: every figure present and finite, the precision check run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODES = ("float32", "tf32", "bfloat16")


def _numbers(node, path="result"):
    """Every number in a JSON tree with its path."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_field(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu",
                          "--out", str(out)], capture_output=True, text=True, env=env,
                         timeout=400, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())

    assert set(result["matmul_flops_per_s"]) == set(MODES)
    assert all(v > 0 for v in result["matmul_flops_per_s"].values())
    fps = result["model"]["flops_per_spectrum_inference"]
    # 825-800-800-700-600-(6, 6) encoder (flux and ivar in: 1650 wide when conditioned),
    # mirrored decoder with two 825-wide heads.
    width = 2 * 825 if result["model"]["conditioning"] == "ivar" else 825
    assert result["model"]["conditioning"] == "ivar"  # the default preset's
    assert fps == 2 * (width * 800 + 800 * 800 + 800 * 700 + 700 * 600 + 2 * 600 * 6
                       + 6 * 600 + 600 * 700 + 700 * 800 + 800 * 800 + 2 * 800 * 825)
    for mode in MODES:
        entry = result["modes"][mode]
        assert entry["train"] and entry["inference"]
        for row in entry["train"]:
            assert {"batch", "epochs_per_s", "spectra_per_s", "flops_per_s",
                    "fraction_of_float32_matmul", "fraction_of_mode_matmul"} <= set(row)
            assert row["spectra_per_s"] > 0 and row["epochs_per_s"] > 0
        assert {r["way"] for r in entry["inference"]} == {"library", "graph_on_device"}
        for row in entry["inference"]:
            assert row["spectra_per_s"] > 0 and row["fraction_of_float32_matmul"] > 0
    assert result["modes"]["bfloat16"]["policy"] == "mixed_bfloat16"
    assert result["modes"]["tf32"]["tf32"] is True and result["modes"]["float32"]["tf32"] is False

    agreement = result["agreement"]
    for mode in ("tf32", "bfloat16"):
        check = agreement[mode]
        assert isinstance(check["passed"], bool) and check["tolerance"] > 0
        assert check["passed"] == (check["max_abs_diff_over_scale"] <= check["tolerance"])
    # bfloat16 rounds for real on a CPU: the check compared different numbers.
    assert agreement["bfloat16"]["max_abs_diff_over_scale"] > 0
    assert isinstance(agreement["passed"], bool)

    bad = [(p, v) for p, v in _numbers(result) if not math.isfinite(v)]
    assert not bad, bad
    assert "agreement tf32" in res.stdout and "infer library" in res.stdout
