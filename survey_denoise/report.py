"""A static HTML report of a pipeline run: figures as PNG, tables as CSV, one page.

The report opens from disk without a server: ``report.html`` plus a folder
``report_files/`` beside it holding every figure (PNG) and table (CSV).

It reads only the run record, ``run.json`` (:mod:`survey_denoise.pipeline.record`):
the config, versions and timings for the provenance, and the ``outputs``
list for everything else.  Each science section is drawn from recorded
outputs of the run:

=================================  ====================  ==========================
section                            recorded output       made by the config key
=================================  ====================  ==========================
Figure 7, reconstruction MSE       table ``reconstruction_mse``  ``report.reconstruction``
example spectra, fitted fluxes     table ``examples``    ``report.examples``
Figure 9, Table 6                  table ``table6``,     ``report.scores``
                                   figures ``figure9-*``,
                                   ``table6_coverage``
Figure 10, mass-metallicity test   table ``mzr_test``    ``stages.science``
Figure 6, latent space             table ``latent``      ``report.latent``
=================================  ====================  ==========================

A section the run did not make is left out, with one line naming the
config key that would make it; a recorded output that cannot be read
spoils its own section only.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, plots
from .lines import all_lines
from .pipeline.record import RunRecord

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

    def copy(self, src: Path, name: str, caption: str) -> dict:
        """A figure the run already drew (PNG), copied beside the HTML."""
        shutil.copyfile(src, self.dir / f"{name}.png")
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


def _outputs(rec: RunRecord) -> Section:
    s = Section("Outputs of the run", "outputs")
    table = pd.DataFrame([o.__dict__ for o in rec.outputs()], columns=["kind", "name", "path", "step"])
    s.tables.append({"caption": "Every output the run recorded (paths relative to the run folder)",
                     "csv": None, "html": table.to_html(index=False, border=0)})
    return s


def _reconstruction(rec: RunRecord, w: _Writer) -> Section | None:
    out = rec.get("table", "reconstruction_mse")
    if out is None:
        return None
    s = Section("Reconstruction error per model (Figure 7)", "reconstruction")
    tab = pd.read_csv(rec.path(out))
    models = tab[tab["latent_dim"] > 0]
    s.figures.append(w.figure(plots.mse_vs_latent(models), "fig7_mse_vs_latent",
                              "Reconstruction MSE per pixel on the test galaxies against latent size."))
    s.tables.append(w.table(tab, "table_mse", "MSE per pixel (normalised flux²) on the test galaxies; "
                            "'noisy input': the error with no de-noising", index=False))
    s.paragraphs.append("Paper: VAE < AE < PCA at every size; PCA worsens with more components; "
                        "AE and VAE flatten after about 6 dimensions.")
    return s


def _examples(rec: RunRecord, w: _Writer) -> Section | None:
    out = rec.get("table", "examples")
    if out is None:
        return None
    s = Section("Example spectra: original, noisy, de-noised (Figure 8)", "examples")
    labels = {k: line.label for k, line in all_lines().items()}
    with np.load(rec.path(out), allow_pickle=False) as z:
        recs = {k[4:]: z[k] for k in z.files if k.startswith("rec_")}
        noisy = z["noisy"] if "noisy" in z.files else None
        ids = [str(i) for i in z["ids"]]
        fig = plots.example_spectra(z["wavelength"], z["original"], noisy, recs, ids=ids)
        keys = [str(k) for k in z["line_keys"]] if "line_keys" in z.files else []
        fluxes = [pd.DataFrame(z[name], columns=[labels.get(k, k) for k in keys])
                  .assign(galaxy=ids, case=name[6:])
                  for name in z.files if name.startswith("lines_")]
    s.figures.append(w.figure(fig, "fig8_examples",
                              "Original (black), noisy input (grey) and de-noised spectra; residuals below."))
    if fluxes:
        table = pd.concat(fluxes).set_index(["galaxy", "case"]).sort_index()
        s.tables.append(w.table(table, "table_example_fluxes",
                                "Fitted line fluxes of these galaxies in each set of spectra "
                                "(the catalogues' flux unit; – where not fitted)"))
    return s


def _line_fluxes(rec: RunRecord, w: _Writer) -> Section | None:
    out = rec.get("table", "table6")
    if out is None:
        return None
    s = Section("Line fluxes: predicted vs original (Figure 9, Table 6)", "lines")
    table = pd.read_csv(rec.path(out))
    s.tables.append(w.table(table, "table6_line_scatter",
                            "Scatter of log10(predicted/original) in dex (sigma: all points; sigma_fill: "
                            "filled bins), every case on the same galaxies, zero fits as upper limits; "
                            "sigma_truth against the true flux when the run has a truth table",
                            index=False))
    coverage = rec.get("table", "table6_coverage")
    if coverage is not None:
        cov = pd.read_csv(rec.path(coverage))
        s.tables.append(w.table(cov[cov["bin"] == "all"], "table6_coverage",
                                "Coverage of the true fluxes by each case's fitted errors, all true-flux "
                                "bins together: within 1σ and 2σ (calibrated errors: 0.60–0.76 and "
                                "0.90–0.98); per bin in the run's table6_coverage.csv", index=False))
    for fig in rec.outputs("figure"):
        if fig.name.startswith("figure9-"):
            case = fig.name.removeprefix("figure9-")
            s.figures.append(w.copy(rec.path(fig), f"fig9_{_slug(case)}",
                                    f"Line fluxes measured on the {case} spectra vs the original "
                                    "spectra, on the galaxies every case is scored on; triangles: upper limits."))
    s.paragraphs.append("Paper Table 6 (4-d models, VAE σ / σ_fill): Hα 0.36/0.29, Hδ 0.45/0.37, "
                        "[OIII]4363 0.74/0.63, [SII]6716 0.52/0.38, [OIII]5007 0.55/0.44, [NII]6583 0.56/0.45.")
    return s


def _mzr(rec: RunRecord, w: _Writer) -> Section | None:
    from .science.mzr_test import MZRTest, oh_errors, reach, slopes

    out = rec.get("table", "mzr_test")
    if out is None:
        return None
    s = Section("Mass–metallicity relation: the three-way test (Figure 10)", "mzr")
    result = MZRTest.load(rec.path(out))
    s.figures.append(w.figure(plots.mzr_panels(result.galaxies), "fig10_mzr",
                              "MZR from each set of spectra, coloured by SFR; red: reference MZR; "
                              "error bars: 16/50/84th percentiles in filled mass bins; below: mass "
                              "distribution of all galaxies (orange) and of those with a metallicity (blue)."))
    s.tables.append(w.table(result.comparison(), "table_mzr_comparison", "Paper vs this run"))
    s.tables.append(w.table(result.summary.T, "table_mzr_summary", "Per-case summary"))
    if result.coverage is not None:
        s.tables.append(w.table(result.coverage, "table_mzr_oh_coverage",
                                "O/H errors against the truth, per bin of true 12 + log(O/H): oh_err "
                                "('total') against the true O/H, oh_err_stat ('stat', the line-flux errors) "
                                "against the calibration applied to the noise-free lines", index=False))
    ref = result.settings.get("reference", {})
    s.paragraphs.append(
        f"Metallicity: {result.settings.get('calibration', 'o3n2').upper()} (Pettini & Pagel 2004), "
        f"measurable when Hα S/N > {result.settings.get('min_halpha_snr', 15)}. "
        f"Reference MZR: {ref.get('reference', 'unknown')}.")
    s.paragraphs.extend(f"{line[0].upper()}{line[1:]}." for line in slopes(result) + reach(result)
                        + oh_errors(result))
    return s


def _latent(rec: RunRecord, w: _Writer) -> Section | None:
    out = rec.get("table", "latent")
    if out is None:
        return None
    s = Section("Latent space (Figure 6)", "latent")
    tab = pd.read_parquet(rec.path(out))
    zcols = sorted((c for c in tab.columns if re.fullmatch(r"z\d+", str(c))), key=lambda c: int(c[1:]))
    if len(zcols) < 2 or "class" not in tab.columns:
        s.missing = f"{out.path}: needs columns z0, z1, … and class (has {list(tab.columns)})."
        return s
    fig = plots.latent_space(tab[zcols].to_numpy(), tab["class"].to_numpy())
    s.figures.append(w.figure(fig, "fig6_latent",
                              f"Latent means of {len(tab)} test galaxies, coloured by spectral class."))
    return s


# Each science section, and the config key that makes its output.
SECTIONS = (
    (_reconstruction, "Reconstruction error per model (Figure 7)",
     "report.reconstruction (needs stages.denoise)"),
    (_examples, "Example spectra (Figure 8)", "report.examples (needs stages.preprocess)"),
    (_line_fluxes, "Line fluxes (Figure 9, Table 6)",
     "report.scores (needs stages.fit of preprocessed and of another store)"),
    (_mzr, "Mass–metallicity test (Figure 10)", "stages.science"),
    (_latent, "Latent space (Figure 6)", "report.latent (needs stages.denoise)"),
)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


def build_report(run_dir: str | Path, out: str | Path | None = None, *, title: str | None = None) -> Path:
    """Write the HTML report of RUN_DIR from its run record and return its path.

    Parameters
    ----------
    run_dir : path
        The run's folder, holding ``run.json`` (see the module docstring).
    out : path, optional
        HTML file to write (default ``RUN_DIR/report.html``); figures and
        tables go to ``<stem>_files/`` beside it.

    Raises
    ------
    FileNotFoundError
        If RUN_DIR does not exist.
    ValueError
        If RUN_DIR holds no run record (``run.json``), or it is not valid JSON.
    """
    import jinja2
    from matplotlib.figure import Figure  # noqa: F401  (fail early if matplotlib is missing)

    d = Path(run_dir)
    run = read_run(d)
    if not run:
        raise ValueError(f"{d}: no pipeline run here (no run.json); give the run's outputs.dir")
    rec = RunRecord.read(d)
    out_html = Path(out) if out is not None else d / "report.html"
    out_html.parent.mkdir(parents=True, exist_ok=True)
    w = _Writer(out_html)
    sections, omitted = [_provenance(d, run), _outputs(rec)], []
    for build, title_, key in SECTIONS:
        try:
            section = build(rec, w)
        except (OSError, KeyError, ValueError) as err:
            # a damaged output spoils its own section only
            section = Section(title_, build.__name__.strip("_"),
                              missing=f"Could not build this section: {type(err).__name__}: {err}")
        if section is None:
            omitted.append(f"{title_}: not made by this run; set {key} in the config to make it.")
        else:
            sections.append(section)
    template = resources.files("survey_denoise").joinpath("data", "report.html.j2").read_text()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    html = env.from_string(template).render(
        title=title or f"survey_denoise report: {run.get('name', config.get('name', d.name))}",
        run_dir=str(d.resolve()), version=__version__,
        written=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sections=sections, omitted=omitted,
    )
    out_html.write_text(html, encoding="utf-8")
    return out_html
