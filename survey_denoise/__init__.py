"""survey_denoise: de-noise survey-scale galaxy spectra and measure their lines.

The public API.  The core (grid, schema, flags, stores) is imported eagerly;
everything else on first use, so ``import survey_denoise`` stays quick and
never imports TensorFlow or pPXF until a model or a fit needs them.

Examples
--------
>>> import survey_denoise as sd
>>> raw = sd.open_store("raw.zarr")                          # doctest: +SKIP
>>> noisy = sd.degrade(sd.preprocess(raw), sd.UniformNoise(0.04), seed=2)  # doctest: +SKIP
>>> sd.write_store(noisy, "noisy.zarr")                      # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# "X as X" marks an explicit re-export.
from .flags import DROP as DROP
from .flags import Flag as Flag
from .grid import GRID as GRID
from .grid import Grid as Grid
from .io.store import open_store as open_store
from .io.store import write_store as write_store
from .schema import SchemaError as SchemaError
from .schema import make_spectra as make_spectra
from .schema import validate as validate

# public name -> module that defines it (imported on first access)
_LAZY = {
    # readers
    "read_sdss": "survey_denoise.io.sdss",
    "read_desi": "survey_denoise.io.desi",
    "find_coadds": "survey_denoise.io.desi",
    "TargetSelection": "survey_denoise.io.desi_select",
    "ingest": "survey_denoise.io.ingest",
    "Skipped": "survey_denoise.io.ingest",
    "read": "survey_denoise.io.registry",
    "identify": "survey_denoise.io.registry",
    "register": "survey_denoise.io.registry",
    "ReadError": "survey_denoise.io.registry",
    # stages
    "preprocess": "survey_denoise.preprocess",
    "normalise": "survey_denoise.preprocess",
    "to_rest_frame": "survey_denoise.preprocess",
    "degrade": "survey_denoise.noise",
    "UniformNoise": "survey_denoise.noise",
    "DesiNoise": "survey_denoise.noise",
    "NoiseRecord": "survey_denoise.noise",
    "denoise": "survey_denoise.inference",
    "fit_lines": "survey_denoise.fitting",
    "combine_catalogues": "survey_denoise.fitting.combine",
    "combine_lines": "survey_denoise.fitting.combine",
    "noise_gain": "survey_denoise.fitting.combine",
    "write_catalogue": "survey_denoise.fitting.catalogue",
    "read_catalogue": "survey_denoise.fitting.catalogue",
    # mock survey
    "MockConfig": "survey_denoise.mock",
    "generate": "survey_denoise.mock",
    "select": "survey_denoise.mock",
    "truth_table": "survey_denoise.mock",
    "read_truth": "survey_denoise.mock",
    "write_truth": "survey_denoise.mock",
    # models
    "PCADenoiser": "survey_denoise.models",
    "AEDenoiser": "survey_denoise.models",
    "VAEDenoiser": "survey_denoise.models",
    "load_model": "survey_denoise.models",
    # science
    "score_catalogues": "survey_denoise.science.metrics",
    "Scores": "survey_denoise.science.metrics",
    "scatter_dex": "survey_denoise.science.metrics",
    "painted_rate": "survey_denoise.science.metrics",
    "spurious_lines": "survey_denoise.science.metrics",
    "held_flux": "survey_denoise.science.content",
    "coverage": "survey_denoise.science.calibration",
    "line_coverage": "survey_denoise.science.calibration",
    "pixel_coverage": "survey_denoise.science.calibration",
    "table6": "survey_denoise.science.metrics",
    "metallicity": "survey_denoise.science.metallicity",
    "OHFlag": "survey_denoise.science.metallicity",
    "ReferenceMZR": "survey_denoise.science.mzr",
    "SCHOLTE24": "survey_denoise.science.mzr",
    "binned_mzr": "survey_denoise.science.mzr",
    "mzr_test": "survey_denoise.science.mzr_test",
    "MZRTest": "survey_denoise.science.mzr_test",
    "oh_coverage": "survey_denoise.science.mzr_test",
    "build_report": "survey_denoise.report",
    # running
    "connect": "survey_denoise.cluster",
    "load_config": "survey_denoise.pipeline",
    "run_pipeline": "survey_denoise.pipeline",
    "PipelineConfig": "survey_denoise.pipeline",
    "ConfigError": "survey_denoise.pipeline",
    "RunSummary": "survey_denoise.pipeline",
    "RunRecord": "survey_denoise.pipeline.record",
}

__all__ = sorted(["DROP", "Flag", "GRID", "Grid", "SchemaError", "__version__", "make_spectra",
                  "open_store", "validate", "write_store", *_LAZY])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'survey_denoise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
