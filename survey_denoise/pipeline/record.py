"""The run record: every output a run made, in ``run.json`` under ``outputs``.

A run folder's ``run.json`` (:mod:`~survey_denoise.pipeline.runlog`) holds
the config, versions, per-invocation timings and, through this module, one
entry per output::

    {"kind": "catalogue", "name": "denoised", "path": "catalogue-denoised.parquet",
     "step": "fit-denoised"}

``kind`` is one of :data:`KINDS`; ``path`` is relative to the run folder;
``step`` is the stage that made it; ``name`` says what the output is within
its kind (the store a catalogue measures, ``table6`` for a table).  The
report reads only this record, so whatever writes a run folder (the runner
today, a planner/executor later) writes the same entries.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

KINDS = ("store", "catalogue", "model", "table", "figure", "report")
"""Kinds of output a run records."""


@dataclass(frozen=True)
class Output:
    """One recorded output.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    name : str
        What it is within its kind (``denoised``, ``table6``, ``figure9-noisy``).
    path : str
        Relative to the run folder (POSIX separators).
    step : str
        The stage that made it.
    """

    kind: str
    name: str
    path: str
    step: str


class RunRecord:
    """The outputs of one run folder, kept in the order they were made.

    Parameters
    ----------
    folder : Path
        The run folder; paths are stored relative to it.
    entries : list of dict, optional
        ``run.json``'s ``outputs`` list (a resumed run keeps what it had).
    """

    def __init__(self, folder: str | Path, entries: list[dict] | None = None) -> None:
        self.folder = Path(folder)
        self._outputs: list[Output] = []
        for entry in entries or []:
            self.add_output(entry["kind"], entry["path"], entry["step"], name=entry.get("name"))

    def add_output(self, kind: str, path: str | Path, step: str, *, name: str | None = None) -> Output:
        """Record an output; an entry with the same path is replaced.

        Parameters
        ----------
        kind : str
            One of :data:`KINDS`.
        path : str or Path
            Relative to the run folder, or absolute inside it.
        step : str
            The stage that made it.
        name : str, optional
            What it is within its kind (default: the file name without suffix).

        Raises
        ------
        ValueError
            If ``kind`` is unknown or ``path`` lies outside the run folder.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown output kind '{kind}' (known: {', '.join(KINDS)})")
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.folder.resolve() if not self.folder.is_absolute() else self.folder)
            except ValueError:
                raise ValueError(f"{path}: not inside the run folder {self.folder}") from None
        out = Output(kind, name or p.name.split(".")[0], p.as_posix(), step)
        self._outputs = [o for o in self._outputs if o.path != out.path] + [out]
        return out

    def outputs(self, kind: str | None = None) -> list[Output]:
        """Recorded outputs, all or of one ``kind``, in the order they were made."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown output kind '{kind}' (known: {', '.join(KINDS)})")
        return [o for o in self._outputs if kind is None or o.kind == kind]

    def get(self, kind: str, name: str) -> Output | None:
        """The output of ``kind`` called ``name`` (None if the run did not make it)."""
        return next((o for o in self.outputs(kind) if o.name == name), None)

    def path(self, output: Output) -> Path:
        """Where ``output`` is on disk."""
        return self.folder / output.path

    def to_list(self) -> list[dict]:
        """The JSON form stored under ``run.json``'s ``outputs``."""
        return [asdict(o) for o in self._outputs]

    @classmethod
    def read(cls, folder: str | Path) -> RunRecord:
        """The record of a run folder.

        Raises
        ------
        FileNotFoundError
            If the folder holds no ``run.json``.
        ValueError
            If ``run.json`` is not JSON or its ``outputs`` is not a list of entries.
        """
        folder = Path(folder)
        path = folder / "run.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no run record")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); fix or remove it") from None
        entries = data.get("outputs", []) if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and {"kind", "path", "step"} <= set(e) for e in entries):
            raise ValueError(f"{path}: 'outputs' must be a list of {{kind, name, path, step}} entries")
        return cls(folder, entries)

    def __repr__(self) -> str:
        counts = {k: len(self.outputs(k)) for k in KINDS if self.outputs(k)}
        return f"RunRecord({str(self.folder)!r}, {counts})"
