"""benchmarks/continuum_basis.py --real-only: where the fast fitter and pPXF part on real spectra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "continuum_basis.py"


@pytest.mark.slow
def test_real_spectra_minus_ppxf_stars_give_ppxf_s_balmer_lines(tmp_path):
    out = tmp_path / "real.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--real-only", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["meta"]["command"].endswith("--real-only") and set(r) == {"meta", "real_spectra"}
    rows = {row["galaxy"]: row for row in r["real_spectra"]}
    assert len(rows) == 4
    # The two SDSS galaxies inside pPXF (NGC3073, NGC3522): with pPXF's own stellar
    # model subtracted, a fit with lines and polynomials alone is a test of the line
    # model and of the subtraction's units; a wrong scale or pixel offset leaves
    # stellar absorption (or doubles it) under the Balmer lines.
    for galaxy in ("0945-52652-0470", "2488-54149-0001"):
        lines = rows[galaxy]["lines"]
        for k in ("halpha", "hbeta", "hgamma"):
            assert lines[k]["lines_on_ppxf_residual_over_ppxf"] == pytest.approx(1.0, abs=0.06), (galaxy, k)
        # pPXF's bright lines are measured there, and every variant reports each line.
        assert lines["halpha"]["ppxf"] > 10 * lines["halpha"]["ppxf_err"]
        assert all(f"{name}_over_ppxf" in lines["hbeta"] for name in
                   ("fast", "fast_two_pass", "fast_pca20_two_pass", "fast_pca30_two_pass",
                    "fast_two_pass_weights_prior10", "shipped_on_ppxf_residual"))
