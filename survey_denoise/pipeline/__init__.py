"""Pipelines as configuration: a YAML file -> stages run in order, restartably.

``load_config(path)`` reads and checks a config (every problem at once,
before any work); ``run_pipeline(config, cluster=..., resume=...)`` runs it
on a cluster and writes every stage's output chunk by chunk, with a run log
(``run.json``, ``run.log``) next to the outputs.
"""

from __future__ import annotations

from .config import ConfigError, PipelineConfig, load_config
from .runlog import redone_chunks
from .runner import RunSummary, run_pipeline

__all__ = ["ConfigError", "PipelineConfig", "RunSummary", "load_config", "redone_chunks",
           "run_pipeline"]
