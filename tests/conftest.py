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


def pytest_collection_modifyitems(items):
    """Put the files holding end-to-end tests (``slow``, ``slurm``) first.

    Under ``-n 2 --dist loadfile`` each file goes whole to whichever process is
    free, in this order; long files started last would leave one process
    working alone at the end.  The sort is stable, so files stay whole and in
    order within each group.
    """
    heavy = {item.path for item in items
             if item.get_closest_marker("slow") or item.get_closest_marker("slurm")}
    items.sort(key=lambda item: item.path not in heavy)
