"""A training that outlives its process: its whole state after an epoch, and a resume from it.

A network trained on 10^5 spectra runs for most of an hour; a killed
driver, a node's walltime or a logout should not cost it. After the first
epoch, the last, and an epoch at least :data:`SAVE_EVERY` seconds after
the previous save, :class:`TrainingCheckpoint` writes, atomically, into one folder

- ``state.npz``: every variable of the network (its dropout and sampling
  seed generators included), the optimizer's (its step, learning rate and
  moments), and the weights of the best epoch so far;
- ``state.json``: the epochs done, the history, the plateau rule's counters,
  the best loss and epoch, why the training stopped early if it did, and a
  fingerprint of the training (its settings, the galaxies it trains and
  validates on).

A training started again with the same fingerprint loads them and goes on
from the next epoch. The batches, noise draws, coverage masks and dropout
masks of every later epoch are those an uninterrupted training would have
used (they are functions of the seed and the epoch, or of restored seed
generators), so on the same machine the resumed network equals the
uninterrupted one to the last bit. A checkpoint with another fingerprint is
set aside and the training starts from its first epoch.

The epoch cap is not part of the fingerprint: a training that ended at its
cap, not by the plateau rule, goes on under a larger cap from the state its
last epoch left, as if it had been given that cap from the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATE_JSON = "state.json"
STATE_NPZ = "state.npz"

SAVE_EVERY = 30.0
"""Seconds between two saves (s): a kill costs at most this much training, and a
network of a few million weights (~120 MB of state, ~0.2 s to write) spends
under 1 % of its time saving even where an epoch takes one second."""


def fingerprint(params: dict[str, Any], npix: int, train_rows: np.ndarray,
                validation_rows: np.ndarray, content: list[np.ndarray] = ()) -> str:
    """A digest of what makes two trainings the same one.

    Parameters
    ----------
    params : dict
        The training's settings (JSON-able).
    npix : int
        Pixels per spectrum.
    train_rows, validation_rows : ndarray of int
        The split's galaxies.
    content : list of ndarray
        Arrays that stand for the data's values (a chunk, the standardisation's means).
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    digest.update(str(npix).encode())
    for rows in (train_rows, validation_rows):
        digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
        digest.update(b"|")
    for array in content:
        digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


class TrainingCheckpoint:
    """The per-epoch state of one training in ``folder``.

    Parameters
    ----------
    folder : str or Path
        Where the state lives (made on the first save).
    key : str
        The training's :func:`fingerprint`; a state with another key is not resumed.
    """

    def __init__(self, folder: str | Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key

    def load(self) -> dict[str, Any] | None:
        """The saved state (``meta`` and ``arrays``), or None if there is none of this training."""
        meta_path, arrays_path = self.folder / STATE_JSON, self.folder / STATE_NPZ
        if not (meta_path.exists() and arrays_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            with np.load(arrays_path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # damaged: start again
            log.info("training checkpoint in %s unreadable (%s): starting from the first epoch",
                     self.folder, err)
            return None
        if meta.get("key") != self.key or meta.get("arrays") != arrays.get("token", np.array("")).item():
            log.info("training checkpoint in %s is of another training: starting from the first epoch",
                     self.folder)
            return None
        return {"meta": meta, "arrays": arrays}

    def save(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Write one epoch's state; a reader sees the previous epoch's or this one's, never half."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # The two files are replaced one after the other; a token ties them so
        # a kill between the two replacements reads as no state, not a mixed one.
        token = hashlib.sha256(f"{self.key}:{meta['epochs_done']}".encode()).hexdigest()
        tmp = self.folder / (STATE_NPZ + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, token=np.array(token), **arrays)
        os.replace(tmp, self.folder / STATE_NPZ)
        tmp = self.folder / (STATE_JSON + ".tmp")
        tmp.write_text(json.dumps({**meta, "key": self.key, "arrays": token}))
        os.replace(tmp, self.folder / STATE_JSON)


def model_state(model) -> dict[str, np.ndarray]:
    """Every variable of a compiled, built Keras model and of its optimizer, as arrays."""
    out = {f"var_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    out.update({f"opt_{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    return out


def restore_model_state(model, arrays: dict[str, np.ndarray]) -> None:
    """Assign what :func:`model_state` saved; refuse a state of another network."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for prefix, variables in (("var", model.variables), ("opt", model.optimizer.variables)):
        saved = sorted((k for k in arrays if k.startswith(prefix + "_")),
                       key=lambda k: int(k.split("_")[1]))
        if len(saved) != len(variables):
            raise ValueError(f"checkpoint holds {len(saved)} {prefix} variables, the network "
                             f"{len(variables)}")
        for key, var in zip(saved, variables, strict=True):
            if tuple(arrays[key].shape) != tuple(var.shape):
                raise ValueError(f"checkpoint's {key} has shape {arrays[key].shape}, "
                                 f"the network's {var.path} {tuple(var.shape)}")
            var.assign(arrays[key])


def checkpoint_callback(checkpoint: TrainingCheckpoint, plateau, rule, history: dict[str, list]):
    """A Keras callback saving the training's state after an epoch.

    It saves after the first epoch, after the last (the cap, or a stop by
    the plateau rule), and in between whenever :data:`SAVE_EVERY` seconds
    have passed since the last save. It must come after ``plateau`` (the
    :func:`~survey_denoise.models.training.plateau_callback` of ``rule``)
    in the callback list, so the learning rate, the rule's counters and the
    stop it set are those saved. ``history`` (the epochs before a resume,
    or empty) is extended in place with each epoch's logs.
    """
    import time

    import keras

    class Checkpoint(keras.callbacks.Callback):
        last = -math.inf

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            final = self.model.stop_training or epoch + 1 >= self.params.get("epochs", math.inf)
            if not final and time.monotonic() - self.last < SAVE_EVERY:
                return
            self.last = time.monotonic()
            arrays = model_state(self.model)
            if plateau.best_weights is not None:
                arrays.update({f"best_{i}": np.asarray(w) for i, w in enumerate(plateau.best_weights)})
            meta = {"epochs_done": epoch + 1, "history": history,
                    "rule": {"reference": rule.reference, "wait": rule.wait, "reduced": rule.reduced},
                    "best_loss": plateau.best_loss if np.isfinite(plateau.best_loss) else None,
                    "best_epoch": plateau.best_epoch, "ended": plateau.ended}
            checkpoint.save(meta, arrays)

    return Checkpoint()


def resume(state: dict[str, Any], model, plateau, rule) -> tuple[int, dict[str, list], str | None]:
    """Put a loaded state back into the network, the plateau callback and its rule.

    Returns
    -------
    epochs_done : int
        Epochs the state holds; training goes on at this (0-based) epoch.
    history : dict
        The per-epoch logs of those epochs.
    ended : str or None
        Why the training had stopped early (``"plateau rule"``, ``"non-finite
        loss"``), or None if it had not: it goes on up to the cap.
    """
    meta, arrays = state["meta"], state["arrays"]
    restore_model_state(model, arrays)
    saved = meta["rule"]
    rule.reference, rule.wait, rule.reduced = saved["reference"], saved["wait"], saved["reduced"]
    plateau.best_loss = np.inf if meta["best_loss"] is None else float(meta["best_loss"])
    plateau.best_epoch = meta["best_epoch"]
    best = sorted((k for k in arrays if k.startswith("best_")), key=lambda k: int(k.split("_")[1]))
    plateau.best_weights = [arrays[k] for k in best] or None
    # States saved before the reason was recorded say only whether the rule stopped it.
    plateau.ended = meta.get("ended", "plateau rule" if meta.get("stopped") else None)
    return int(meta["epochs_done"]), {k: list(v) for k, v in meta["history"].items()}, plateau.ended
