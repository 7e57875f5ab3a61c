"""The ``survey-denoise`` command line.

Each sub-command lives in its own module of this package and is imported
only when it is invoked, so ``survey-denoise info`` does not pay for
importing TensorFlow.  User errors (a missing file, a foreign file, a bad
option, a schema violation) end with a one-line message and exit status 2,
never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

# name -> ("module:function" inside survey_denoise.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("ingest:ingest", "Read SDSS or DESI spectra files into a raw Zarr store."),
    "info": ("info:info", "Summarise a store: sizes, chunks, flags, provenance."),
    "preprocess": ("stages:preprocess", "Shift to the rest frame, resample onto the grid, normalise."),
    "degrade": ("stages:degrade", "Add uniform or DESI-like noise (optionally moved to a new z)."),
    "noise-curve": ("noise:noise_curve", "Build the DESI noise curve from DESI coadd files."),
    "mock": ("mock:mock", "Generate a mock survey with known truth."),
    "train": ("train:train", "Train a PCA, AE or VAE de-noiser."),
    "evaluate": ("train:evaluate", "Test MSE of a saved de-noiser."),
    "recalibrate": ("train:recalibrate", "Measure a saved de-noiser's uncertainty model again."),
    "denoise": ("stages:denoise", "De-noise a store with a saved model."),
    "fit": ("fit:fit", "Measure emission lines into a catalogue (pPXF or fast)."),
    "combine": ("fit:combine", "Combine each de-noised line flux with its input's, by the model's noise gains."),
    "compare": ("fit:compare", "Scatter in dex between two line catalogues."),
    "run": ("run:run", "Run a whole pipeline from a YAML config."),
    "report": ("report:report", "Write an HTML report of a run."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every sub-command (and TensorFlow with them).
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="survey_denoise")
@click.option("-v", "--verbose", is_flag=True,
              help="Show TensorFlow's start-up messages (hidden otherwise), workers' included.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """De-noise galaxy spectra and build emission-line and MZR catalogues."""
    if not verbose:
        from .quiet import quiet_native_logs

        ctx.with_resource(quiet_native_logs())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one-line messages."""
    from .common import USER_ERRORS

    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except USER_ERRORS as err:
        click.echo(f"survey-denoise: error: {err}", err=True)
        sys.exit(2)
