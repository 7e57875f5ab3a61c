"""Plan sweeps: one config, several variants, one table of their results.

A config with a ``sweep:`` block runs once per combination of the listed
values, each variant in its own sub-folder of ``outputs.dir`` with its own
run record, all on one cluster::

    sweep:
      stages.train.kind: [pca, ae, vae]
      stages.train.latent: [2, 4, 6, 8, 10]

gives 15 variants (``outputs.dir/vae-4`` ...).  Every variant draws the same
mock and noise (the draws are keyed by galaxy id and seed), so the variants
differ only in what is swept.  When all have run, their report tables
(``reconstruction_mse.csv``, ``table6.csv``, ``table6_scores.csv``,
``table6_bins.csv``, ``table6_coverage.csv``) are gathered into
``sweep-<table>.csv`` with one column per swept key; the reconstruction
errors are drawn as Figure 7 (``figure7.png``, test MSE against latent size
per model) and the line-flux scores written as ``table6.md``, beside the
paper's Table 6.  ``pipelines/figure7.yaml`` and ``pipelines/table6.yaml`` are
the paper's two sweeps.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..io.outputs import replacing
from .config import ConfigError, PipelineConfig, set_dotted
from .plan import Plan, plan
from .record import RunRecord

GATHERED = ("reconstruction_mse", "table6", "table6_scores", "table6_bins", "table6_coverage")
"""Report tables of the variants gathered into the sweep's own tables."""


def _label(values: tuple) -> str:
    return "-".join(str(v) for v in values)


def variants(config: PipelineConfig) -> list[tuple[dict[str, object], PipelineConfig]]:
    """Each combination of the swept values and its config (``outputs.dir/<label>``).

    Raises
    ------
    ConfigError
        If a swept key is not a config key, or a combination is not a valid config.
    """
    sweep = config.sweep or {}
    base = json.loads(config.model_dump_json(exclude={"sweep"}))
    out: list[tuple[dict[str, object], PipelineConfig]] = []
    problems = []
    for values in itertools.product(*sweep.values()):
        data = json.loads(json.dumps(base))
        for key, value in zip(sweep, values, strict=True):
            set_dotted(data, key, value)
        data["outputs"]["dir"] = str(Path(config.outputs.dir) / _label(values))
        try:
            variant = PipelineConfig.model_validate(data)
        except ValueError as err:
            problems.append(f"sweep {dict(zip(sweep, values, strict=True))}: {err}".splitlines()[0])
            continue
        out.append((dict(zip(sweep, values, strict=True)), variant))
    if problems:
        raise ConfigError("; ".join(problems))
    return out


def plans(config: PipelineConfig, cluster: str = "local") -> list[tuple[dict[str, object], Plan]]:
    """The plan of every variant (a config without a sweep is one variant)."""
    if not config.sweep:
        return [({}, plan(config, cluster))]
    return [(values, plan(variant, cluster)) for values, variant in variants(config)]


def describe(config: PipelineConfig, cluster: str = "local") -> str:
    """What ``run --check`` prints for a sweep: the variants, then the first one's plan."""
    found = plans(config, cluster)
    if not config.sweep:
        return repr(found[0][1])
    lines = [f"sweep {config.name!r}: {len(found)} variants over {', '.join(config.sweep)}; "
             f"gathered into {config.outputs.dir}/sweep-*.csv"]
    lines += [f"  {p.folder}" for _, p in found]
    lines += ["each variant runs this plan (shown for the first):", repr(found[0][1])]
    return "\n".join(lines)


def gather(folder: Path, runs: list[tuple[dict[str, object], Path]], config: dict | None = None) -> list[Path]:
    """Concatenate the variants' report tables with their swept values.

    Also draws Figure 7 (``figure7.png``) from the reconstruction errors and
    writes ``table6.md`` (:mod:`.paper`) from the line-flux scores.
    """
    written, gathered = [], {}
    for name in GATHERED:
        frames = []
        for values, run in runs:
            record = RunRecord.read(run)
            entry = record.get("table", name)
            if entry is not None:
                frames.append(pd.read_csv(record.path(entry)).assign(**{k.rsplit(".", 1)[-1]: v
                                                                     for k, v in values.items()}))
        if not frames:
            continue
        table = gathered[name] = pd.concat(frames, ignore_index=True)
        path = folder / f"sweep-{name}.csv"
        with replacing(path) as (tmp,):
            table.to_csv(tmp, index=False)
        written.append(path)
        if name == "reconstruction_mse":
            written.append(_figure7(table, folder / "figure7.png"))
    if "table6_scores" in gathered:
        from .paper import table6_markdown

        keys = [k.rsplit(".", 1)[-1] for k in runs[0][0]]
        path = folder / "table6.md"
        with replacing(path) as (tmp,):
            tmp.write_text(table6_markdown(config or {}, keys, gathered))
        written.append(path)
    return written


def _figure7(table: pd.DataFrame, path: Path) -> Path:
    from ..plots import mse_vs_latent

    # Each variant also scores the noisy input and a PCA of its own size: keep one row per
    # (model, latent size), the noisy input at its latent size 0 as a reference level.
    rows = table.drop_duplicates(["model", "latent_dim"])
    with replacing(path) as (tmp,):
        with open(tmp, "wb") as fh:
            mse_vs_latent(rows[rows["latent_dim"] > 0]).savefig(fh, dpi=110, format="png")
    return path


def run_sweep(config: PipelineConfig, *, cluster: str = "local", workers: int | None = None,
              resume: bool = False, progress: bool = True, overwrite: bool = False,
              echo: Callable[[str], None] = print) -> list:
    """Run every variant of ``config`` on one cluster, then gather their tables.

    Returns
    -------
    list of RunSummary
        One per variant, in sweep order.
    """
    from ..cluster import connect
    from .folder import check_folder, clear_run

    found = plans(config, cluster)
    for _, p in found:
        check_folder(p.config, resume, overwrite)  # every variant, before a cluster starts
    summaries = []
    with connect(cluster, n_workers=workers, echo=echo) as client:
        for values, p in found:
            echo(f"sweep: {p.folder.name} ({', '.join(f'{k}={v}' for k, v in values.items())})")
            if overwrite:
                clear_run(p.folder)
            summaries.append(p.execute(client, resume=resume, progress=progress, echo=echo))
            echo(str(summaries[-1]))
    shown = json.loads(config.model_dump_json())
    for path in gather(Path(config.outputs.dir), [(v, p.folder) for v, p in found], shown):
        echo(f"sweep: wrote {path}")
    return summaries
