"""A stand-alone command's one-step plan, carried out.

``survey-denoise preprocess|degrade|denoise|fit IN --out OUT`` each build a
:meth:`Plan.single <survey_denoise.pipeline.plan.Plan.single>` and execute
it here: the step's inputs are resolved as the runner resolves them (the
store, then paths such as a model folder), the stage's registered kernel
builds the lazy output, and :func:`~survey_denoise.io.store.write_store`
writes it chunk by chunk, the same writer a run uses, so ``--resume``
finishes only the chunks without a marker and ``--overwrite`` swaps in the
new store when complete.  A command writes no run folder and no
``run.json``: its output is the one store (and, for a fit, the catalogue's
Parquet and FITS beside it).
"""

from __future__ import annotations

from pathlib import Path

from .registry import STAGES


def run_step(plan, client, *, resume: bool = False, overwrite: bool = False, progress: bool = True):
    """Carry out the single step of ``plan`` on ``client``.

    Parameters
    ----------
    plan : Plan
        A one-step plan (:meth:`~survey_denoise.pipeline.plan.Plan.single`).
    client : distributed.Client
        Where the chunks are computed.
    resume, overwrite : bool
        Finish an interrupted write of the same store; replace an existing one.
    progress : bool
        A progress bar over the chunks.

    Returns
    -------
    WriteReport
        Chunks planned and written, seconds.
    """
    from ..io.store import write_store

    (step,) = plan.steps
    ds = build(plan)
    out = plan.folder / step.outputs[0]
    catalogue = step.stage == "fit"
    label = f"fit ({plan.params(step).method})" if catalogue else step.stage
    report = write_store(ds, out, resume=resume, overwrite=overwrite, client=client,
                         progress=progress, label=label, spectra=not catalogue)
    if catalogue:
        from ..io.outputs import replacing
        from ..io.store import open_store
        from .stages import write_catalogue

        with replacing(*(plan.folder / name for name in step.outputs[1:])) as staged:
            write_catalogue(open_store(out, spectra=False), staged[0])
    return report


def build(plan):
    """The lazy output of the single step of ``plan``: its kernel on its resolved inputs.

    Raises
    ------
    ValueError
        From the kernel, when the parameters do not fit the data.
    """
    from ..io.store import open_store

    (step,) = plan.steps
    source = plan.config.input.store
    inputs = [open_store(source.path, frame=source.frame), *(Path(name) for name in step.inputs[1:])]
    return STAGES[step.stage].kernel(*inputs, plan.params(step))
