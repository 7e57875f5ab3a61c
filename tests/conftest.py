"""Suite-wide guards."""

import dask
import pytest


@pytest.fixture(autouse=True)
def _no_leaked_scheduler():
    """Fail the test that leaves a global Dask scheduler behind.

    A client closed out of order restores a stale ``scheduler`` setting, and
    every later ``compute`` in the session then asks for a client that no
    longer exists; catching it here names the test that leaked it.
    """
    before = dask.config.get("scheduler", None)
    yield
    after = dask.config.get("scheduler", None)
    if after != before:
        dask.config.set(scheduler=before)
        pytest.fail(f"test left dask scheduler={after!r} (was {before!r})")
