"""A run's plan: what each step reads, writes and where it runs, before any work.

:func:`plan` is pure and cheap: it reads the config (and at most the Zarr
metadata of an input store), starts nothing and writes nothing.  The
:class:`Plan` it returns is what ``survey-denoise run CONFIG --check``
prints and what :meth:`Plan.execute` carries out, step by step, on a
connected cluster (:class:`~survey_denoise.pipeline.runner.Runner`).

A step is *written* when its store goes to disk chunk by chunk (restartable),
or *fused* when its lazy output is passed straight to the step that reads
it (``outputs.keep``), so each chunk goes from the input to the catalogue in
one task graph.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import PipelineConfig
from .registry import STAGES

# Names of the run's own files, used by the plan and the runner alike.
TRUTH = "truth.parquet"
HELDOUT = "heldout.parquet"
MODEL = "model"
CHECKPOINT = "model.checkpoint"  # a training's latest saved state, until its model is saved


def store_file(name: str) -> str:
    return f"{name}.zarr"


def catalogue_stem(store: str) -> str:
    return f"catalogue-{store}"


@dataclass(frozen=True)
class Step:
    """One step of a run.

    Attributes
    ----------
    name : str
        Unique in the plan, e.g. ``degrade`` or ``fit-denoised``.
    stage : str
        What it runs: a registered stage (:data:`.registry.STAGES`) or one of
        ``mock``, ``ingest``, ``open`` (the input), ``products``, ``report``,
        ``search`` (``survey-denoise train --search``).
    inputs : tuple of str
        Stores it reads (by name), ``model``, or files outside the run.
    outputs : tuple of str
        What it writes, relative to the run folder.
    store : str or None
        The spectra store it makes (or, for a fit, the store it measures).
    written : bool
        False when its store is fused into the step that reads it.
    where : {"cluster", "task", "driver"}
        Mapped over the workers chunk by chunk, one task on a worker, or run
        by the driving process.
    chunks : int or None
        Galaxy chunks it maps over (None when not known before the run).
    """

    name: str
    stage: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    store: str | None = None
    written: bool = True
    where: str = "cluster"
    chunks: int | None = None


@dataclass(frozen=True)
class Search:
    """The random search of architectures before a train step (``survey-denoise train --search``).

    Attributes
    ----------
    trials : int
        Architectures tried, each a task on the cluster (the paper: 100).
    epochs : int
        Most epochs per trial (the paper: 25).
    """

    trials: int
    epochs: int = 25


@dataclass(frozen=True)
class Plan:
    """The steps of a run, in order; ``repr`` shows them as a table."""

    config: PipelineConfig
    steps: tuple[Step, ...]
    galaxies: int | None
    cluster: str = "local"
    recorded: bool = True
    """False for a stand-alone command's one-step plan (:meth:`single`): no run record."""
    search: Search | None = None
    """The random search of a ``train`` plan's ``search`` step, or None."""

    @classmethod
    def single(cls, stage: str, params, store_in: Path, out: Path, *, frame: str = "rest",
               extra: tuple[str, ...] = (), outputs: tuple[str, ...] = (),
               cluster: str = "local", search: Search | None = None) -> Plan:
        """The one-step plan of a stand-alone command (``survey-denoise degrade IN --out OUT``).

        Parameters
        ----------
        stage : str
            A registered stage with a kernel, or ``train`` (:data:`.registry.STAGES`).
        params : pydantic.BaseModel
            The stage's checked parameters.
        store_in : Path
            The store it reads (``frame``: ``observed`` or ``rest``); for ``train``
            the noise-added store.
        out : Path
            The store it writes; for ``train`` the model folder.
        extra : tuple of str
            Further inputs shown in the plan (a model folder; train's clean store).
        outputs : tuple of str
            Further files it writes beside ``out`` (a catalogue's Parquet and FITS).
        search : Search, optional
            ``train`` only: a random search first, on the cluster, as a step of its own
            writing ``search.csv`` into the model folder.
        """
        from .config import PipelineConfig

        galaxies, chunk = _store_shape(store_in)
        config = PipelineConfig.model_validate({
            "name": stage, "input": {"store": {"path": str(store_in), "frame": frame}},
            "chunk": chunk or 1, "stages": {stage: params},
            "outputs": {"dir": str(out.parent)}, "report": {"html": False}})
        spec = STAGES[stage]
        chunks = None if galaxies is None or not chunk else max(1, math.ceil(galaxies / chunk))
        inputs, made = (str(store_in), *extra), (out.name, *outputs)
        if spec.kernel is None:  # train: a folder, made by this process from the whole stores
            chunks, made = None, (f"{out.name}/", *outputs)
        steps = (Step(stage, stage, inputs, made, spec.makes, where=spec.where, chunks=chunks),)
        if search is not None:
            steps = (Step("search", "search", inputs, (f"{out.name}/search.csv",)), *steps)
        return cls(config, steps, galaxies, cluster, recorded=False, search=search)

    @property
    def folder(self) -> Path:
        return Path(self.config.outputs.dir)

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r} in the plan (steps: {', '.join(s.name for s in self.steps)})")

    def params(self, step: Step):
        """The step's parameters (its ``stages.<stage>`` section), or None."""
        return getattr(self.config.stages, step.stage, None) if step.stage in STAGES else None

    def __repr__(self) -> str:
        cfg = self.config
        size = "? galaxies" if self.galaxies is None else f"{self.galaxies} galaxies"
        head = (f"plan {cfg.name!r}: {size} in chunks of {cfg.chunk}, cluster {self.cluster}, "
                f"outputs in {self.folder}")
        rows = [("step", "where", "reads", "writes", "mode", "chunks")]
        for s in self.steps:
            mode = "written" if s.written else "fused"
            if not s.outputs:
                mode = "-"
            rows.append((s.name, s.where, ", ".join(s.inputs) or "-",
                         ", ".join(s.outputs) or "-", mode,
                         "-" if s.chunks is None else str(s.chunks)))
        # Long lists of inputs and outputs wrap inside their column.
        cells = [[textwrap.wrap(c, 34, break_on_hyphens=False) or [""] for c in r] for r in rows]
        widths = [max(len(line) for r in cells for line in r[i]) for i in range(len(rows[0]))]
        lines = [head]
        for r in cells:
            for k in range(max(len(c) for c in r)):
                parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(r, widths, strict=True)]
                lines.append(("  " + "  ".join(parts)).rstrip())
        return "\n".join(lines)

    __str__ = __repr__

    def execute(self, client, *, resume: bool = False, progress: bool = True,
                echo: Callable[[str], None] = print, overwrite: bool = False):
        """Carry the plan out on ``client``; see :class:`~.runner.Runner`.

        A one-step plan (:meth:`single`) is carried out by
        :func:`~.single.run_step` instead: the same kernel and store writer
        (or, for ``train``, the same :func:`~.stages.train`), without a run
        folder or record; ``overwrite`` replaces its store or model folder.

        Returns
        -------
        RunSummary, the one step's WriteReport, or the trained model
        """
        from .runner import Runner
        from .single import run_step

        if not self.recorded:
            return run_step(self, client, resume=resume, overwrite=overwrite, progress=progress,
                            echo=echo)
        return Runner(self, client, resume=resume, progress=progress, echo=echo).run()


def plan(config: PipelineConfig, cluster: str = "local") -> Plan:
    """The plan of ``config``: every step, what it reads and writes, where it runs.

    Parameters
    ----------
    config : PipelineConfig
        A checked config (:func:`~survey_denoise.pipeline.config.load_config`).
    cluster : str
        Where it will run (recorded and shown only).
    """
    st, inp = config.stages, config.input
    galaxies = _galaxies(config)
    chunks = None if galaxies is None else max(1, math.ceil(galaxies / config.chunk))
    steps: list[Step] = []
    first = config.stores()[0]
    if inp.kind == "mock":
        steps.append(Step("mock", "mock", (), (store_file(first), TRUTH), first, chunks=chunks))
    elif inp.kind == "files":
        steps.append(Step("ingest", "ingest", tuple(inp.files.paths), (store_file(first),), first,
                          chunks=chunks))
    else:
        steps.append(Step("open", "open", (str(inp.store.path),), (), first, where="driver",
                          chunks=chunks))
    for name, spec in STAGES.items():
        cfg = getattr(st, name)
        if cfg is None or spec.makes is None and name != "train":
            continue
        if name == "train":
            outs = (MODEL + "/",) + ((HELDOUT,) if cfg.holdout > 0 else ())
            steps.append(Step("train", "train", tuple(spec.reads(cfg)), outs, where="driver"))
            continue
        if spec.makes in config.stores()[:1]:
            continue  # a rest-frame input is the preprocessed store already
        reads = tuple(spec.reads(cfg))
        if name == "denoise":
            reads += (MODEL if cfg.model == "train" else cfg.model,)
        written = config.writes(spec.makes)
        steps.append(Step(name, name, reads, (store_file(spec.makes),), spec.makes,
                          written=written, chunks=chunks))
    fit_chunks = chunks
    if st.fit is not None and st.fit.galaxies == "heldout" and galaxies is not None and st.train is not None:
        fit_chunks = max(1, math.ceil(min(st.train.n_heldout(galaxies), galaxies) / config.chunk))
    for target in config.fit_targets():
        stem = catalogue_stem(target)
        steps.append(Step(f"fit-{target}", "fit", (target,),
                          (f"{stem}.zarr", f"{stem}.parquet", f"{stem}.fits"), target, chunks=fit_chunks))
    if st.combine is not None:
        stem = catalogue_stem("combined")
        steps.append(Step("combine", "combine", (catalogue_stem("denoised"), catalogue_stem(st.denoise.input)),
                          (f"{stem}.zarr", f"{stem}.parquet", f"{stem}.fits"), "combined", chunks=fit_chunks))
    made = _products(config)
    if made:
        steps.append(Step("products", "products", _product_inputs(config), tuple(made), where="task"))
    if st.science is not None:
        steps.append(Step("science", "science", tuple(catalogue_stem(t) for t in st.science.cases.values()),
                          ("science/",), where=STAGES["science"].where))
    if config.report.html:
        steps.append(Step("report", "report", ("run.json",), ("report.html",), where="driver"))
    return Plan(config, tuple(steps), galaxies, cluster)


def _galaxies(config: PipelineConfig) -> int | None:
    if config.input.kind == "mock":
        return config.input.mock.n
    if config.input.kind == "store":
        try:  # the Zarr metadata only: cheap, and a plan must not fail on it
            import zarr

            group = zarr.open_group(str(config.input.store.path), mode="r")
            return int(group["galaxy"].shape[0])
        except Exception:  # noqa: BLE001 - an unreadable store is reported by the run itself
            return None
    return None  # files: known once they are read


def _store_shape(path: Path) -> tuple[int | None, int | None]:
    """Galaxies and galaxy chunk size of a store, from its Zarr metadata only."""
    try:
        import zarr

        group = zarr.open_group(str(path), mode="r")
        array = group["flux"] if "flux" in group else group["galaxy"]
        return int(array.shape[0]), int(array.chunks[0])
    except Exception:  # noqa: BLE001 - the command opens the store and names the problem
        return None, None


def _products(config: PipelineConfig) -> list[str]:
    """The report's small products this config makes (see ``report:`` in the config)."""
    rep, st = config.report, config.stages
    made = []
    if rep.examples and "preprocessed" in config.stores():
        made.append("examples.npz")
    if st.denoise is not None and rep.latent:
        made.append("latent.parquet")
    if st.denoise is not None and rep.reconstruction:
        made.append("reconstruction_mse.csv")
    if rep.scores and "preprocessed" in config.fit_targets() and len(config.fit_targets()) > 1:
        from .products import CASES

        made += ["table6.csv", "table6_scores.csv"]
        if config.has_truth():  # truth-based per-bin scores and error coverage
            made += ["table6_bins.csv", "table6_coverage.csv"]
        made += [f"figure9-{CASES[t]}.png" for t in config.fit_targets() if t != "preprocessed"]
        if st.combine is not None:
            made.append(f"figure9-{CASES['combined']}.png")
    return made


def _product_inputs(config: PipelineConfig) -> tuple[str, ...]:
    reads = [s for s in config.stores() if s != "raw"]
    if config.stages.denoise is not None:
        reads.append(MODEL if config.stages.denoise.model == "train" else config.stages.denoise.model)
    return tuple(reads + ["catalogues"] if config.fit_targets() else reads)
