"""Run a configured pipeline: stages in order, every output restartable.

Each stage's output is computed chunk by chunk on the cluster and written
with :func:`survey_denoise.io.store.write_store` (Zarr region writes, one
completion marker per chunk); the next stage reads it back from disk.  A run
killed at any point and started again with ``resume=True`` skips complete
stores, writes only the chunks without a marker, and ends with the same
output as an uninterrupted run: every random draw is keyed by galaxy id, and
a region write of a chunk is idempotent, so a chunk written twice (a worker
lost mid-write, a driver killed after the write but before its marker) is
simply the same bytes again.  ``run.json`` counts the chunks each
invocation wrote.  A store is resumed only if it was planned with the same
parameters (every provenance step, so also those of an input store that was
remade meanwhile); tables, catalogue files, the model and the science folder
are written under staging names and renamed into place when complete
(:mod:`survey_denoise.io.outputs`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from ..flags import Flag
from ..io.outputs import replacing
from ..io.store import open_store, write_store
from . import products, stages
from .config import ConfigError, PipelineConfig
from .folder import check_folder, clear_run
from .plan import CHECKPOINT, HELDOUT, MODEL, TRUTH, Plan, Step, catalogue_stem, store_file
from .plan import plan as make_plan
from .registry import STAGES
from .runlog import RunLog, RunSummary, StageRecord

FAILED = Flag.DENOISE_FAILED | Flag.FIT_FAILED


class Runner:
    """One invocation of a plan on a connected client: its thin executor.

    Each step of the :class:`~.plan.Plan` is carried out in order by the
    method its ``stage`` names; the stages' own work is their registered
    kernels' (:data:`~.registry.STAGES`).

    Parameters
    ----------
    plan : Plan or PipelineConfig
        What to run (a config is planned first).
    client : distributed.Client
        Where chunks are computed.
    resume : bool
        Finish an earlier run in the same folder.
    progress : bool
        A progress bar per stage.
    echo : callable
        Where one-line messages go.
    cluster : str
        Recorded in the run log (default: the plan's).
    """

    def __init__(self, plan: Plan | PipelineConfig, client, *, resume: bool = False,
                 progress: bool = True, echo: Callable[[str], None] = print,
                 cluster: str | None = None) -> None:
        self.plan = plan if isinstance(plan, Plan) else make_plan(plan, cluster or "local")
        config = self.plan.config
        self.config, self.client, self.resume = config, client, resume
        self.progress, self.echo = progress, echo
        self.folder = Path(config.outputs.dir)
        mine = check_folder(config, resume)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.folder, mine, cluster=cluster or self.plan.cluster, resume=resume)
        self.log.current["plan"] = [asdict(step) for step in self.plan.steps]
        self.log.save()
        self.summary = RunSummary(self.folder)
        self.fused: set[str] = set()  # stores passed on lazily, never written
        self.stores: dict[str, xr.Dataset] = {}
        self.catalogues: dict[str, xr.Dataset] = {}
        self.catalogue_stores: dict[str, Path] = {}

    # ------------------------------------------------------------ plumbing

    def path(self, name: str) -> Path:
        return self.folder / name

    def _write(self, name: str, ds: xr.Dataset, filename: str, *, spectra: bool = True) -> xr.Dataset:
        """Write ``ds`` restartably; return it re-opened lazily from disk."""
        t0 = time.perf_counter()
        path = self.path(filename)
        ds = ds.chunk({"galaxy": self.config.chunk}) if _needs_rechunk(ds, self.config.chunk) else ds
        report = write_store(ds, path, resume=path.exists(), client=self.client,
                             progress=self.progress, label=name, spectra=spectra)
        out = open_store(path, spectra=spectra)
        if spectra:
            self.log.output("store", filename, name, name=filename.removesuffix(".zarr"))
        self._record(name, StageRecord(filename, report.n_chunks, sorted(report.written),
                                       report.skipped, time.perf_counter() - t0,
                                       int(out.sizes["galaxy"])))
        return out

    def _record(self, name: str, record: StageRecord) -> None:
        self.summary.stages[name] = record
        self.log.stage(name, record)

    def _gathered(self, stores: dict[str, xr.Dataset], pos: np.ndarray) -> dict:
        """The galaxies at ``pos`` of every store, computed together: futures on the cluster."""
        if self.client is None:
            return products.subsets(stores, pos)
        lazy = products.picked(stores, pos)
        return dict(zip(lazy, self.client.compute(list(lazy.values())), strict=True))

    # ------------------------------------------------------------ stages

    def run(self) -> RunSummary:
        t0 = time.perf_counter()
        try:
            for step in self.plan.steps:
                if step.stage != "report":
                    getattr(self, f"_do_{step.stage}")(step)
            self._count(self.stores, self.catalogues)
        except BaseException as err:
            self.log.info(f"failed: {type(err).__name__}: {err}")
            self.log.finish("failed")
            raise
        self.summary.seconds = time.perf_counter() - t0
        self.log.finish("complete", self.summary.as_dict())
        if any(step.stage == "report" for step in self.plan.steps):
            self._report()  # last: it reads the finished run record
        return self.summary

    def _report(self) -> None:
        """``report.html`` of the finished run, recorded as its last output."""
        from ..report import build_report

        path = build_report(self.folder)
        self.log.output("report", path.name, "report", name="report")
        self.echo(f"report: {path}")

    # ------------------------------------------------------------ steps

    def _do_open(self, step: Step) -> None:
        src = self.config.input.store
        self.stores[step.store] = open_store(src.path, frame=src.frame)

    def _do_mock(self, step: Step) -> None:
        ds = stages.mock(self.config.input.mock, self.config.chunk)
        self.stores[step.store] = self._write("mock", ds, store_file(step.store))
        self._truth(self.path(store_file(step.store)))

    def _do_ingest(self, step: Step) -> None:
        ds, skipped = stages.ingest(self.config, self.client)
        for item in skipped:
            self.log.info(f"ingest skipped: {item}")
        self.summary.skipped = list(skipped)
        self.stores[step.store] = self._write("ingest", ds, store_file(step.store))

    def _do_spectra(self, step: Step) -> None:
        """A registered stage that maps stores to a new store: its kernel, written or fused."""
        spec = STAGES[step.stage]
        inputs = [self._resolve(name) for name in step.inputs]
        ds = spec.kernel(*inputs, self.plan.params(step))
        self.stores[step.store] = self._stage(step.name, step.store, ds)

    _do_preprocess = _do_degrade = _do_denoise = _do_spectra

    def _resolve(self, name: str):
        """A step input: a store made earlier, the trained model, or a path."""
        if name in self.stores:
            return self.stores[name]
        return self._do_model() if name == MODEL else Path(name)

    def _stage(self, name: str, key: str, ds: xr.Dataset) -> xr.Dataset:
        """Write the stage's store, or (not kept) pass its lazy output on, fused into the next."""
        if self.config.writes(key):
            return self._write(name, ds, f"{key}.zarr")
        self.fused.add(key)
        self._record(name, StageRecord("(fused: not written)", galaxies=int(ds.sizes["galaxy"]),
                                       notes={"fused": True}))
        return ds

    def _truth(self, store: Path) -> None:
        """The mock's truth table, written on the cluster from the store."""
        path = self.path(TRUTH)
        if not path.exists():
            with replacing(path) as (tmp,):  # a killed run never leaves half a table
                stages.in_one_task(self.client, stages.truth_file, store, tmp)
        self.log.output("table", path.name, "mock", name="truth")

    def _table(self, frame: pd.DataFrame, name: str, step: str) -> None:
        with replacing(self.path(name)) as (tmp,):
            if name.endswith(".csv"):
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)
        self.log.output("table", name, step, name=name.split(".")[0])

    def _do_train(self, step: Step) -> None:
        self._do_model()

    def _do_model(self) -> Path:
        """The trained model's folder, training it first unless a complete one is there."""
        st = self.config.stages
        out = self.path(MODEL)
        if "train" in self.summary.stages:
            return out
        t0 = time.perf_counter()
        if not (out / ".complete").exists():
            # A half-saved model from a killed run is saved again; its training goes
            # on from the last epoch the checkpoint holds.
            shutil.rmtree(out, ignore_errors=True)
            noisy, clean = self.stores[st.train.noisy], self.stores[st.train.clean]
            if st.train.holdout > 0:
                held = stages.holdout(int(noisy.sizes["galaxy"]), st.train)
                self._table(pd.DataFrame({"galaxy": noisy["galaxy"].values[held]}), HELDOUT, "train")
                keep = np.setdiff1d(np.arange(noisy.sizes["galaxy"]), held)
                noisy, clean = noisy.isel(galaxy=keep), clean.isel(galaxy=keep)
            # The one stage without chunks to count: its epochs go to run.log and a bar.
            with self.log.capturing("survey_denoise.models"):
                model = stages.train(noisy, clean, st.train, out, verbose=int(self.progress),
                                     checkpoint=self.path(CHECKPOINT))
            if note := model.cap_note():
                self.echo(f"train: {note} (stages.train.epochs)")
            (out / ".complete").touch()
            shutil.rmtree(self.path(CHECKPOINT), ignore_errors=True)
            written = [0]
        else:
            written = []
        self.log.output("model", "model", "train", name="model")
        if self.path(HELDOUT).exists():
            self.log.output("table", HELDOUT, "train", name="heldout")
        self._record("train", StageRecord("model", 1, written, 1 - len(written),
                                          time.perf_counter() - t0))
        return out

    def _do_fit(self, step: Step) -> None:
        target, st = step.store, self.config.stages
        spectra = self.stores[target]
        if st.fit.galaxies == "heldout":
            # the same draw as the train stage's (stages.holdout): the galaxies it never saw
            spectra = spectra.isel(galaxy=stages.holdout(int(spectra.sizes["galaxy"]), st.train))
        cat = self._write(step.name, stages.fit(spectra, st.fit), step.outputs[0], spectra=False)
        self.catalogue_stores[target] = self.path(step.outputs[0])
        self._catalogue_files(self.catalogue_stores[target], catalogue_stem(target))
        case = products.CASES[target]
        for path, label in zip(step.outputs, ("-zarr", "", "-fits"), strict=True):
            self.log.output("catalogue", path, step.name, name=case + label)
        self.catalogues[target] = cat

    def _do_combine(self, step: Step) -> None:
        """The combined catalogue, from the two written catalogue stores, chunk by chunk."""
        den, noisy = (open_store(self.catalogue_stores[t], spectra=False)
                      for t in ("denoised", self.config.stages.denoise.input))
        cat = self._write(step.name, stages.combine(den, noisy, self.config.stages.combine),
                          step.outputs[0], spectra=False)
        self.catalogue_stores["combined"] = self.path(step.outputs[0])
        self._catalogue_files(self.catalogue_stores["combined"], catalogue_stem("combined"))
        for path, label in zip(step.outputs, ("-zarr", "", "-fits"), strict=True):
            self.log.output("catalogue", path, step.name, name="combined" + label)
        self.catalogues["combined"] = cat

    def _catalogue_files(self, store: Path, stem: str) -> None:
        """Parquet + FITS of a complete catalogue store, written whole or not at all, on the cluster."""
        final = [self.path(f"{stem}.parquet"), self.path(f"{stem}.fits")]
        if all(p.exists() for p in final):
            return
        with replacing(*final) as staged:
            stages.in_one_task(self.client, stages.catalogue_files, store, staged[0])

    def _truth_path(self) -> Path | None:
        cfg = self.config
        path = (cfg.input.store.truth if cfg.input.kind == "store" else self.path("truth.parquet"))
        return Path(path) if path is not None and Path(path).exists() else None

    def _do_products(self, step: Step) -> None:
        """The report's small products (``config.report``), each written whole and recorded.

        Each product is one task on the cluster (:func:`stages.in_one_task`),
        given the test galaxies' spectra as futures and the catalogues and
        truth as paths; the driver only writes the small results.
        """
        rep, st = self.config.report, self.config.stages
        stores = self.stores
        run = partial(stages.in_one_task, self.client)
        t0 = time.perf_counter()
        truth = self._truth_path()
        cats = {products.CASES[t]: path for t, path in self.catalogue_stores.items()}
        held = pd.read_parquet(self.path(HELDOUT))["galaxy"].to_numpy() if self.path(HELDOUT).exists() else None
        made = []
        planned = set(step.outputs)  # the plan decided which products this run makes
        if "preprocessed" in stores:
            test = products.test_positions(stores["preprocessed"], held, rep.test_galaxies)
            # Every product reads these galaxies: take them from every store in one
            # computation, so that a fused chain's chunks run once, not once per product.
            wanted = {"preprocessed", "degraded", "denoised"}
            if st.denoise is not None:
                wanted |= {st.denoise.input, st.train.clean if st.train is not None else "preprocessed"}
            stores = self._gathered({k: v for k, v in stores.items() if k in wanted}, test)
            test = np.arange(test.size)
        if "examples.npz" in planned:
            from ..science.metrics import TABLE6_LINES

            arrays = run(products.examples, stores, cats, test, rep.examples, list(TABLE6_LINES))
            with replacing(self.path("examples.npz")) as (tmp,):
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
            self.log.output("table", "examples.npz", "products", name="examples")
            made.append("examples")
        if planned & {"latent.parquet", "reconstruction_mse.csv"}:
            model = self._model_dir()
            noisy = stores[st.denoise.input]
            if "latent.parquet" in planned:
                self._table(run(products.latent, model, noisy, test, truth), "latent.parquet", "products")
                made.append("latent")
            if "reconstruction_mse.csv" in planned:
                clean_name = st.train.clean if st.train is not None else "preprocessed"
                train = None
                if st.train is not None and st.denoise.model == "train":
                    full = self.stores
                    at = products.test_positions(full[st.denoise.input], held, rep.test_galaxies,
                                                 trained=True)
                    train = self._gathered({"noisy": full[st.denoise.input],
                                            "clean": full[clean_name]}, at)
                table = run(products.reconstruction, model, noisy, stores[clean_name], test, train,
                            st.train.seed if st.train is not None else 0)
                self._table(table, "reconstruction_mse.csv", "products")
                made.append("reconstruction_mse")
        if "table6.csv" in planned:
            scores, tables = run(products.scored, cats, truth, held, "table6_coverage.csv" in planned)
            if scores is not None:
                from .. import plots

                for name, table in tables.items():
                    if f"{name}.csv" in planned and table is not None:
                        self._table(table, f"{name}.csv", "products")
                for case in scores.vs_original:
                    name = f"figure9-{case}.png"
                    with replacing(self.path(name)) as (tmp,):
                        with open(tmp, "wb") as fh:
                            plots.figure9(scores, case).savefig(fh, dpi=110, format="png")
                    self.log.output("figure", name, "products", name=f"figure9-{case}")
                made.append("table6")
        if made:
            self._record("products", StageRecord(", ".join(made), 0, [], 0,
                                                 time.perf_counter() - t0))

    def _model_dir(self) -> Path:
        model = self.config.stages.denoise.model
        return self.path(MODEL) if model == "train" else Path(model)

    def _do_science(self, step: Step) -> None:
        """The MZR test of the fitted cases, as one task on the cluster (:func:`products.mzr`)."""
        sc = self.config.stages.science
        from ..science.mzr_test import format_comparison

        t0 = time.perf_counter()
        held = None
        if self.path(HELDOUT).exists():
            # Galaxies the model was trained on would flatter the de-noised case.
            held = pd.read_parquet(self.path(HELDOUT))["galaxy"].to_numpy()
            self.echo(f"science: {held.size} galaxies held out of training")
        cats = {case: self.catalogue_stores[target] for case, target in sc.cases.items()}
        # The case fitted on the degraded spectra is the noisy one; its noise bounds
        # the Hα S/N any de-noiser of them can honestly reach.
        noisy_case = next((c for c, t in sc.cases.items() if t == "degraded"), None)
        noisy = self.stores.get("degraded") if noisy_case is not None else None
        truth = self._truth_path()
        if truth is None:
            raise FileNotFoundError("the science step needs the mock's truth table, and this run has none")
        result = stages.in_one_task(self.client, products.mzr, cats, truth, held,
                                    sc.calibration, sc.min_halpha_snr, noisy_case, noisy)
        with replacing(self.path("science")) as (out,):
            out.mkdir()
            result.save(out / "mzr_test")
            (out / "mzr_comparison.txt").write_text(format_comparison(result) + "\n")
        self.log.output("table", "science/mzr_test", "science", name="mzr_test")
        self.log.output("table", "science/mzr_comparison.txt", "science", name="mzr_comparison")
        self.echo(format_comparison(result))
        self._record("science", StageRecord("science", 0, [], 0, time.perf_counter() - t0,
                                            int(result.summary["n_total"].iloc[0])))

    def _count(self, stores: dict[str, xr.Dataset], catalogues: dict[str, xr.Dataset]) -> None:
        first = next(iter(stores.values()))
        self.summary.galaxies = int(first.sizes["galaxy"])
        flags = np.zeros(self.summary.galaxies, dtype=np.uint32)
        written = [ds for key, ds in stores.items() if key not in self.fused]
        ids = None
        with _here():
            for ds in written + list(catalogues.values()):
                # a catalogue of some galaxies only (stages.fit.galaxies) is placed by id
                at = slice(None)
                if ds.sizes["galaxy"] != flags.size:
                    ids = pd.Index(first["galaxy"].values.astype(str)) if ids is None else ids
                    at = ids.get_indexer(ds["galaxy"].values.astype(str))
                for name in ("flags", "status"):
                    if name in ds and np.issubdtype(ds[name].dtype, np.integer):
                        flags[at] |= ds[name].values.astype(np.uint32)
        self.summary.flagged = int(np.count_nonzero(flags))
        self.summary.failed = int(np.count_nonzero(flags & np.uint32(FAILED)))


def _here():
    """Compute reads of small galaxy tables from written stores in this process, not on the cluster.

    A catalogue or truth table is a few MB, but read on the cluster it is a
    task per column per chunk (~700 for an 84-column catalogue of 8 chunks),
    each a round trip through the scheduler, which shares this process.
    Only for datasets read from stores: a lazy stage would run here.
    """
    return dask.config.set(scheduler="threads")


def _needs_rechunk(ds: xr.Dataset, chunk: int) -> bool:
    chunks = ds.chunks.get("galaxy") if ds.chunks else None
    return not chunks or max(chunks) > chunk


def run_pipeline(config: PipelineConfig, *, cluster: str = "local", workers: int | None = None,
                 resume: bool = False, progress: bool = True,
                 echo: Callable[[str], None] = print, overwrite: bool = False) -> RunSummary:
    """Run ``config`` on a cluster it starts (and closes).

    Parameters
    ----------
    config : PipelineConfig
        From :func:`~survey_denoise.pipeline.config.load_config`.
    cluster : str
        ``local``, ``slurm``/``pbs``/``lsf``, a cluster file or a scheduler address.
    workers : int, optional
        Local worker processes, or a fixed number of batch jobs.
    resume : bool
        Finish the run in ``config.outputs.dir``: only missing chunks are computed.
    overwrite : bool
        Replace the run in ``config.outputs.dir`` (removed once the cluster is up).

    Returns
    -------
    RunSummary
    """
    from ..cluster import connect

    if resume and overwrite:
        raise ConfigError("--overwrite and --resume exclude each other")
    if config.sweep:
        from .sweep import run_sweep

        summaries = run_sweep(config, cluster=cluster, workers=workers, resume=resume,
                              progress=progress, overwrite=overwrite, echo=echo)
        return summaries[-1]
    check_folder(config, resume, overwrite)  # before a cluster starts
    if config.stages.denoise is not None and config.stages.denoise.model != "train":
        from ..models import UnreadableModel, check_loadable

        try:
            check_loadable(config.stages.denoise.model)  # once, not once per task
        except UnreadableModel as err:
            raise ConfigError(f"stages.denoise.model: {err}") from None
    with connect(cluster, n_workers=workers, echo=echo) as client:
        if overwrite:
            clear_run(Path(config.outputs.dir))
        summary = make_plan(config, cluster).execute(client, resume=resume, progress=progress,
                                                     echo=echo)
    echo(str(summary))
    return summary
