"""The model card: what a saved de-noiser was trained on, and the check against new data.

A saved model is one folder holding the artefact (``model.keras`` or
``model.npz``), ``card.json`` and ``uncertainty.npz`` (the held-out
residual variance per pixel; see :mod:`~survey_denoise.models.base`).  The card records the wavelength grid,
the normalisation convention, the noise model, the training data (id and
size), the hyper-parameters, the loss history, metrics, package versions,
the seed and the seed of the validation split, and (version 2) how the
de-noised pixels' errors are made (``uncertainty``).  :func:`check` compares a
card with a dataset's attrs and refuses a model made for other data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..grid import GRID, Grid
from ..schema import SchemaError

CARD_NAME = "card.json"
CARD_VERSION = 2
"""2: adds the ``uncertainty`` section (and ``uncertainty.npz``); 1 had none."""


MODEL_PACKAGES = ("survey_denoise", "numpy", "scipy", "scikit-learn", "keras", "tensorflow", "tensorflow-cpu")
"""The packages that shape a model's numbers.  scipy is among them: the card's
line-error calibration is fitted with the fast fitter, which uses it."""


def package_versions(names: tuple[str, ...] = MODEL_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out), without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def data_facts(ds) -> dict[str, Any]:
    """Grid, normalisation, noise model and id of a spectra dataset (metadata only).

    Parameters
    ----------
    ds : xarray.Dataset
        Rest-frame spectra dataset.
    """
    grid = Grid.from_dataset(ds).to_dict()
    ids = np.asarray(ds["galaxy"].values)
    digest = hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]
    noise = None
    for step in json.loads(ds.attrs.get("provenance", "[]")):
        if isinstance(step, dict) and step.get("step") in ("degrade", "noise"):
            noise = {k: v for k, v in step.items() if k not in ("step", "version")}
    noise = ds.attrs.get("noise", ds.attrs.get("noise_model", noise))
    if isinstance(noise, str):
        try:
            noise = json.loads(noise)
        except json.JSONDecodeError:
            pass
    return {"grid": grid, "norm_convention": ds.attrs.get("norm_convention", "none"),
            "noise_model": noise, "data_id": digest, "n_galaxy": int(ids.size)}


def write_card(card: Mapping[str, Any], folder: str | Path) -> Path:
    """Write ``card`` as ``folder/card.json`` (sorted keys, so diffs are readable)."""
    path = Path(folder) / CARD_NAME
    path.write_text(json.dumps(dict(card), indent=2, sort_keys=True, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} into a model card")


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of a saved model folder.

    Raises
    ------
    FileNotFoundError
        If ``folder`` or its ``card.json`` is missing.
    SchemaError
        If the card is not readable JSON or lacks the model kind.
    """
    path = Path(folder) / CARD_NAME
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a saved model (no {CARD_NAME})")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SchemaError(f"{path}: model card is not valid JSON ({err})") from None
    if card.get("kind") not in ("pca", "ae", "vae"):
        raise SchemaError(f"{path}: model card names no known model kind (kind={card.get('kind')!r})")
    return card


def card_hash(folder: str | Path) -> str:
    """SHA-256 of a folder's card: changes whenever the model is re-saved."""
    return hashlib.sha256((Path(folder) / CARD_NAME).read_bytes()).hexdigest()


def _grid_text(grid: Mapping[str, Any]) -> str:
    return f"{grid.get('wave_min')}-{grid.get('wave_max')} A, {grid.get('npix')} pixels, " \
           f"{grid.get('spacing', 'log')} spacing"


def check(card: Mapping[str, Any], ds, *, where: str = "model") -> None:
    """Refuse a dataset whose grid or normalisation differs from the model's.

    Parameters
    ----------
    card : mapping
        A model card (:func:`read_card`).
    ds : xarray.Dataset or mapping
        The data (its ``attrs`` and wavelength are read), or a mapping with
        ``grid`` and ``norm_convention`` keys.
    where : str
        Name of the model (its folder), used in messages.

    Raises
    ------
    SchemaError
        Naming both values, e.g. ``model was trained on 'l2'-normalised
        spectra but the data are 'sum'-normalised``.
    """
    facts = data_facts(ds) if hasattr(ds, "data_vars") else dict(ds)
    want, got = card.get("grid") or GRID.to_dict(), facts.get("grid")
    if isinstance(want, str):
        want = json.loads(want)
    if isinstance(got, str):
        got = json.loads(got)
    keys = ("wave_min", "wave_max", "npix", "spacing")
    if got is not None and any(
            (float(want[k]) != float(got[k]) if k != "spacing" else want.get(k, "log") != got.get(k, "log"))
            for k in keys if k in want or k in got):
        raise SchemaError(f"{where} was trained on the grid {_grid_text(want)} but the data are on "
                          f"{_grid_text(got)}; resample the data onto the model's grid or retrain")
    norm_want, norm_got = card.get("norm_convention"), facts.get("norm_convention")
    if norm_want and norm_got and norm_want != norm_got:
        raise SchemaError(f"{where} was trained on '{norm_want}'-normalised spectra but the data are "
                          f"'{norm_got}'-normalised; preprocess with norm='{norm_want}' or retrain")
