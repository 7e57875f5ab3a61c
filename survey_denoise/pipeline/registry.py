"""The stage registry: every stage declared once.

A :class:`StageSpec` names a stage's parameter model (:mod:`.params`), the
store it makes, the stores it reads, where it runs and the kernel it maps
(:mod:`.stages`).  From this one table come

- the ``stages:`` section of a pipeline config (:data:`Stages`, in run order),
- the options of the stand-alone sub-commands (:mod:`survey_denoise.cli.params`),
- the steps of a run plan (:func:`survey_denoise.pipeline.plan.plan`).

Adding a stage is one entry here, its parameters in :mod:`.params` and its
kernel in :mod:`.stages`.  Adding a noise model, a de-noiser kind or a fit
method needs no entry: those have registries of their own
(:data:`survey_denoise.noise.NOISE_MODELS`, :data:`survey_denoise.models.KINDS`,
:data:`survey_denoise.fitting.METHODS`) that the parameter models read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, create_model

from . import params, stages


@dataclass(frozen=True)
class StageSpec:
    """One stage's declaration.

    Attributes
    ----------
    name : str
        Its key under ``stages:`` and its sub-command.
    params : type[pydantic.BaseModel]
        Its parameters: names, defaults, units (in the descriptions), checks.
    makes : str or None
        The spectra store it makes (:data:`.params.SPECTRA`), or None.
    reads : callable
        ``reads(params) -> list of store names`` it reads.
    where : {"cluster", "task", "driver"}
        ``cluster``: mapped chunk by chunk over the workers; ``task``: one
        task on a worker, reading whole tables (the science step);
        ``driver``: runs in the process that drives the run (training).
    kernel : callable or None
        ``kernel(*inputs, params) -> Dataset`` (lazy); None for stages the
        runner carries out itself (training, science).  The combine kernel's
        inputs are catalogues, not spectra stores.
    summary : str
        One line for ``--help`` and the plan.
    """

    name: str
    params: type[BaseModel]
    makes: str | None
    reads: Callable[[BaseModel], list[str]]
    where: Literal["cluster", "task", "driver"]
    kernel: Callable | None
    summary: str


STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (
    StageSpec("preprocess", params.Preprocess, "preprocessed", lambda p: ["raw"], "cluster",
              stages.preprocess, "Shift to the rest frame, resample onto the grid, normalise."),
    StageSpec("degrade", params.Degrade, "degraded", lambda p: ["preprocessed"], "cluster",
              stages.degrade, "Add uniform or DESI-like noise (optionally moved to a new z)."),
    StageSpec("train", params.Train, None, lambda p: [p.noisy, p.clean], "driver",
              None, "Train a PCA, AE or VAE de-noiser."),
    StageSpec("denoise", params.Denoise, "denoised", lambda p: [p.input], "cluster",
              stages.denoise, "De-noise a store with a saved model."),
    StageSpec("fit", params.Fit, None, lambda p: list(p.stores), "cluster",
              stages.fit, "Measure emission lines into a catalogue (pPXF or fast)."),
    StageSpec("combine", params.Combine, None, lambda p: [], "cluster", stages.combine,
              "Combine each de-noised line flux with its input's, by the model's noise gains."),
    StageSpec("science", params.Science, None, lambda p: [], "task",
              None, "The mass-metallicity test of the fitted cases against the truth."),
)}
"""Every stage, in the order a run carries them out."""

Stages: type[BaseModel] = create_model(
    "Stages", __base__=params.Strict, __doc__="Stages run in this order; leave one out to skip it.",
    **{name: (spec.params | None, None) for name, spec in STAGES.items()})
"""The ``stages:`` section of a pipeline config, made from :data:`STAGES`."""


def spec(name: str) -> StageSpec:
    """The declaration of stage ``name``.

    Raises
    ------
    KeyError
        Naming the known stages.
    """
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r} (known: {', '.join(STAGES)})") from None
