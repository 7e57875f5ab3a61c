"""What the command line shows while it works: bars in galaxies and epochs, no TensorFlow chatter."""

from __future__ import annotations

import os
import re
import select as real_select
import threading
from pathlib import Path

import click
import pytest
from _cli import run, run_in_process
from _denoise_data import datasets

from survey_denoise.cli import COMMANDS, LazyGroup, quiet
from survey_denoise.cli.quiet import strip_noise
from survey_denoise.io.store import PROGRESS_DIR, write_store

README = Path(__file__).resolve().parent.parent / "README.md"

# TensorFlow 2.21's start-up lines on a CPU machine, and a GPU build's on a machine without one.
TF_LINES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796207347.503843    7374 port.cc:153] oneDNN custom operations are on. You may "
    b"see slightly different numerical results due to floating-point round-off errors from "
    b"different computation orders. To turn them off, set the environment variable "
    b"`TF_ENABLE_ONEDNN_OPTS=0`.",
    b"I0000 00:00:1796207430.474334    8473 cpu_feature_guard.cc:227] This TensorFlow binary is "
    b"optimized to use available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.",
    b"2024-05-01 10:00:00.123456: I external/local_tsl/tsl/cuda/cudart_stub.cc:32] Could not "
    b"find cuda drivers on your machine, GPU will not be used.",
    b"E0000 00:00:1714557600.123456    1234 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
    b"Attempting to register factory for plugin cuDNN when one has already been registered",
]
TF_MARKERS = ("absl::InitializeLog", "oneDNN custom operations", "This TensorFlow binary")


def test_tensorflow_start_up_lines_are_noise_and_nothing_else_is():
    for line in TF_LINES:
        assert strip_noise(line) is None, line
    # A message drawn after a progress bar on the same line: the bar stays.
    bar = b"\rdenoise:   0%|          | 0/40 [00:00<?, ?galaxy/s]"
    assert strip_noise(bar + TF_LINES[1]) == bar
    for kept in (b"survey-denoise: error: raw.zarr: no such store",
                 b"E0000 00:00:1714557600.123456    1234 op_kernel.cc:1840] OP_REQUIRES failed",
                 b"Traceback (most recent call last):", b""):
        assert strip_noise(kept) == kept + b"\n"


def test_the_last_line_written_before_the_filter_stops_is_shown(monkeypatch):
    """A warning printed just before the command ends reaches the terminal.

    The filter's thread waits in ``select``; the command writes its last line
    and sets stop while that wait is ending empty.  The line must still be
    read from the pipe and forwarded, not left there.
    """
    read_fd, write_fd = os.pipe()
    out_read, out_write = os.pipe()
    stop = threading.Event()
    calls = []

    class Interleaved:
        @staticmethod
        def select(r, w, x, timeout):
            calls.append(timeout)
            if len(calls) == 1:  # the wait ends empty; then the command finishes
                os.write(write_fd, b"warning: last words\n")
                stop.set()
                return [], [], []
            return real_select.select(r, w, x, timeout)

    monkeypatch.setattr(quiet, "select", Interleaved)
    quiet._pump(read_fd, out_write, stop)
    os.close(out_write)
    shown = b""
    while chunk := os.read(out_read, 1 << 16):
        shown += chunk
    for fd in (read_fd, write_fd, out_read):
        os.close(fd)
    assert shown == b"warning: last words\n"
    assert calls[-1] == 0  # once stopping, the pipe is drained without waiting


# ---------------------------------------------------------------- bars count galaxies


def test_store_progress_counts_galaxies_not_chunks(tmp_path, capsys):
    noisy, _ = datasets(25, seed=3)
    calls = []
    write_store(noisy.chunk({"galaxy": 10}), tmp_path / "a.zarr",
                progress=lambda done, total: calls.append((done, total)))
    assert calls == [(10, 25), (20, 25), (25, 25)]  # chunks of 10, 10 and 5 galaxies
    # Resuming starts the bar at the galaxies already written.
    (tmp_path / "a.zarr" / PROGRESS_DIR / "chunk-000001").unlink()
    calls.clear()
    write_store(noisy.chunk({"galaxy": 10}), tmp_path / "a.zarr", resume=True,
                progress=lambda done, total: calls.append((done, total)))
    assert calls == [(25, 25)]
    write_store(noisy.chunk({"galaxy": 10}), tmp_path / "b.zarr", progress=True, label="demo")
    err = capsys.readouterr().err
    assert "25/25" in err and "galaxy/s" in err and "chunk" not in err


# ---------------------------------------------------------------- --no-progress and --cluster


def _commands() -> dict[str, click.Command]:
    group = LazyGroup()
    found = {}
    for name in COMMANDS:
        command = group.get_command(None, name)
        subs = getattr(command, "commands", None)
        for sub, sub_command in (subs or {name: command}).items():
            found[name if subs is None else f"{name} {sub}"] = sub_command
    return found


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_every_command_that_shows_a_bar_takes_no_progress():
    shows_bar = {"ingest sdss", "ingest desi", "ingest auto", "mock", "preprocess", "degrade",
                 "denoise", "fit", "run", "train"}
    commands = _commands()
    assert shows_bar <= set(commands)
    for name in shows_bar:
        assert "--no-progress" in _options(commands[name]), name


def test_readme_names_the_commands_that_take_cluster():
    text = " ".join(README.read_text().split())
    claim = re.search(r"The commands that compute \((.*?)\) take `--cluster", text)
    assert claim, "README: which commands take --cluster"
    listed = set(re.findall(r"`([a-z][\w-]*)`", claim.group(1)))
    without = re.search(r"`--cluster[^;]*; (.*?) start no cluster", text)
    assert without, "README: which commands start no cluster"
    not_listed = set(re.findall(r"`([a-z][\w-]*)`", without.group(1)))
    commands = _commands()
    takes = {name.split()[0] for name, c in commands.items() if "--cluster" in _options(c)}
    assert listed == takes and not_listed == set(COMMANDS) - takes
    assert "Every command takes `--cluster" not in text


# ---------------------------------------------------------------- train: a bar over epochs


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    noisy, clean = datasets(40, seed=5)
    for name, ds in (("noisy", noisy), ("clean", clean)):
        write_store(ds.chunk({"galaxy": 10}), root / f"{name}.zarr", progress=False)
    return root



def test_train_shows_epochs_with_the_loss(stores, tmp_path, capsys):
    args = ["train", "ae", "--noisy", stores / "noisy.zarr", "--clean", stores / "clean.zarr",
            "--latent", 2, "--epochs", 3]
    code, out, err = run_in_process([*args, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    assert re.search(r"ae: 100%.*\| 3/3 \[.*epoch.*loss=[\d.e+-]+, val_loss=[\d.e+-]+\]", err), err
    code, out, err = run_in_process([*args, "--out", tmp_path / "b", "--no-progress"], capsys)
    assert code == 0, err
    assert "epoch" not in err and "%|" not in err
    assert "saved" in out


# ---------------------------------------------------------------- TensorFlow's start-up lines


@pytest.fixture(scope="module")
def keras_model(stores, tmp_path_factory):
    from survey_denoise.io.store import open_store
    from survey_denoise.models import model_class

    path = tmp_path_factory.mktemp("model") / "ae"
    model = model_class("ae")(2, units=[16, 8], epochs=1)
    model.fit(open_store(stores / "noisy.zarr"), open_store(stores / "clean.zarr"))
    model.save(path)
    return path


def test_denoise_on_a_local_cluster_shows_no_tensorflow_start_up_lines(stores, keras_model,
                                                                        tmp_path, monkeypatch):
    # TensorFlow prints its oneDNN line (before absl's logging starts, so past
    # TF_CPP_MIN_LOG_LEVEL) only where oneDNN is on, by default only on some CPUs:
    # switched on, every machine prints it and the test can fail on every machine.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    args = ["denoise", stores / "noisy.zarr", "--model", keras_model, "--workers", 2]
    res = run(*args, "--out", tmp_path / "a.zarr")
    assert res.returncode == 0, res.stderr
    for marker in TF_MARKERS:
        assert marker not in res.stderr, res.stderr
    assert "40/40" in res.stderr and "galaxy/s" in res.stderr  # the bar itself still shows
    assert "denoise: 40 galaxies" in res.stdout

    # --verbose shows them: the driver's and the workers' (one process id each at least);
    # --no-progress drops the bar.
    res = run("--verbose", *args, "--out", tmp_path / "c.zarr", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "%|" not in res.stderr and "40/40" not in res.stderr
    assert "absl::InitializeLog" in res.stderr
    pids = set(re.findall(r"^I\d{4} [\d:.]+ +(\d+) port\.cc", res.stderr, re.M))
    assert len(pids) >= 2, res.stderr
