"""The small products a report draws, computed from a run's stores, model and catalogues.

Each function returns in-memory data (arrays, frames, scores) for a bounded
number of galaxies; the runner writes and records them.  The "test"
galaxies are those the train stage held out, or every galaxy when nothing
was held out, capped at ``report.test_galaxies``.

The runner calls each in one task on the cluster
(:func:`~survey_denoise.pipeline.stages.in_one_task`), so catalogues and the
truth table arrive as file paths and are read there, only the rows and
columns a product needs (:func:`catalogue_frames`, :func:`_truth_columns`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import xarray as xr

from ..schema import without_truth

# Catalogue case names by the store they measure: the names the report and Table 6 use.
CASES = {"preprocessed": "original", "degraded": "noisy", "denoised": "denoised", "raw": "raw",
         "combined": "combined"}
BOUND_ROWS = 16_384
"""Galaxies read at a time for :func:`noise_bound` (~110 MB of spectra on the paper's grid)."""


def test_positions(ds: xr.Dataset, held: np.ndarray | None, limit: int, *,
                   trained: bool = False) -> np.ndarray:
    """Positions (sorted, at most ``limit``) of the test galaxies of ``ds``.

    With ``trained``, those of the galaxies the model was trained on instead
    (every galaxy when nothing was held out).

    When there are more candidates than ``limit``, they are taken from as few
    galaxy chunks as hold ``limit`` of them, those chunks spread evenly along
    the store (:func:`spread_chunks`).  Reading a galaxy means computing its
    whole chunk, and in a fused run that is the whole chain from the input
    to the de-noised spectra: positions spread over every chunk would make
    the products cost a second pass over the survey.  Spreading the chunks
    keeps the sample representative where store order follows the sky, the
    redshift or a design's selection order.

    Parameters
    ----------
    ds : Dataset
        A store with a ``galaxy`` coordinate.
    held : array, optional
        Galaxy ids never shown to the model (None: every galaxy is a test galaxy).
    limit : int
        Most positions returned, spread evenly over the chosen chunks.
    """
    ids = ds["galaxy"].values
    if held is None:
        pos = np.arange(ids.size)
    else:
        pos = np.flatnonzero(np.isin(ids, held) != trained)
    if pos.size > limit:
        sizes = ds.chunks.get("galaxy") if ds.chunks else None
        if sizes and len(sizes) > 1:
            pos = pos[spread_chunks(pos, np.asarray(sizes), limit)]
        pos = pos[np.linspace(0, pos.size - 1, limit).round().astype(int)]
    return pos


def spread_chunks(pos: np.ndarray, sizes: np.ndarray, limit: int) -> np.ndarray:
    """Mask of ``pos`` in the fewest evenly spaced chunks that hold ``limit`` of them.

    Parameters
    ----------
    pos : array of int (n,)
        Sorted galaxy positions.
    sizes : array of int
        Galaxies per chunk, in store order.
    limit : int
        Positions wanted.
    """
    chunk = np.searchsorted(np.cumsum(sizes), pos, side="right")
    occupied, counts = np.unique(chunk, return_counts=True)
    need = max(1, int(np.ceil(limit / counts.mean())))
    for k in range(min(need, occupied.size), occupied.size + 1):
        take = np.linspace(0, occupied.size - 1, k).round().astype(int)
        if counts[take].sum() >= limit:
            break
    return np.isin(chunk, occupied[take])


def subsets(stores: Mapping[str, xr.Dataset], pos: np.ndarray) -> dict[str, xr.Dataset]:
    """The galaxies at ``pos`` of every store, in memory, computed together.

    One computation for all stores: where they share upstream chunks (a fused
    chain, where each store is computed from the one before), those run once.
    """
    names = list(stores)
    done = dask.compute(*picked(stores, pos).values())
    return dict(zip(names, done, strict=True))


def picked(stores: Mapping[str, xr.Dataset], pos: np.ndarray) -> dict[str, xr.Dataset]:
    """The galaxies at ``pos`` of every store, lazily, less the mock truth the products never read."""
    return {name: without_truth(ds).isel(galaxy=pos) for name, ds in stores.items()}


def _flux(ds: xr.Dataset, pos: np.ndarray) -> xr.Dataset:
    return ds.isel(galaxy=pos).compute()


def catalogue_frames(paths: Mapping[str, str | Path], galaxies: np.ndarray | None = None,
                     columns: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Catalogue stores as DataFrames with a ``galaxy`` column, read from disk.

    Parameters
    ----------
    paths : mapping of case to path
        Written catalogue stores.
    galaxies : array, optional
        Only these galaxy ids, where the catalogue has them (default: every row).
    columns : list of str, optional
        Only these variables, where the catalogue has them (default: all).
    """
    from ..io.store import open_store
    from .stages import catalogue_frame

    out = {}
    for case, path in paths.items():
        cat = open_store(path, spectra=False, dask=False)
        if columns is not None:
            cat = cat[[c for c in columns if c in cat.data_vars]]
        if galaxies is not None:
            at = pd.Index(cat["galaxy"].values.astype(str)).get_indexer(np.asarray(galaxies).astype(str))
            cat = cat.isel(galaxy=np.sort(at[at >= 0]))
        out[case] = catalogue_frame(cat)
    return out


def _truth_columns(path: str | Path | None, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The truth table at ``path`` (None: there is none), only ``columns`` where it has them."""
    if path is None or not Path(path).exists():
        return None
    if columns is not None:
        import pyarrow.parquet as pq

        have = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in have]
    return pd.read_parquet(path, columns=columns)


def examples(stores: Mapping[str, xr.Dataset], catalogues: Mapping[str, str | Path],
             pos: np.ndarray, n: int, keys: list[str]) -> dict[str, np.ndarray]:
    """Spectra of ``n`` test galaxies in every store, with their fitted line fluxes.

    Returns
    -------
    dict
        ``wavelength`` (Angstrom, rest frame), ``ids``, ``original`` (the
        preprocessed flux), ``noisy`` (degraded) and ``rec_denoised`` when
        made, each (n, npix) in the store's normalised flux; ``line_keys``;
        ``lines_<case>`` (n, lines) fitted fluxes of each catalogue, in the
        catalogue's flux unit (NaN where not fitted).
    """
    pick = pos[np.linspace(0, pos.size - 1, min(n, pos.size)).round().astype(int)]
    clean = _flux(stores["preprocessed"], pick)
    ids = clean["galaxy"].values
    out = {"wavelength": clean["wavelength"].values.astype(float), "ids": ids.astype(str),
           "original": clean["flux"].values, "line_keys": np.array(keys)}
    for store, name in (("degraded", "noisy"), ("denoised", "rec_denoised")):
        if store in stores:
            out[name] = _flux(stores[store], pick)["flux"].values
    cols = [f"{k}_flux" for k in keys]
    for case, cat in catalogue_frames(catalogues, ids, cols).items():
        frame = cat.set_index(cat["galaxy"].astype(str))
        out[f"lines_{case}"] = frame.reindex(ids.astype(str)).reindex(columns=cols).to_numpy(float)
    return out


def latent(model_dir: Path, noisy: xr.Dataset, pos: np.ndarray,
           truth: str | Path | None) -> pd.DataFrame:
    """Latent means ``z0 … z<d-1>`` of the test galaxies, with ``galaxy`` and ``class``.

    The class is the mock's spectral class from the truth table at ``truth``
    ("unknown" without one).
    """
    from ..models import load_model

    truth = _truth_columns(truth, ["galaxy", "class"])
    sub = _flux(noisy, pos)
    z = np.asarray(load_model(model_dir).encode(sub))
    table = pd.DataFrame(z, columns=[f"z{i}" for i in range(z.shape[1])])
    table.insert(0, "galaxy", sub["galaxy"].values)
    cls = "unknown"
    if truth is not None and "class" in truth:
        cls = (truth.set_index(truth["galaxy"].astype(str))["class"]
               .reindex(table["galaxy"].astype(str)).fillna("unknown").to_numpy())
    table["class"] = cls
    return table


def reconstruction(model_dir: Path, noisy: xr.Dataset, clean: xr.Dataset, test: np.ndarray,
                   train: Mapping[str, xr.Dataset] | None, seed: int = 0) -> pd.DataFrame:
    """Mean squared error per pixel (normalised flux²) on the test galaxies, per model.

    Rows: the run's model; a PCA of the same latent size trained on
    ``train`` (``{"noisy": …, "clean": …}`` at the galaxies the model was
    trained on; when given and the model is not itself a PCA); and the noisy
    input itself (``latent_dim`` 0), the error without any de-noising.
    """
    from ..models import PCADenoiser, load_model

    model = load_model(model_dir)
    kind = str(model.card_["kind"])
    d = int(model.get_params()["latent"])
    x, y = _flux(noisy, test), _flux(clean, test)
    rows = [{"model": kind, "latent_dim": d, **_errors(model.denoise(x), y), "n_galaxies": test.size}]
    if train is not None and kind != "pca":
        pca = PCADenoiser(latent=d, seed=seed).fit(train["noisy"], train["clean"])
        rows.append({"model": "pca", "latent_dim": d, **_errors(pca.denoise(x), y),
                     "n_galaxies": test.size})
    resid = x["flux"].values.astype(np.float64) - y["flux"].values
    rows.append({"model": "noisy input", "latent_dim": 0, "mse": float(np.mean(resid ** 2)),
                 "mse_unit_norm": _errors(x["flux"].values, y)["mse_unit_norm"],
                 "n_galaxies": test.size})
    return pd.DataFrame(rows)


def _errors(pred: np.ndarray, clean: xr.Dataset) -> dict[str, float]:
    """``mse`` (the model's own score) and ``mse_unit_norm``.

    The noisy spectra are normalised again after the noise is added, so their
    signal sits below unit norm and a PCA, never shown a clean spectrum,
    reproduces that amplitude; the prediction scaled to unit L2 norm, like the
    clean spectra, separates the spectral shape from the amplitude.
    """
    from ..models.data import as_flux

    pred, y = as_flux(pred), as_flux(clean["flux"].values)
    norm = np.linalg.norm(pred.astype(np.float64), axis=1, keepdims=True)
    unit = pred / np.where(norm > 0, norm, 1.0)
    return {"mse": float(np.mean((pred - y) ** 2, dtype=np.float64)),
            "mse_unit_norm": float(np.mean((unit - y) ** 2))}


def scores(catalogues: Mapping[str, pd.DataFrame], truth: pd.DataFrame | None,
           galaxies: np.ndarray | None):
    """Every case scored against the original spectra on the same galaxies (Table 6, Figure 9).

    Parameters
    ----------
    catalogues : mapping of case to DataFrame
        Must hold ``original`` and at least one other case.
    truth : DataFrame, optional
        The mock's truth table; used when it has every Table 6 line's true flux.
    galaxies : array, optional
        Score only these galaxy ids (the held-out ones).

    Returns
    -------
    Scores or None
        None when there is nothing to compare (no ``original`` or no other case,
        or no Table 6 line in every catalogue).
    """
    from ..science.metrics import TABLE6_LINES, score_catalogues

    if "original" not in catalogues or len(catalogues) < 2:
        return None
    cats = dict(catalogues)
    if galaxies is not None:
        keep = set(np.asarray(galaxies).astype(str))
        cats = {c: f[f["galaxy"].astype(str).isin(keep)].reset_index(drop=True) for c, f in cats.items()}
    keys = [k for k in TABLE6_LINES
            if all({f"{k}_flux", f"{k}_flux_err"} <= set(c.columns) for c in cats.values())]
    if not keys:
        return None
    if truth is not None and not all(f"true_{k}_flux" in truth for k in keys):
        truth = None  # a truth table without line fluxes scores nothing
    judged = {c: f for c, f in cats.items() if c != "original"}
    noisy = "noisy" if "noisy" in judged and truth is not None else None
    return score_catalogues(judged, cats["original"], truth, noisy=noisy, keys=keys)


def scored(catalogues: Mapping[str, str | Path], truth: str | Path | None,
           galaxies: np.ndarray | None, with_coverage: bool = True):
    """:func:`scores` of catalogue stores, with its tables, read from disk.

    Returns
    -------
    (Scores, dict) or (None, {})
        The scores and the tables named by their file stem: ``table6``, the
        :func:`score_tables` and, with a truth table and ``with_coverage``,
        ``table6_coverage`` (:func:`coverage`).
    """
    frames = catalogue_frames(catalogues, galaxies)
    true = _truth_columns(truth)
    result = scores(frames, true, galaxies)
    if result is None:
        return None, {}
    tables = {"table6": table6(result), **score_tables(result)}
    if with_coverage:
        tables["table6_coverage"] = coverage(frames, true, galaxies)
    return result, tables


def mzr(catalogues: Mapping[str, str | Path], truth: str | Path, galaxies: np.ndarray | None,
        calibration: str, min_halpha_snr: float, noisy_case: str | None = None,
        noisy: xr.Dataset | None = None):
    """The science step's MZR test of catalogue stores, on the held-out galaxies.

    Parameters
    ----------
    catalogues : mapping of case to path
        Written catalogue stores, e.g. ``{"original": ..., "desi": ..., "vae": ...}``.
    truth : path
        The mock's truth table; its (held-out) galaxies are the sample.
    galaxies : array, optional
        Only these galaxy ids (those held out of training).
    calibration, min_halpha_snr
        The science stage's settings.
    noisy_case : str, optional
        The case fitted on the noisy spectra without de-noising.
    noisy : xarray.Dataset, optional
        That case's spectra: with them the Hα S/N bound of their noise
        (:func:`noise_bound`) joins the result.

    Returns
    -------
    MZRTest
    """
    from ..science.mzr_test import mzr_test

    table = pd.read_parquet(truth)
    if galaxies is not None:
        keep = set(np.asarray(galaxies).astype(str))
        table = table[table["galaxy"].astype(str).isin(keep)].reset_index(drop=True)
    frames = catalogue_frames(catalogues, table["galaxy"].to_numpy())
    sfr = "true_logsfr" if "true_logsfr" in table else "true_sfr"
    bound = noise_bound(noisy, table) if noisy is not None else None
    return mzr_test(frames, table, calibration=calibration, min_halpha_snr=min_halpha_snr,
                    sfr_column=sfr, noisy_case=noisy_case, bound=bound)


def noise_bound(noisy: xr.Dataset, truth: pd.DataFrame, prior_dex: float | None = None) -> pd.DataFrame | None:
    """:func:`~survey_denoise.science.bound.snr_bound` of the truth's galaxies in ``noisy``.

    The true fluxes are moved to the spectra's units by their ``dimming``
    (1 without one), and every line with a true flux is tied; ``prior_dex``
    is passed on.  None when the truth lacks Hα's flux or the gas
    dispersion (``true_sigma_gas``).
    """
    from ..lines import catalogue_keys
    from ..science.bound import snr_bound

    keys = [k for k in catalogue_keys() if f"true_{k}_flux" in truth]
    if "halpha" not in keys or "true_sigma_gas" not in truth:
        return None
    at = pd.Index(noisy["galaxy"].values.astype(str)).get_indexer(truth["galaxy"].astype(str))
    rows = np.flatnonzero(at >= 0)
    order = np.argsort(at[rows])  # read the store in its own order
    rows = rows[order]
    names = ["flux", "ivar", "mask", "norm"] + (["dimming"] if "dimming" in noisy else [])
    parts = []
    for start in range(0, rows.size, BOUND_ROWS):  # memory of one part, whatever the sample
        sel = rows[start:start + BOUND_ROWS]
        ds = noisy[names].isel(galaxy=at[sel]).compute()
        dim = ds["dimming"].values if "dimming" in ds else 1.0
        part = truth.iloc[sel]
        true = {k: part[f"true_{k}_flux"].to_numpy(float) * dim for k in keys}
        parts.append(snr_bound(ds, true, part["true_sigma_gas"].to_numpy(float), prior_dex=prior_dex))
    return pd.concat(parts, ignore_index=True) if parts else None


def table6(scores) -> pd.DataFrame:
    """The scores as the run's Table 6 CSV: one row per (case, line), scatter in dex."""
    from ..lines import all_lines

    labels = {k: line.label for k, line in all_lines().items()}
    return (scores.summary[scores.summary["method"] != "original"]
            .rename(columns={"method": "case", "sigma_orig": "sigma", "sigma_fill_orig": "sigma_fill",
                             "offset_orig": "median_offset"})
            .assign(label=lambda t: t["line"].map(lambda k: labels.get(k, k)))
            [["case", "line", "label", "n", "n_upper", "sigma", "sigma_fill", "median_offset",
              "sigma_truth", "sigma_fill_truth", "painted_rate", "painted_rate_input",
              "spurious_rate"]]
            .reset_index(drop=True))


def score_tables(scores) -> dict[str, pd.DataFrame]:
    """The scores' long tables: ``table6_scores`` and ``table6_bins`` (empty without a truth table).

    ``table6_scores`` has one row per (line, case), the reference
    ``original`` included, on the common set (:class:`~survey_denoise.science.metrics.Scores`
    ``summary``: N, limits, sigma and sigma_fill against the original and the
    truth, painted rate, faint-bin offset, dex) with the counts over every
    scored galaxy beside it (``n_measured_all``, ``n_upper_all``,
    ``n_missing_all``).  ``table6_bins`` is per bin of log10 true flux.
    """
    every = scores.counts.rename(columns={"n_measured": "n_measured_all", "n_upper": "n_upper_all",
                                          "n_missing": "n_missing_all"})
    return {"table6_scores": scores.summary.merge(every, on=["line", "method"], how="left"),
            "table6_bins": scores.bins}


def coverage(catalogues: Mapping[str, pd.DataFrame], truth: pd.DataFrame | None,
             galaxies: np.ndarray | None) -> pd.DataFrame | None:
    """Coverage of the true line fluxes by each catalogue's errors, per line and true-flux bin.

    Parameters
    ----------
    catalogues : mapping of case to DataFrame
        Fitted catalogues (``galaxy``, ``<key>_flux``, ``<key>_flux_err``).
    truth : DataFrame, optional
        The mock's truth table (``true_<key>_flux``, same flux unit).
    galaxies : array, optional
        Only these galaxy ids (the held-out ones).

    Returns
    -------
    DataFrame or None
        :func:`~survey_denoise.science.calibration.line_coverage` rows with
        ``line`` and ``method`` (the case); the bins come from the true fluxes
        alone, so every case gets the same ones.  None without a truth table
        holding the lines.
    """
    from ..science.calibration import COVERAGE_LINES, line_coverage

    keys = [k for k in COVERAGE_LINES if truth is not None and f"true_{k}_flux" in truth
            and all(f"{k}_flux_err" in c for c in catalogues.values())]
    if not keys or not catalogues:
        return None
    true = truth.rename(columns={f"true_{k}_flux": f"{k}_flux" for k in keys})
    if galaxies is not None:
        true = true[true["galaxy"].astype(str).isin(set(np.asarray(galaxies).astype(str)))]
    rows = [tab.assign(line=k, method=case) for case, cat in catalogues.items()
            for k, tab in line_coverage(cat, true, keys=keys).items()]
    return pd.concat(rows, ignore_index=True)
