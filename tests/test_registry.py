"""One declaration per stage: the YAML sections, the sub-commands and the plan all come from it."""

from __future__ import annotations

import re

import click
import pytest

from survey_denoise.cli import COMMANDS, cli
from survey_denoise.pipeline import STAGES, ConfigError, PipelineConfig, load_config, plan
from survey_denoise.pipeline.params import cli_fields
from survey_denoise.pipeline.registry import Stages

# Options every store-to-store command has for its own plumbing, not the stage's.
PLUMBING = {"store_in", "store", "out", "cluster", "workers", "overwrite", "resume", "no_progress",
            "noisy", "clean", "kind", "n_search", "search_epochs", "check_only"}


def _command(name: str) -> click.Command:
    return cli.get_command(click.Context(cli), name)


@pytest.mark.parametrize("name", [n for n in STAGES if n in COMMANDS])
def test_every_command_option_is_the_stage_field_with_the_same_default(name):
    spec, command = STAGES[name], _command(name)
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    for field in cli_fields(spec.params):
        if field == "kind":  # train KIND: an argument
            continue
        assert field in options, f"{name}: stages.{name}.{field} has no --{field.replace('_', '-')}"
        info = spec.params.model_fields[field]
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        assert options[field].default == default, (name, field)
        assert options[field].required == info.is_required(), (name, field)
    extra = set(options) - set(cli_fields(spec.params)) - PLUMBING
    assert not extra, f"{name}: options {sorted(extra)} are not declared in stages.{name}"


def test_the_config_sections_are_the_registry_in_run_order():
    assert list(Stages.model_fields) == list(STAGES) == [
        "preprocess", "degrade", "train", "denoise", "fit", "combine", "science"]
    for name, spec in STAGES.items():
        assert Stages.model_fields[name].annotation == (spec.params | None)


def test_a_rule_is_written_once_and_refused_the_same_way_by_both(tmp_path):
    from survey_denoise.cli.common import UserError
    from survey_denoise.cli.params import build

    config = tmp_path / "c.yaml"
    config.write_text("name: c\ninput: {mock: {n: 10}}\noutputs: {dir: out}\n"
                      "stages: {preprocess: {}, degrade: {noise: uniform, exptime: 180}}\n")
    with pytest.raises(ConfigError, match="exptime applies to desi noise only"):
        load_config(config)
    with pytest.raises(UserError, match="exptime applies to desi noise only"):
        build(STAGES["degrade"].params, {"noise": "uniform", "exptime": 180})
    with pytest.raises(UserError, match="--latent: Input should be greater than 0"):
        build(STAGES["train"].params, {"latent": 0})


def test_noise_shorthand_and_registry():
    from survey_denoise.noise import DesiNoise, UniformNoise, make_noise

    degrade = STAGES["degrade"].params
    assert degrade(noise="uniform:0.02").noise_model() == UniformNoise(0.02)
    assert degrade().noise_model() == UniformNoise(0.04)
    assert degrade(noise="desi", exptime=180).noise_model() == DesiNoise(exptime=180)
    assert make_noise("desi:2").scale == 2
    with pytest.raises(ValueError, match="unknown noise 'pink'"):
        make_noise("pink")


def _config(tmp_path) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "t", "input": {"mock": {"n": 250}}, "chunk": 100,
        "outputs": {"dir": str(tmp_path / "run"), "keep": ["preprocessed"]},
        "stages": {"preprocess": {}, "degrade": {"sigma": 0.04}, "denoise": {"model": "m"},
                   "fit": {"stores": ["preprocessed", "denoised"]}},
        "report": {"html": False, "latent": False, "reconstruction": False}})


def test_the_plan_names_every_step_its_inputs_outputs_mode_and_chunks(tmp_path):
    p = plan(_config(tmp_path), cluster="slurm")
    assert [s.name for s in p.steps] == ["mock", "preprocess", "degrade", "denoise", "fit-preprocessed",
                                         "fit-denoised", "products"]
    degrade, denoise = p.step("degrade"), p.step("denoise")
    assert degrade.inputs == ("preprocessed",) and degrade.outputs == ("degraded.zarr",)
    assert not degrade.written and not denoise.written and p.step("preprocess").written
    assert denoise.inputs == ("degraded", "m") and denoise.chunks == 3 and degrade.where == "cluster"
    assert p.step("products").where == "task"
    text = repr(p)
    lines = text.splitlines()
    assert lines[0] == f"plan 't': 250 galaxies in chunks of 100, cluster slurm, outputs in {tmp_path / 'run'}"
    assert re.split(r"\s{2,}", lines[1].strip()) == ["step", "where", "reads", "writes", "mode", "chunks"]
    row = next(line for line in lines if line.strip().startswith("degrade"))
    assert re.split(r"\s{2,}", row.strip()) == ["degrade", "cluster", "preprocessed", "degraded.zarr",
                                               "fused", "3"]


def test_run_check_prints_the_plan_and_starts_nothing(tmp_path):
    from tests._cli import run

    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\ninput: {{mock: {{n: 30}}}}\nchunk: 10\noutputs: {{dir: {tmp_path / 'out'}}}\n"
                      "stages: {preprocess: {}, degrade: {sigma: 0.04}, fit: {}}\nreport: {html: false}\n")
    result = run("run", config, "--check")
    assert result.returncode == 0, result.stderr
    assert "plan 'c': 30 galaxies in chunks of 10, cluster local" in result.stdout
    assert re.search(r"fit-degraded\s+cluster\s+degraded\s+catalogue-degraded.zarr", result.stdout)
    assert not (tmp_path / "out").exists()
