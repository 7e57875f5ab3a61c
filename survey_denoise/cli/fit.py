"""``survey-denoise fit``, ``combine`` and ``compare``: line catalogues, combined, and their scatter."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.params import Fit
from .common import UserError, client_for, cluster_option, no_progress_option, workers_option
from .params import declared
from .stages import check_option


def _stem(out: Path) -> Path:
    return out.with_suffix("") if out.suffix.lower() in (".parquet", ".fits", ".fit", ".zarr") else out


@click.command("fit")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Catalogue: NAME(.parquet) gives NAME.parquet, NAME.fits and the Zarr table NAME.zarr.")
@declared(Fit)
@cluster_option
@workers_option
@click.option("--overwrite", is_flag=True, help="Replace an existing catalogue.")
@click.option("--resume", is_flag=True, help="Fit only the galaxy chunks an interrupted run left.")
@check_option
@no_progress_option
def fit(store, out, params: Fit, cluster, workers, overwrite, resume, check_only, no_progress) -> None:
    """Measure emission lines of a rest-frame STORE into a catalogue (Parquet + FITS)."""
    from ..io.outputs import check_outputs
    from ..io.store import open_store
    from ..pipeline.plan import Plan

    if overwrite and resume:
        raise UserError("--overwrite and --resume exclude each other")
    templates, method = params.templates, params.method
    if templates is not None and not templates.is_file():
        raise FileNotFoundError(f"{templates}: no such pPXF template file")
    stem = _stem(out)
    table = stem.with_suffix(".zarr")
    files = [stem.with_suffix(".parquet"), stem.with_suffix(".fits")]
    check_outputs([table, *files], [store, templates], overwrite=overwrite, resume=resume,
                  resumable=[table])
    plan = Plan.single("fit", params, store, table, cluster=cluster,
                       outputs=tuple(f.name for f in files))
    if check_only:
        click.echo(repr(plan))
        return
    ds = open_store(store, frame="rest")
    with client_for(cluster, workers) as client:
        report = plan.execute(client, resume=resume, overwrite=overwrite, progress=not no_progress)
    pq_path, fits_path = files
    click.echo(f"fit: {ds.sizes['galaxy']} galaxies ({method}) -> {pq_path}, {fits_path} "
               f"({report.n_chunks} chunk(s), {len(report.written)} written, {report.seconds:.1f} s)")


def _zarr(cat: Path) -> Path:
    """The Zarr catalogue store of ``cat`` (given as the store, its stem or its Parquet/FITS file)."""
    return _stem(cat).with_suffix(".zarr")


@click.command("combine")
@click.argument("denoised", type=click.Path(path_type=Path))
@click.argument("input_cat", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Catalogue: NAME(.parquet) gives NAME.parquet, NAME.fits and the Zarr table NAME.zarr.")
@click.option("--overwrite", is_flag=True, help="Replace an existing catalogue.")
def combine(denoised, input_cat, out, overwrite) -> None:
    """Combine each line of a de-noised catalogue with the same line in its INPUT's catalogue.

    DENOISED and INPUT are catalogues written by ``fit`` (their ``.zarr``
    tables) of a de-noised store and of the store it was made from, the same
    galaxies in the same order.  The model's noise gains, which the
    de-noised catalogue carries, set the weights and the errors
    (:func:`survey_denoise.fitting.combine.combine_catalogues`).
    """
    from ..fitting.catalogue import write_catalogue
    from ..fitting.combine import combine_catalogues
    from ..io.outputs import check_outputs, replacing
    from ..io.store import open_store, write_store

    stem = _stem(out)
    table, files = stem.with_suffix(".zarr"), [stem.with_suffix(".parquet"), stem.with_suffix(".fits")]
    sources = [_zarr(denoised), _zarr(input_cat)]
    check_outputs([table, *files], sources, overwrite=overwrite)
    for src in sources:
        if not src.is_dir():
            raise UserError(f"{src}: no such catalogue table (write it with 'survey-denoise fit')")
    den, noisy = (open_store(src, spectra=False) for src in sources)
    try:
        cat = combine_catalogues(den, noisy)
    except ValueError as err:
        raise UserError(f"cannot combine {sources[0]} with {sources[1]}: {err}") from None
    write_store(cat, table, overwrite=overwrite, progress=False, label="combine", spectra=False)
    with replacing(*files) as staged:
        write_catalogue(open_store(table, spectra=False), staged[0])
    click.echo(f"combine: {cat.sizes['galaxy']} galaxies -> {files[0]}, {files[1]}, {table}")


@click.command("compare")
@click.argument("cat_a", type=click.Path(path_type=Path))
@click.argument("cat_b", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Per-line table (CSV); the per-bin table goes beside it as NAME_bins.csv.")
@click.option("--plot", "plot", type=click.Path(path_type=Path), default=None,
              help="Figure 9 (PNG): CAT_B against CAT_A per line.")
@click.option("--units", type=click.Choice(["physical", "normalised"]), default="physical",
              show_default=True, help="Compare physical or normalised fluxes.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def compare(cat_a, cat_b, out, plot, units, overwrite) -> None:
    """Scatter in dex of CAT_B's line fluxes about CAT_A's (sigma, sigma_fill, per bin)."""
    import pandas as pd

    from ..fitting.catalogue import read_catalogue
    from ..io.outputs import check_outputs, replacing
    from ..science import metrics

    outputs = [out, out.with_name(out.stem + "_bins.csv"), plot]
    inputs = [cat.with_suffix(".parquet") if cat.suffix == "" else cat for cat in (cat_a, cat_b)]
    check_outputs(outputs, inputs, overwrite=overwrite)
    try:
        a, b = read_catalogue(cat_a), read_catalogue(cat_b)
    except ValueError as err:
        raise UserError(str(err)) from None
    if units == "normalised":  # score the normalised columns under the names the scorer reads
        a, b = (_normalised(cat) for cat in (a, b))
    try:
        scores = metrics.score_catalogues({"b": b}, a)
    except (KeyError, ValueError) as err:
        raise UserError(f"cannot compare {cat_a} with {cat_b}: {err}") from None
    table = (scores.summary.query("method == 'b'")
             .merge(scores.counts.query("method == 'b'")[["line", "n_measured", "n_missing"]], on="line")
             [["line", "n", "n_upper", "n_missing", "sigma_orig", "sigma_fill_orig", "offset_orig"]]
             .rename(columns={"sigma_orig": "sigma", "sigma_fill_orig": "sigma_fill",
                              "offset_orig": "median_offset"}))
    bins = pd.concat([s.bins.assign(line=k)[["line", *s.bins.columns]]
                      for k, s in scores.vs_original["b"].items()], ignore_index=True)
    with replacing(*(p for p in outputs if p is not None)) as staged:  # makes missing folders
        table.to_csv(staged[0], index=False)
        bins.to_csv(staged[1], index=False)
        if plot is not None:
            from ..plots import figure9

            figure9(scores, "b", save=staged[2],
                    units="normalised" if units == "normalised" else "1e-17 erg/s/cm²")
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _normalised(cat):
    """A catalogue whose ``<key>_flux[_err]`` columns hold the normalised fluxes."""
    norm = [c for c in cat.columns if c.endswith("_flux_norm") or c.endswith("_flux_norm_err")]
    physical = [c.replace("_flux_norm", "_flux") for c in norm]
    return cat.drop(columns=[c for c in physical if c in cat.columns]).rename(
        columns=dict(zip(norm, physical, strict=True)))
