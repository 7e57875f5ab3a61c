"""Tests that need an outside service (SLURM, chromium): skip locally, fail under CI."""

import os

import pytest


def under_ci() -> bool:
    """True where the environment says it is continuous integration (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(missing: str | None) -> None:
    """Skip the calling test because ``missing`` says what is absent; fail instead under CI.

    CI installs every service (``.ci/run``), so a skip there would let CI pass
    without ever running the test.
    """
    if missing is None:
        return
    if under_ci():
        pytest.fail(f"CI=true but {missing}", pytrace=False)
    pytest.skip(missing)
