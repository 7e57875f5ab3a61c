"""Pipelines as configuration: a YAML file -> stages run in order, restartably.

``load_config(path)`` reads and checks a config (every problem at once,
before any work); ``plan(config)`` says what each step will read, write
and where it runs (``run --check`` prints it); ``run_pipeline(config, cluster=..., resume=...)`` runs it
on a cluster and writes every stage's output chunk by chunk, with a run log
(``run.json``, ``run.log``) next to the outputs.
"""

from __future__ import annotations

from .config import ConfigError, PipelineConfig, load_config
from .plan import Plan, Step, plan
from .registry import STAGES, StageSpec
from .runlog import redone_chunks
from .runner import RunSummary, run_pipeline

__all__ = ["STAGES", "ConfigError", "PipelineConfig", "Plan", "RunSummary", "StageSpec", "Step",
           "load_config", "plan", "redone_chunks", "run_pipeline"]
