"""benchmarks/preprocess.py runs against the current kernels (it once fell behind their signature)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "preprocess.py"


def test_kernel_rates_are_measured_against_both_loops(tmp_path):
    out = tmp_path / "pre.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--n", "0", "--batch", "60", "--repeat", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    kernel = json.loads(out.read_text())["kernel"]
    assert kernel["n"] == 60 and set(kernel["spectra_per_s_per_core"]) == {"kernel", "naive_interp",
                                                                            "naive_conserving"}
    assert all(v > 0 for v in kernel["kernel_speedup_vs"].values())
