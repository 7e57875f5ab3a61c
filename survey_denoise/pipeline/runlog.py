"""The run log next to a pipeline's outputs: ``run.json`` (machine) and ``run.log`` (people).

``run.json`` holds the config, package versions, the machine, and one entry
per invocation (a first run and each ``--resume``) with, per stage, the
chunks written by that invocation, the chunks found complete, and the
seconds spent, and the run record (:mod:`~survey_denoise.pipeline.record`):
every output made, with its kind, path and step.  It is rewritten atomically after every stage, so a run
killed at any point leaves a readable log of what had finished.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..models.card import package_versions
from .record import Output, RunRecord

RUN_JSON = "run.json"
RUN_LOG = "run.log"
_PACKAGES = ("survey_denoise", "numpy", "xarray", "zarr", "dask", "distributed", "dask-jobqueue",
             "scikit-learn", "scipy", "keras", "tensorflow-cpu", "tensorflow", "ppxf", "astropy", "pandas")


def versions() -> dict[str, str]:
    """Python's and the installed versions of the packages a run depends on (without importing them)."""
    return {"python": sys.version.split()[0], **package_versions(_PACKAGES)}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class StageRecord:
    """What one stage did in one invocation.

    Attributes
    ----------
    output : str
        Store, folder or table the stage wrote (relative to the run folder).
    n_chunks : int
        Galaxy chunks of the output (0 for outputs that are not chunked).
    written : list of int
        Chunks this invocation computed and wrote.
    skipped : int
        Chunks already complete from an earlier invocation.
    seconds : float
        Wall-clock time of the stage.
    galaxies : int
        Galaxies in the output.
    """

    output: str
    n_chunks: int = 0
    written: list[int] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    galaxies: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


class RunLog:
    """``run.json`` + ``run.log`` of one run folder."""

    def __init__(self, folder: Path, config: dict, *, cluster: str, resume: bool) -> None:
        self.folder = folder
        self.path = folder / RUN_JSON
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data: dict[str, Any] = {
            "config": config,
            "versions": versions(),
            "invocations": old.get("invocations", []),
            "status": "running",
            "outputs": [],
        }
        # A resumed run keeps the outputs its earlier invocations recorded.
        self.record = RunRecord(folder, old.get("outputs", []))
        self.current: dict[str, Any] = {
            "started": _now(), "resume": resume, "cluster": cluster,
            "host": platform.node(), "pid": os.getpid(), "argv": sys.argv,
            "stages": {}, "status": "running",
        }
        self.data["invocations"].append(self.current)
        self.logger = logging.getLogger(f"survey_denoise.run.{folder}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self._handler = logging.FileHandler(folder / RUN_LOG)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.logger.addHandler(self._handler)
        self.save()

    @staticmethod
    def recorded_config(folder: Path) -> dict | None:
        """The config a run folder was started with (None if there is no run log)."""
        path = folder / RUN_JSON
        return json.loads(path.read_text())["config"] if path.exists() else None

    def info(self, message: str) -> None:
        self.logger.info(message)

    @contextlib.contextmanager
    def capturing(self, name: str) -> Iterator[None]:
        """Copy the INFO records of the logger ``name`` into ``run.log`` while the block runs."""
        source = logging.getLogger(name)
        level = source.level
        source.setLevel(logging.INFO)
        source.addHandler(self._handler)
        try:
            yield
        finally:
            source.removeHandler(self._handler)
            source.setLevel(level)

    def stage(self, name: str, record: StageRecord) -> None:
        self.current["stages"][name] = asdict(record)
        self.info(f"{name}: {record.output}: wrote {len(record.written)} of {record.n_chunks} "
                  f"chunks ({record.skipped} already complete) in {record.seconds:.1f} s")
        self.save()

    def output(self, kind: str, path: str | Path, step: str, *, name: str | None = None) -> Output:
        """Record an output of the run (see :meth:`RunRecord.add_output`) and save ``run.json``."""
        out = self.record.add_output(kind, path, step, name=name)
        self.save()
        return out

    def finish(self, status: str, summary: dict | None = None) -> None:
        self.current["finished"] = _now()
        self.current["status"] = status
        self.data["status"] = status
        if summary is not None:
            self.current["summary"] = summary
            self.info("summary: " + json.dumps(summary))
        self.info(f"run {status}")
        self.save()
        self.logger.removeHandler(self._handler)
        self._handler.close()

    def save(self) -> None:
        self.data["outputs"] = self.record.to_list()
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)  # a reader never sees a half-written log


def redone_chunks(folder: str | Path) -> list[dict[str, int]]:
    """Per invocation, the number of chunks each stage wrote (from ``run.json``)."""
    data = json.loads((Path(folder) / RUN_JSON).read_text())
    return [{name: len(rec["written"]) for name, rec in inv["stages"].items()}
            for inv in data["invocations"]]


@dataclass
class RunSummary:
    """What a run did; printed at the end and stored in ``run.json``."""

    folder: Path
    galaxies: int = 0
    flagged: int = 0
    failed: int = 0
    seconds: float = 0.0
    stages: dict[str, StageRecord] = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # io.ingest.Skipped: files the ingest left out

    @property
    def computed(self) -> bool:
        """Whether this invocation wrote any chunk (a resume of a finished run writes none)."""
        return any(rec.written for rec in self.stages.values())

    @property
    def throughput(self) -> float:
        """Galaxies per second through the whole chain (NaN when nothing was computed)."""
        return self.galaxies / self.seconds if self.seconds > 0 and self.computed else float("nan")

    def as_dict(self) -> dict:
        rate = round(self.throughput, 3) if self.computed else None
        return {"galaxies": self.galaxies, "flagged": self.flagged, "failed": self.failed,
                "seconds": round(self.seconds, 3),
                "galaxies_per_second": rate,
                "chunks_written": {k: len(v.written) for k, v in self.stages.items()},
                "skipped": [str(s) for s in self.skipped]}

    def __str__(self) -> str:
        lines = [f"{'stage':<24}{'chunks':>8}{'written':>9}{'seconds':>10}"]
        for name, rec in self.stages.items():
            lines.append(f"{name:<24}{rec.n_chunks:>8}{len(rec.written):>9}{rec.seconds:>10.1f}")
        if self.computed:
            lines.append(f"{self.galaxies} spectra processed, {self.flagged} flagged, {self.failed} "
                         f"failed, {self.seconds:.1f} s ({self.throughput:.1f} spectra/s); "
                         f"outputs in {self.folder}")
        else:
            lines.append(f"nothing to compute: every chunk was already complete ({self.galaxies} "
                         f"spectra, {self.flagged} flagged, {self.failed} failed); "
                         f"outputs in {self.folder}")
        if self.skipped:
            from ..io.ingest import summarise

            lines.append(summarise(self.skipped))
        return "\n".join(lines)
