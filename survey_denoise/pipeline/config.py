"""A pipeline as configuration: the YAML schema and its checks before any work.

A config names the input (a mock design, real survey files, or an existing
store), the stages to run and where their outputs go::

    name: quickstart
    input:
      mock: {n: 600, design: uniform-halpha, survey: sdss, seed: 1}
    chunk: 100                       # galaxies per chunk
    stages:
      preprocess: {norm: l2}
      degrade: {noise: uniform, sigma: 0.04, seed: 2}
      train: {kind: vae, latent: 6, epochs: 20}
      denoise: {model: train}        # or a MODEL_DIR
      fit: {method: fast, stores: [preprocessed, degraded, denoised]}
      science: {cases: {original: preprocessed, noisy: degraded, vae: denoised}}
    outputs: {dir: runs/quickstart}
    report: {examples: 4, latent: true, reconstruction: true, scores: true, html: true}

Everything is checked by :func:`load_config` before a cluster starts:
unknown keys, missing files, stages whose inputs are not produced, a model
whose grid or normalisation does not match the data.  All problems are
reported together in one :class:`ConfigError`.  Relative paths are relative
to the directory the command runs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .params import SPECTRA, Preprocess
from .params import Strict as _Strict
from .registry import Stages


class ConfigError(ValueError):
    """A pipeline config cannot run; the message lists every problem found."""


# ---------------------------------------------------------------- input


class MockInput(_Strict):
    """A mock survey with known truth (``survey_denoise.mock``)."""

    n: int = Field(gt=0, description="galaxies")
    design: Literal["uniform-halpha", "mzr", "natural", "bgs"] = "natural"
    survey: Literal["sdss", "desi"] = "sdss"
    seed: int = 0
    z: tuple[float, float] | None = Field(None, description="redshift range (default: the survey's)")
    frame: Literal["observed", "rest"] = Field(
        "observed", description="rest: un-normalised rest-frame spectra on the grid, which "
                                "stand in for the preprocessed store (or, with "
                                "stages.preprocess, are only normalised by it)")

    @model_validator(mode="after")
    def _design(self) -> MockInput:
        from ..mock.designs import config_for

        config_for(self.design, self.survey, self.z)  # bgs needs desi and z <= 0.5: refused before any work
        return self


class DesiSelect(_Strict):
    """DESI targets to keep, as ``ingest desi``'s options (same names, same defaults: keep all)."""

    spectype: list[str] | None = Field(None, description="redrock SPECTYPEs, e.g. [GALAXY]")
    zwarn_max: int | None = Field(None, description="keep ZWARN <= this")
    z_min: float | None = None
    z_max: float | None = None
    target: list[str] | None = Field(None, description="main-survey targeting bits, any of "
                                                       "them, e.g. [BGS_BRIGHT, BGS_FAINT]")

    @model_validator(mode="after")
    def _valid(self) -> DesiSelect:
        self.selection()  # unknown bit names, z_min > z_max: refused before any work
        return self

    def selection(self):
        """The :class:`~survey_denoise.io.desi_select.TargetSelection`, or None if no cut is set."""
        from ..io.desi_select import TargetSelection

        return TargetSelection.from_options(**self.model_dump())


class FilesInput(_Strict):
    """Real survey files read by the reader registry."""

    paths: list[str] = Field(min_length=1, description="files or glob patterns")
    format: str | None = Field(None, description="sdss, desi...; found per file if not given")
    select: DesiSelect | None = Field(None, description="DESI target selection (format: desi); "
                                                        "default: every target")

    @model_validator(mode="after")
    def _select_needs_desi(self) -> FilesInput:
        if self.select is not None and self.format != "desi":
            raise ValueError("select applies to DESI coadds only; set format: desi")
        return self

    @field_validator("format")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        # The registry's own names, so a survey module added later is accepted here too.
        from ..io.registry import formats

        if value is not None and value not in formats():
            raise ValueError(f"unknown format '{value}' (known: {', '.join(formats())})")
        return value


class StoreInput(_Strict):
    """An existing spectra store (raw observed frame, or rest frame on the grid)."""

    path: Path
    frame: Literal["observed", "rest"] = "observed"
    truth: Path | None = Field(None, description="truth table (Parquet) of a mock store")


class Input(_Strict):
    """Exactly one of ``mock``, ``files`` or ``store``."""

    mock: MockInput | None = None
    files: FilesInput | None = None
    store: StoreInput | None = None

    @model_validator(mode="after")
    def _one(self) -> Input:
        given = [k for k in ("mock", "files", "store") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of mock, files, store (got {given or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("mock", "files", "store") if getattr(self, k) is not None)


class Outputs(_Strict):
    dir: Path = Field(description="run folder: stores, catalogues, model, run.json, run.log")
    keep: list[Literal[SPECTRA]] | None = Field(  # type: ignore[valid-type]
        None, description="spectra stores to write (default: all); a stage whose store is not "
                          "kept is fused into the stage that reads it, so each chunk goes from "
                          "the input to the catalogue in one task graph without intermediate "
                          "stores (the input store and the train stage's stores are always written)")


class Report(_Strict):
    """Products the report draws, made by the run when their stages are there."""

    examples: int = Field(4, ge=0, description=(
        "galaxies whose original, noisy and de-noised spectra and fitted line fluxes are "
        "saved (examples.npz); 0: none.  Needs stages.preprocess"))
    latent: bool = Field(True, description=(
        "latent coordinates of the test galaxies with their class (latent.parquet, "
        "Figure 6); needs stages.denoise"))
    reconstruction: bool = Field(True, description=(
        "reconstruction MSE of the model, and of a PCA of the same latent size trained on "
        "the same galaxies, on the test galaxies (reconstruction_mse.csv, Figure 7); "
        "needs stages.denoise"))
    scores: bool = Field(True, description=(
        "every fitted case scored against the original spectra on the same galaxies "
        "(table6.csv, Figure 9); needs stages.fit of preprocessed and another store"))
    test_galaxies: int = Field(2000, gt=0, description=(
        "at most this many test galaxies (the held-out ones when stages.train.holdout > 0) "
        "for latent coordinates and MSE, so the products stay small"))
    html: bool = Field(True, description="write report.html into the run folder at the end")


class PipelineConfig(_Strict):
    """One pipeline run."""

    name: str
    description: str = ""
    input: Input
    chunk: int = Field(1000, gt=0, description="galaxies per chunk")
    stages: Stages = Stages()
    outputs: Outputs
    report: Report = Report()
    sweep: dict[str, list] | None = Field(None, description=(
        "dotted config key -> values; one run per combination, each in outputs.dir/<values>, "
        "their report tables gathered (survey_denoise.pipeline.sweep)"))

    def stores(self) -> list[str]:
        """Spectra stores this run makes, in order."""
        source = {"mock": self.input.mock, "store": self.input.store}.get(self.input.kind)
        # A rest-frame input is the preprocessed store, unless a preprocess
        # stage is given: then that stage only normalises it.
        rest = getattr(source, "frame", "observed") == "rest"
        made = ["preprocessed" if rest and self.stages.preprocess is None else "raw"]
        for name, stage in (("preprocessed", self.stages.preprocess),
                            ("degraded", self.stages.degrade), ("denoised", self.stages.denoise)):
            if stage is not None and name not in made:
                made.append(name)
        return made

    def writes(self, store: str) -> bool:
        """Whether the spectra store ``store`` is written (else fused into what reads it)."""
        keep, train = self.outputs.keep, self.stages.train
        if keep is None or store == self.stores()[0] or store in keep:
            return True
        return train is not None and store in (train.noisy, train.clean)

    def fit_targets(self) -> list[str]:
        """Stores the fit stage measures."""
        if self.stages.fit is None:
            return []
        return list(self.stages.fit.stores) or [self.stores()[-1]]

    def has_truth(self) -> bool:
        return self.input.kind == "mock" or (self.input.kind == "store"
                                             and self.input.store.truth is not None)


# ---------------------------------------------------------------- checks


def set_dotted(data: dict, dotted: str, value) -> None:
    """Set ``data["a"]["b"]`` for ``dotted`` ``"a.b"``, making the mappings on the way."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def load_config(path: str | Path, *, out: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read and check a pipeline YAML; every problem is reported at once.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    out : str or Path, optional
        Replace ``outputs.dir``.
    overrides : list of str
        ``KEY=VALUE`` pairs applied before the check: ``KEY`` is a dotted
        config key (``input.mock.n``, ``stages.train.epochs``), ``VALUE`` is
        read as YAML (``10``, ``fast``, ``[pca, ae]``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ConfigError
        Listing unknown keys, bad values, missing files, stages whose input
        is not made, and a model that does not fit the data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pipeline config")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with name, input, stages, outputs")
    for pair in overrides:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. stages.train.epochs=10")
        try:
            set_dotted(raw, key.strip(), yaml.safe_load(value))
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML: {err}") from None
    if out is not None:
        raw.setdefault("outputs", {})
        raw["outputs"] = {**(raw["outputs"] or {}), "dir": str(out)}
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: " + "; ".join(_describe(e) for e in err.errors())) from None
    problems = check(config)
    if config.sweep:
        from .sweep import variants

        try:
            problems += [f"sweep {label}: {p}" for label, v in variants(config) for p in check(v)]
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(dict.fromkeys(problems)))
    return config


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if error["type"] == "missing":
        return f"missing key '{where}'"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where or 'config'}: {message}"


def check(config: PipelineConfig) -> list[str]:
    """Problems that stop ``config`` from running (empty if none)."""
    problems: list[str] = []
    inp, st = config.input, config.stages
    if inp.kind == "files":
        from glob import glob

        for pattern in inp.files.paths:
            if not glob(pattern):
                problems.append(f"input.files: no file matches '{pattern}'")
    if inp.kind == "store":
        if not inp.store.path.exists():
            problems.append(f"input.store.path: {inp.store.path} does not exist")
        if inp.store.truth is not None and not inp.store.truth.exists():
            problems.append(f"input.store.truth: {inp.store.truth} does not exist")
    made = config.stores()
    if (st.degrade or st.train or st.denoise or st.fit) and "preprocessed" not in made:
        problems.append("stages: the rest-frame stages need stages.preprocess "
                        "(or an input store with frame: rest)")
    for name in config.outputs.keep or []:
        if name not in made:
            problems.append(f"outputs.keep: '{name}' is not made by this pipeline "
                            f"(made: {', '.join(made)})")
    if st.train is not None:
        # Other inputs' sizes are known once read; the train stage checks them then.
        if inp.kind == "mock" and st.train.n_heldout(inp.mock.n) >= inp.mock.n:
            problems.append(f"stages.train.holdout: {st.train.n_heldout(inp.mock.n)} held out of "
                            f"{inp.mock.n} galaxies leaves none to train on")
        for role in ("noisy", "clean"):
            if getattr(st.train, role) not in made:
                problems.append(f"stages.train.{role}: '{getattr(st.train, role)}' is not made by "
                                f"this pipeline (made: {', '.join(made)})")
    if st.denoise is not None:
        if st.denoise.input not in made:
            problems.append(f"stages.denoise.input: '{st.denoise.input}' is not made by this pipeline")
        if st.denoise.model == "train":
            if st.train is None:
                problems.append("stages.denoise.model: 'train' needs a stages.train section")
        else:
            problems += check_model(Path(st.denoise.model), st.preprocess)
            if st.train is not None:
                # Nothing downstream would read the model it trains: hours spent for nothing.
                problems.append(f"stages.train: trains a model that nothing uses, since "
                                f"stages.denoise.model is {st.denoise.model}; remove stages.train "
                                "(--set stages.train=null) or de-noise with it (model: train)")
    for target in config.fit_targets():
        if target not in made:
            problems.append(f"stages.fit.stores: '{target}' is not made by this pipeline "
                            f"(made: {', '.join(made)})")
    if st.fit is not None and st.fit.galaxies == "heldout" and (st.train is None or st.train.holdout <= 0):
        problems.append("stages.fit.galaxies: 'heldout' needs stages.train with holdout > 0")
    if st.fit is not None and st.fit.templates is not None and not st.fit.templates.exists():
        problems.append(f"stages.fit.templates: {st.fit.templates} does not exist")
    if st.combine is not None:
        pair = ["denoised", st.denoise.input if st.denoise is not None else None]
        if st.denoise is None:
            problems.append("stages.combine needs a stages.denoise section")
        elif any(t not in config.fit_targets() for t in pair):
            problems.append(f"stages.combine: stages.fit.stores must hold both 'denoised' and the "
                            f"de-noiser's input '{pair[1]}' (they are: {', '.join(config.fit_targets())})")
    if st.science is not None:
        if st.fit is None:
            problems.append("stages.science needs a stages.fit section")
        for case, target in st.science.cases.items():
            if target == "combined":
                if st.combine is None:
                    problems.append(f"stages.science.cases.{case}: 'combined' needs a stages.combine "
                                    "section")
                continue
            if target not in config.fit_targets():
                problems.append(f"stages.science.cases.{case}: '{target}' is not fitted "
                                f"(stages.fit.stores: {', '.join(config.fit_targets())})")
        if not config.has_truth():
            problems.append("stages.science needs a truth table (a mock input, or input.store.truth)")
    return problems


def check_model(model_dir: Path, preprocess: Preprocess | None) -> list[str]:
    """Problems with a saved model for this pipeline's grid and normalisation.

    Reads only the model card (JSON), so the check is cheap and runs before
    TensorFlow is imported.
    """
    from ..grid import GRID
    from ..models.card import check, read_card
    from ..schema import SchemaError

    where = f"stages.denoise.model: {model_dir}"
    try:
        card = read_card(model_dir)
        check(card, {"grid": GRID.to_dict(),
                     "norm_convention": preprocess.norm if preprocess is not None else None},
              where=where)
    except (FileNotFoundError, SchemaError) as err:
        message = str(err)
        return [message if message.startswith(where) else f"stages.denoise.model: {message}"]
    return []
