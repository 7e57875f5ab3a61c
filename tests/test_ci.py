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


# ---------------------------------------------------------------- one install, one test command


def _readme_block_after(marker: str) -> str:
    text = README.read_text()
    assert marker in text, marker
    block = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return block.strip()


def _commands(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_ci_ends_with_the_readme_test_command():
    quoted = _readme_block_after("The test command that `.ci/run` ends with is")
    assert quoted == 'python -m pytest -q -n 2 -m "slow or not slow"'
    assert _commands(CI_RUN)[-1] == quoted


def test_the_readme_test_install_is_the_one_ci_uses():
    local = _readme_block_after("install what the tests need")
    install, _, test = local.partition(" && ")
    assert install == "bash scripts/install-dev.sh" and test.startswith("python -m pytest")
    ci = _commands(CI_RUN)
    assert install in ci
    # No second, drifting list of packages in CI.
    assert not [line for line in ci if "pip install" in line], ci
    script = _commands(REPO / "scripts" / "install-dev.sh")
    pip = [line for line in script if "pip install" in line and "--upgrade pip" not in line]
    assert any('-e ".[cpu,test]"' in line for line in pip), pip
    assert any(line.endswith("--no-deps fastspecfit") for line in pip), pip
    assert all("constraints/ci.txt" in line or "PIN" in line for line in pip), pip
    assert 'PIN=(-c constraints/ci.txt)' in script


def test_constraints_pin_every_dependency_inside_the_pyproject_ranges():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in _commands(REPO / "constraints" / "ci.txt"):
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = version
    assert "survey-denoise" not in pins  # the package itself is installed from the checkout
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needed = [Requirement(r) for r in project["dependencies"] + extras["cpu"] + extras["test"]]
    needed.append(Requirement("fastspecfit"))
    for req in needed:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints/ci.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints/ci.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"
    assert "tensorflow-cpu" in pins and "tensorflow" not in pins


# ---------------------------------------------------------------- system packages


def _system_block() -> str:
    text = CI_RUN.read_text()
    start = text.index("# --- system packages")
    return text[start:text.index("# --- Python environment")]


@pytest.mark.parametrize("present, expect", [
    ({"python3": True, "git": True, "chromium": True}, None),
    ({"python3": False, "git": False, "chromium": True}, "install -y -qq python3-venv git"),
    ({"python3": True, "git": True, "chromium": False}, "install -y -qq chromium"),
])
def test_ci_installs_python3_venv_and_git_only_when_missing(present, expect, tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = tmp_path / "apt.log"

    def stub(name: str, body: str) -> None:
        (stubs / name).write_text(f"#!/bin/sh\n{body}\n")
        (stubs / name).chmod(0o755)

    stub("apt-get", f'echo "$*" >> {calls}')
    # python3 without ensurepip (Debian without python3-venv) fails the import check.
    stub("python3", "exit 0" if present["python3"] else "exit 1")
    for tool in ("git", "chromium"):
        if present[tool]:
            stub(tool, "exit 0")
    res = subprocess.run(["/bin/bash", "-euo", "pipefail", "-c", _system_block()],
                         env={"PATH": str(stubs)}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    log = calls.read_text().splitlines() if calls.exists() else []
    if expect is None:
        assert log == []
    else:
        assert log == ["update -qq", expect]
