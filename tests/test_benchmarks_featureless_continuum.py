"""benchmarks/featureless_continuum.py: what a power-law continuum does to the fitters' Balmer lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "featureless_continuum.py"


@pytest.mark.slow
def test_the_prior_reads_a_power_law_as_stars_and_its_test_refits_those_spectra(tmp_path):
    out = tmp_path / "fc.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--n", "400", "--n-ppxf", "0", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["meta"]["command"].endswith("--n 400 --n-ppxf 0") and len(r["real"]) == 4
    quiet, strong = r["noise_free"]["f0"], r["noise_free"]["f0.25"]
    # Without a power law the prior changes the faint Balmer lines by little; with a quarter
    # of the light in one it reads them high, the fit without it does not, and the test
    # takes the prior away where the data reject it.
    for key in ("halpha", "hbeta"):
        assert abs(quiet["prior"][key]["faint"] - quiet["no_prior"][key]["faint"]) < 0.05
        assert strong["prior"][key]["faint"] > strong["no_prior"][key]["faint"] + 0.1, key
        assert abs(strong["prior_tested"][key]["faint"]) < 0.5 * strong["prior"][key]["faint"], key
    refitted = [r["noisy"][f"f{f:g}"]["refitted"] for f in r["meta"]["fractions"]]
    assert refitted == sorted(refitted) and refitted[0] < 0.1 < refitted[-1]
    assert r["noisy"]["f0.25"]["prior"]["halpha"]["all"] > r["noisy"]["f0.25"]["prior_tested"]["halpha"]["all"]
