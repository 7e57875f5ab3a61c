"""A run's outputs folder: whether a run may start there, and what it reads from elsewhere.

A pipeline writes everything under ``outputs.dir`` and nothing else.  Before
a cluster starts, :func:`check_folder` refuses a folder that holds a
finished or different run (unless resumed or overwritten) and an outputs
folder that overlaps a file the run reads (:func:`read_inputs`).
"""

from __future__ import annotations

import json
import shutil
from glob import glob
from pathlib import Path

from ..io.outputs import check_overlap
from .config import ConfigError, PipelineConfig
from .runlog import RunLog


def check_folder(config: PipelineConfig, resume: bool, overwrite: bool = False) -> dict:
    """Refuse to start over a finished or different run; return the config as JSON data.

    Parameters
    ----------
    config : PipelineConfig
        The run's config.
    resume : bool
        Finish the run in ``outputs.dir``.
    overwrite : bool
        The run in ``outputs.dir`` will be replaced: nothing to refuse.

    Raises
    ------
    FileExistsError
        If the outputs folder holds a run and neither ``resume`` nor ``overwrite`` is set.
    ConfigError
        If resuming a run that was started with another config.
    """
    folder = Path(config.outputs.dir)
    check_overlap([folder], read_inputs(config))
    recorded = RunLog.recorded_config(folder) if folder.exists() else None
    mine = json.loads(config.model_dump_json())
    if overwrite:
        return mine
    if recorded is not None and not resume:
        raise FileExistsError(f"{folder} holds a run already; pass --resume to finish it, "
                              "--overwrite to replace it, or --out DIR to write elsewhere")
    if recorded is not None and recorded != mine:
        changed = sorted(k for k in set(recorded) | set(mine) if recorded.get(k) != mine.get(k))
        raise ConfigError(f"{folder}: cannot resume, the config changed since the run "
                          f"started ({', '.join(changed)}); pass --overwrite to replace the "
                          "run, or --out DIR to write elsewhere")
    return mine


def clear_run(folder: Path) -> None:
    # Only a folder holding a run log is removed: outputs.dir could name a
    # folder that holds something else.
    if RunLog.recorded_config(folder) is not None:
        shutil.rmtree(folder)


def read_inputs(config: PipelineConfig) -> list[Path]:
    """Every file or folder a run reads that it did not make itself."""
    found: list[Path] = []
    if config.input.kind == "store":
        found += [config.input.store.path, config.input.store.truth]
    elif config.input.kind == "files":
        found += [Path(p) for pattern in config.input.files.paths for p in glob(pattern)]
    st = config.stages
    if st.denoise is not None and st.denoise.model != "train":
        found.append(Path(st.denoise.model))
    if st.fit is not None and st.fit.templates is not None:
        found.append(Path(st.fit.templates))
    return [p for p in found if p is not None]
