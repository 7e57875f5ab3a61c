"""Running the command line as a user does, in a fresh interpreter."""

import subprocess
import sys


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
