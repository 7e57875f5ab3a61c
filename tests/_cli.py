"""Running the command line as a user does, in a fresh interpreter."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run(*args: object) -> subprocess.CompletedProcess:
    """``survey-denoise ARGS`` through ``survey_denoise.cli.main``."""
    return subprocess.run(
        [sys.executable, "-c", "from survey_denoise.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 and exactly one error line holding every fragment, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def run_in_process(argv, capsys) -> tuple[int, str, str]:
    """``survey-denoise ARGV`` in this process: (exit code, stdout, stderr) from pytest's capsys."""
    from survey_denoise.cli import main

    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as err:
        code = err.code
    out = capsys.readouterr()
    return code, out.out, out.err


def kill_once_written(argv: list, marker: Path, timeout: float = 300) -> None:
    """Start ``argv`` in its own session and SIGKILL the whole session as soon as ``marker`` exists."""
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while not Path(marker).exists():
            assert proc.poll() is None, f"{argv[0]} ended before writing {marker}"
            assert time.time() < deadline, f"no {marker} after {timeout} s"
            time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
