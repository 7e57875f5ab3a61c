"""A static HTML report of a pipeline run: figures as PNG, tables as CSV, one page.

The report opens from disk without a server: ``report.html`` plus a folder
``report_files/`` beside it holding every figure (PNG) and table (CSV).

What is read from RUN_DIR
-------------------------
``run.json`` (written by the pipeline runner; every key optional):

* ``name``, ``pipeline``, ``started``, ``finished``, ``version`` or
  ``package_version``, ``git_commit``, ``cluster``, ``host`` — shown as provenance;
* ``config`` — the pipeline configuration (shown verbatim);
* ``stages`` — a list of objects (e.g. ``name``, ``output``, ``seconds``,
  ``n_galaxies``, ``status``), shown as a table;
* ``outputs`` — where the results are, paths relative to RUN_DIR (or absolute):

  ============================  =================================================
  ``reconstruction_mse``        CSV ``model, latent_dim, mse`` (Figure 7)
  ``examples``                  NPZ ``wavelength, original, noisy, ids`` and one
                                ``rec_<model>`` array per model (Figure 8)
  ``latent``                    Parquet ``z0 … z<d-1>`` + ``class`` (Figure 6)
  ``catalogues``                {case: Parquet line catalogue}; ``original`` is
                                the reference for Figure 9 / Table 6
  ``truth``                     Parquet truth table of the mock sample
  ``mzr_test``                  folder written by :meth:`MZRTest.save` (Figure 10)
  ============================  =================================================

When ``outputs`` does not name an item, the default file name above is looked
for directly in RUN_DIR (``reconstruction_mse.csv``, ``examples.npz``,
``latent.parquet``, ``truth.parquet``, ``mzr_test/`` or ``science/mzr_test/``).
Catalogues default to the pipeline runner's ``catalogue-<store>.parquet`` of
each case in ``config.stages.science.cases``, else ``catalogues/<case>.parquet``.
The runner's own layout (``config``, ``versions``, ``invocations`` with their
``stages``) is understood as well.
A section whose inputs are absent says so instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, plots
from .lines import all_lines
from .science import metrics
from .science.metrics import TABLE6_LINES

PROVENANCE_KEYS = ("name", "pipeline", "started", "finished", "version", "package_version",
                   "git_commit", "cluster", "host", "seed")
"""Lines of the paper's Table 6, in its order."""


@dataclass
class Section:
    """One section of the report."""

    title: str
    anchor: str
    missing: str | None = None
    paragraphs: list[str] = field(default_factory=list)
    items: list[tuple[str, str]] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    raw: str | None = None


class _Writer:
    """Saves figures and tables beside the HTML and records their relative paths."""

    def __init__(self, out_html: Path):
        self.dir = out_html.parent / f"{out_html.stem}_files"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rel = self.dir.name

    def figure(self, fig, name: str, caption: str) -> dict:
        fig.savefig(self.dir / f"{name}.png", dpi=110, format="png")
        return {"src": f"{self.rel}/{name}.png", "caption": caption}

    def table(self, df: pd.DataFrame, name: str, caption: str, index: bool = True) -> dict:
        df.to_csv(self.dir / f"{name}.csv", index=index)
        html = df.to_html(index=index, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0)
        return {"caption": caption, "html": html, "csv": f"{self.rel}/{name}.csv"}


def read_run(run_dir: str | Path) -> dict:
    """The run log ``run.json`` of RUN_DIR ({} when absent).

    Raises
    ------
    FileNotFoundError
        If RUN_DIR does not exist or is not a folder.
    ValueError
        If ``run.json`` is not valid JSON (names the file and the position).
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such run directory")
    p = d / "run.json"
    if not p.exists():
        return {}
    try:
        out = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not valid JSON ({err}); fix or remove it") from None
    if not isinstance(out, dict):
        raise ValueError(f"{p}: expected a JSON object at the top level, found {type(out).__name__}")
    return out


def _output(run_dir: Path, run: dict, key: str, default: str) -> Path | None:
    outputs = run.get("outputs") or {}
    value = outputs.get(key, default) if isinstance(outputs, dict) else default
    if not isinstance(value, str):
        return None
    p = Path(value)
    p = p if p.is_absolute() else run_dir / p
    return p if p.exists() else None


def catalogue_paths(run_dir: Path, run: dict) -> dict[str, Path]:
    """Line catalogues by case: ``outputs.catalogues``, else the pipeline runner's
    ``catalogue-<store>.parquet`` named by ``config.stages.science.cases``, else
    ``catalogues/<case>.parquet``."""
    outputs = run.get("outputs") or {}
    named = outputs.get("catalogues") if isinstance(outputs, dict) else None
    if not isinstance(named, dict):
        cases = ((run.get("config") or {}).get("stages") or {}).get("science") or {}
        cases = cases.get("cases") if isinstance(cases, dict) else None
        if isinstance(cases, dict):
            named = {case: f"catalogue-{store}.parquet" for case, store in cases.items()}
    found: dict[str, Path] = {}
    if isinstance(named, dict):
        for case, value in named.items():
            p = Path(value)
            p = p if p.is_absolute() else run_dir / p
            if p.exists():
                found[str(case)] = p
    elif (run_dir / "catalogues").is_dir():
        for p in sorted((run_dir / "catalogues").glob("*.parquet")):
            found[p.stem] = p
    return found


def _provenance(run_dir: Path, run: dict) -> Section:
    s = Section("Provenance", "provenance")
    if not run:
        s.missing = f"No run log (run.json) in {run_dir}: provenance unknown."
        return s
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    s.items = [(k, str(run[k])) for k in PROVENANCE_KEYS if k in run]
    if "name" not in run and "name" in config:
        s.items.insert(0, ("name", str(config["name"])))
    if "status" in run:
        s.items.append(("status", str(run["status"])))
    stages = run.get("stages")
    invocations = run.get("invocations")
    if isinstance(invocations, list) and invocations and isinstance(invocations[-1], dict):
        # the pipeline runner's log: one entry per invocation (first run and each --resume)
        last = invocations[-1]
        s.items += [(f"last run: {k}", str(last[k])) for k in ("started", "finished", "status",
                                                                "cluster", "host", "resume") if k in last]
        s.items.append(("invocations", str(len(invocations))))
        if isinstance(last.get("stages"), dict):
            stages = [{"stage": name, **{k: (len(v) if k == "written" and isinstance(v, list) else v)
                                         for k, v in rec.items() if k != "notes"}}
                      for name, rec in last["stages"].items() if isinstance(rec, dict)]
    if isinstance(stages, list) and stages and all(isinstance(x, dict) for x in stages):
        s.tables.append({"caption": "Stages (written = chunks computed by the last invocation)",
                         "csv": None,
                         "html": pd.DataFrame(stages).to_html(index=False, na_rep="–", border=0)})
    if isinstance(run.get("versions"), dict):
        s.tables.append({"caption": "Package versions", "csv": None,
                         "html": pd.Series(run["versions"], name="version").to_frame()
                         .to_html(border=0)})
    if "config" in run:
        s.paragraphs.append("Configuration of the run:")
        s.raw = json.dumps(run["config"], indent=2, default=str)
    if not s.items and not s.tables and s.raw is None:
        s.missing = "run.json holds none of the provenance keys this report knows."
        s.raw = json.dumps(run, indent=2, default=str)[:20000]
    return s


def _reconstruction(run_dir: Path, run: dict, w: _Writer) -> Section:
    s = Section("Reconstruction: test MSE vs latent size (Figure 7)", "reconstruction")
    p = _output(run_dir, run, "reconstruction_mse", "reconstruction_mse.csv")
    if p is None:
        s.missing = "No reconstruction MSE table (outputs.reconstruction_mse / reconstruction_mse.csv)."
        return s
    tab = pd.read_csv(p)
    s.figures.append(w.figure(plots.mse_vs_latent(tab), "fig7_mse_vs_latent",
                              "Test-set reconstruction MSE of PCA, AE and VAE against latent size."))
    wide = tab.pivot_table(index="model", columns="latent_dim", values="mse")
    s.tables.append(w.table(wide, "table_mse", "Test MSE by model (rows) and latent size (columns)"))
    s.paragraphs.append("Paper: VAE < AE < PCA at every size; PCA worsens with more components; "
                        "AE and VAE flatten after about 6 dimensions.")
    return s


def _examples(run_dir: Path, run: dict, w: _Writer) -> Section:
    s = Section("Example spectra and reconstructions (Figure 8)", "examples")
    p = _output(run_dir, run, "examples", "examples.npz")
    if p is None:
        s.missing = "No example spectra (outputs.examples / examples.npz)."
        return s
    with np.load(p, allow_pickle=False) as z:
        recs = {k[4:]: z[k] for k in z.files if k.startswith("rec_")}
        noisy = z["noisy"] if "noisy" in z.files else None
        ids = [str(i) for i in z["ids"]] if "ids" in z.files else None
        fig = plots.example_spectra(z["wavelength"], z["original"], noisy, recs, ids=ids)
    s.figures.append(w.figure(fig, "fig8_examples",
                              "Original (black), noisy input (grey) and reconstructions; residuals below."))
    return s


def _line_fluxes(run_dir: Path, run: dict, w: _Writer) -> Section:
    s = Section("Line fluxes: predicted vs original (Figure 9, Table 6)", "lines")
    cats = catalogue_paths(run_dir, run)
    if "original" not in cats or len(cats) < 2:
        s.missing = ("Needs the catalogue of the original spectra and at least one other "
                     f"(outputs.catalogues); found: {sorted(cats) or 'none'}.")
        return s
    orig = pd.read_parquet(cats["original"])
    judged = {case: pd.read_parquet(path) for case, path in cats.items() if case != "original"}
    keys = [k for k in TABLE6_LINES
            if all({f"{k}_flux", f"{k}_flux_err"} <= set(c.columns) for c in (orig, *judged.values()))]
    if not keys:
        s.missing = "The catalogues share none of the Table 6 lines with fluxes and errors."
        return s
    truth_path = _output(run_dir, run, "truth", "truth.parquet")
    truth = pd.read_parquet(truth_path) if truth_path is not None else None
    if truth is not None and not all(f"true_{k}_flux" in truth for k in keys):
        truth = None  # a truth table without line fluxes scores nothing
    noisy = "desi" if "desi" in judged and truth is not None else None
    scores = metrics.score_catalogues(judged, orig, truth, noisy=noisy, keys=keys)
    for case in judged:
        s.figures.append(w.figure(plots.figure9(scores, case), f"fig9_{_slug(case)}",
                                  f"Line fluxes measured on the {case} spectra vs the original spectra, "
                                  "on the galaxies every case is scored on; triangles: upper limits."))
    labels = {k: line.label for k, line in all_lines().items()}
    table = (scores.summary[scores.summary["method"] != "original"]
             .rename(columns={"method": "case", "sigma_orig": "sigma", "sigma_fill_orig": "sigma_fill",
                              "offset_orig": "median_offset"})
             .assign(line=lambda t: t["line"].map(lambda k: labels.get(k, k)))
             .set_index(["case", "line"]))
    s.tables.insert(0, w.table(table, "table6_line_scatter",
                               "Scatter of log10(predicted/original) in dex (σ: all points; σ_fill: filled "
                               "bins), every case on the same galaxies, zero fits as upper limits at "
                               f"{scores.settings['limit_sigma']:g}x their error; against the truth when "
                               "the run has a truth table with line fluxes"))
    s.paragraphs.append("Paper Table 6 (4-d models, VAE σ / σ_fill): Hα 0.36/0.29, Hδ 0.45/0.37, "
                        "[OIII]4363 0.74/0.63, [SII]6716 0.52/0.38, [OIII]5007 0.55/0.44, [NII]6583 0.56/0.45.")
    return s


def _mzr(run_dir: Path, run: dict, w: _Writer) -> Section:
    from .science.mzr_test import MZRTest, mzr_test

    s = Section("Mass–metallicity relation: the three-way test (Figure 10)", "mzr")
    p = (_output(run_dir, run, "mzr_test", "mzr_test")
         or _output(run_dir, run, "mzr_test", "science/mzr_test"))
    result = None
    if p is not None and (p / "summary.csv").exists():
        result = MZRTest.load(p)
    else:
        cats = catalogue_paths(run_dir, run)
        truth = _output(run_dir, run, "truth", "truth.parquet")
        cases = [c for c in ("original", "desi", "vae") if c in cats]
        if truth is not None and cases:
            result = mzr_test({c: pd.read_parquet(cats[c]) for c in cases}, pd.read_parquet(truth))
    if result is None:
        s.missing = ("No MZR test results (outputs.mzr_test / mzr_test/) and no truth table with "
                     "original/desi/vae catalogues to compute them from.")
        return s
    s.figures.append(w.figure(plots.mzr_panels(result.galaxies), "fig10_mzr",
                              "MZR from each set of spectra, coloured by SFR; red: reference MZR; "
                              "error bars: 16/50/84th percentiles in filled mass bins; below: mass "
                              "distribution of all galaxies (orange) and of those with a metallicity (blue)."))
    s.tables.append(w.table(result.comparison(), "table_mzr_comparison", "Paper vs this run"))
    s.tables.append(w.table(result.summary.T, "table_mzr_summary", "Per-case summary"))
    ref = result.settings.get("reference", {})
    s.paragraphs.append(
        f"Metallicity: {result.settings.get('calibration', 'o3n2').upper()} (Pettini & Pagel 2004), "
        f"measurable when Hα S/N > {result.settings.get('min_halpha_snr', 15)}. "
        f"Reference MZR: {ref.get('reference', 'unknown')}.")
    return s


def _latent(run_dir: Path, run: dict, w: _Writer) -> Section:
    s = Section("Latent space (Figure 6)", "latent")
    p = _output(run_dir, run, "latent", "latent.parquet")
    if p is None:
        s.missing = "No latent-space table (outputs.latent / latent.parquet)."
        return s
    tab = pd.read_parquet(p)
    zcols = sorted((c for c in tab.columns if re.fullmatch(r"z\d+", str(c))), key=lambda c: int(c[1:]))
    cls_col = next((c for c in ("class", "true_class") if c in tab.columns), None)
    if len(zcols) < 2 or cls_col is None:
        s.missing = f"{p}: needs columns z0, z1, … and class (has {list(tab.columns)})."
        return s
    fig = plots.latent_space(tab[zcols].to_numpy(), tab[cls_col].to_numpy())
    s.figures.append(w.figure(fig, "fig6_latent", "Latent means of the test set, coloured by class."))
    return s


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


def build_report(run_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write the HTML report of RUN_DIR and return its path.

    Parameters
    ----------
    run_dir : path
        The run's folder (see the module docstring for what is read).
    out : path, optional
        HTML file to write (default ``RUN_DIR/report.html``); figures and
        tables go to ``<stem>_files/`` beside it.

    Raises
    ------
    FileNotFoundError
        If RUN_DIR does not exist.
    ValueError
        If RUN_DIR holds no run (neither ``run.json`` nor any output), or
        ``run.json`` is not valid JSON.
    """
    import jinja2
    from matplotlib.figure import Figure  # noqa: F401  (fail early if matplotlib is missing)

    d = Path(run_dir)
    run = read_run(d)
    out_html = Path(out) if out is not None else d / "report.html"
    out_html.parent.mkdir(parents=True, exist_ok=True)
    w = _Writer(out_html)
    sections = [_provenance(d, run)]
    for build in (_reconstruction, _examples, _line_fluxes, _mzr, _latent):
        try:
            sections.append(build(d, run, w))
        except (OSError, KeyError, ValueError) as err:
            # a damaged input spoils its own section only
            name = build.__name__.strip("_")
            sections.append(Section(name.replace("_", " ").title(), name,
                                    missing=f"Could not build this section: {type(err).__name__}: {err}"))
    if not run and all(s.missing for s in sections):
        # A page of "missing" notices reads as a report of a run that made nothing.
        raise ValueError(f"{d}: no pipeline run here (no run.json and none of a run's outputs); "
                         "give the run's outputs.dir")
    template = resources.files("survey_denoise").joinpath("data", "report.html.j2").read_text()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(template).render(
        title=title or f"survey_denoise report: {run.get('name', d.name)}",
        run_dir=str(d.resolve()), version=__version__,
        written=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sections=sections,
    )
    out_html.write_text(html, encoding="utf-8")
    return out_html
