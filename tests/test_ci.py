"""CI honesty: what CI runs, installs and skips is what the README says."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CI_RUN = REPO / ".ci" / "run"
README = REPO / "README.md"


def _pytest(args: list[str], *, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run pytest on this repository's tests in a fresh interpreter."""
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), *args],
                          cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- services under CI


@pytest.mark.parametrize("test, service", [
    ("tests/test_slurm.py", "sinfo"),
    ("tests/test_report.py::test_report_renders_in_headless_chromium", "chromium"),
])
def test_a_missing_service_fails_under_ci_and_skips_otherwise(test, service, tmp_path):
    # An empty PATH hides sinfo and chromium; nothing here touches a running SLURM.
    target = str(REPO / test)
    res = _pytest([target, "-rs"], cwd=REPO, PATH=str(tmp_path), CI="true")
    assert res.returncode == 1, res.stdout[-3000:]
    assert re.search(r"\d+ (failed|error)", res.stdout) and "CI=true but" in res.stdout, res.stdout[-3000:]
    res = _pytest([target, "-rs"], cwd=REPO, PATH=str(tmp_path), CI="")
    assert res.returncode == 0 and "skipped" in res.stdout, res.stdout[-3000:]


def test_shipped_pipelines_are_checked_from_any_working_directory(tmp_path):
    # A decoy pipelines/ folder in the working directory: a cwd-relative glob
    # would read it (and fail on it) instead of the repository's pipelines.
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "decoy.yaml").write_text("name: decoy\n")
    res = _pytest([str(REPO / "tests" / "test_pipeline.py::test_shipped_pipelines_are_valid")],
                  cwd=tmp_path)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout[-3000:]
