"""The mock population's priors: ``data/mock_priors.yaml``, validated on load.

The YAML cites the relation behind every number; this module only checks
its shape (types, ranges, fractions summing to one) so that a broken edit
fails at start-up with the name of the offending key, never mid-run.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CLASSES = ("emission", "absorption", "quiescent", "nlagn", "blagn")
"""Spectral classes of Scourfield et al. (2023) Table 1, in code order (``true_class``)."""

Pair = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassPrior(_Strict):
    fraction: float = Field(ge=0, le=1)
    logmass: Pair
    ms_offset: Pair
    age_gyr: Pair
    tau_share: Pair
    burst_prob: float = Field(ge=0, le=1)
    burst_frac: Pair
    burst_age_gyr: Pair


class Priors(_Strict):
    version: int
    cosmology: dict[str, float]
    redshift: dict[str, float]
    bgs: dict[str, str | float | Pair]
    classes: dict[str, ClassPrior]
    mass: dict[str, float]
    main_sequence: dict[str, float]
    fmr: dict[str, float]
    stellar_metallicity: dict[str, float]
    dust: dict[str, float | list[float]]
    sigma_star: dict[str, float]
    sigma_gas: dict[str, float | Pair]
    fibre_fraction: dict[str, float]
    halpha_sfr_log_c: float
    star_forming_lines: dict[str, float | list[float]]
    agn_lines: dict[str, Pair]
    retired_lines: dict[str, Pair]
    stochastic_sfr: dict[str, Pair]
    ionisation: dict[str, float]
    broad_lines: dict[str, float | Pair]

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: dict[str, ClassPrior]) -> dict[str, ClassPrior]:
        if tuple(v) != CLASSES:
            raise ValueError(f"classes must be {CLASSES} in this order, got {tuple(v)}")
        total = sum(c.fraction for c in v.values())
        if abs(total - 1) > 1e-3:
            raise ValueError(f"class fractions sum to {total:.4f}, not 1")
        return v


def read_priors(path: str | Path) -> Priors:
    """Read and validate a priors YAML.

    Raises
    ------
    ValueError
        Naming the file and the offending key.
    """
    path = Path(path)
    try:
        return Priors.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as err:
        raise ValueError(f"{path}: invalid mock priors: {err}") from None


@cache
def default_priors() -> Priors:
    """The priors shipped with the package (cached per process)."""
    ref = resources.files("survey_denoise") / "data" / "mock_priors.yaml"
    with resources.as_file(ref) as p:
        return read_priors(p)
