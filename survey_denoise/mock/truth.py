"""The truth table of a mock survey: every galaxy property and true line flux.

One row per galaxy, keyed by ``galaxy`` like the line catalogues, written as
Parquet with the unit of every column in the schema metadata (key
``survey_denoise.units``, a JSON object) and the dataset provenance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..schema import truth_variables
from .priors import CLASSES

UNITS_KEY = b"survey_denoise.units"


def truth_table(ds: xr.Dataset) -> pd.DataFrame:
    """The ``true_*`` variables and ``z`` of a mock dataset as a DataFrame.

    Computes only the galaxy-level variables (the spectra are not read).

    Returns
    -------
    pandas.DataFrame
        Columns ``galaxy``, ``z``, ``class`` (name) and every ``true_*``
        variable, in name order: the order of variables read back from Zarr
        is not stable, and a table must not depend on how its store was
        opened (a resumed run writes the same table as an uninterrupted one).
    """
    names = truth_variables(ds)
    if not names:
        raise ValueError("dataset holds no true_* variables: not a mock survey")
    sub = ds[["z", *names]].compute()
    df = pd.DataFrame({"galaxy": sub["galaxy"].values, "z": sub["z"].values})
    for name in names:
        df[name] = sub[name].values
    df["class"] = np.asarray(CLASSES, dtype=object)[df["true_class"].to_numpy()]
    return df


def write_truth(ds: xr.Dataset, path: str | Path, *, rows_per_part: int = 65_536) -> Path:
    """Write :func:`truth_table` of ``ds`` to Parquet with units in the metadata.

    ``ds`` is read ``rows_per_part`` galaxies at a time, each part a row
    group, so memory stays that of one part however large the survey.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    units = {"galaxy": "mock id", "z": "redshift", "class": "spectral class"}
    units.update(json.loads(ds.attrs.get("truth_units", "{}")))
    n = int(ds.sizes["galaxy"])
    writer = None
    try:
        for start in range(0, max(n, 1), rows_per_part):
            table = pa.Table.from_pandas(truth_table(ds.isel(galaxy=slice(start, start + rows_per_part))),
                                         preserve_index=False)
            if writer is None:
                meta = dict(table.schema.metadata or {})
                meta[UNITS_KEY] = json.dumps(units).encode()
                meta[b"survey_denoise.provenance"] = str(ds.attrs.get("provenance", "[]")).encode()
                schema = table.schema.with_metadata(meta)
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table.cast(schema))
    finally:
        if writer is not None:
            writer.close()
    return path


def read_truth(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a truth table and its units."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    units = json.loads((table.schema.metadata or {}).get(UNITS_KEY, b"{}"))
    return table.to_pandas(), units
