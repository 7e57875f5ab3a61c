"""A physically grounded mock survey: SDSS-like spectra with known truth.

Modules, one idea each (the stellar populations are
:mod:`survey_denoise.ssp`, shared with the fitters): :mod:`.priors` (the versioned priors YAML), :mod:`.population` (galaxy
properties), :mod:`.dust`, :mod:`.nebular` (emission lines), :mod:`.synth`
(batched numerical kernels), :mod:`.instrument` (survey sampling and noise),
:mod:`.designs` (sampling designs), :mod:`.photometry` (magnitudes for
magnitude-limited designs), :mod:`.generate` (lazy datasets),
:mod:`.truth` (truth tables), :mod:`.figures` (BPT and MZR figures).
"""

from __future__ import annotations

from .designs import DESIGNS, select
from .generate import MockConfig, generate, synthesize
from .truth import read_truth, truth_table, write_truth

__all__ = ["DESIGNS", "MockConfig", "generate", "read_truth", "select", "synthesize",
           "truth_table", "write_truth"]
