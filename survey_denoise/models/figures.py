"""Figures of a training run: loss curves (and the latent space, via :mod:`survey_denoise.plots`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure


def loss_curves(history: Mapping[str, Sequence[float]], *, title: str = "",
                save: str | Path | None = None, estimate: str = "mean") -> Figure:
    """Training and validation loss per epoch (log scale), learning rate below.

    A history with a reconstruction term is shown by that term: the total
    adds the VAE's KL term, or is the Gaussian likelihood of a variance
    head, dominated by ``sum(log v)`` and negative.

    Parameters
    ----------
    history : mapping
        Keras history: ``loss``, optionally ``val_loss``, ``reconstruction``,
        ``val_reconstruction`` and ``learning_rate``.
    estimate : {"mean", "median"}
        The network's spectrum term: squared or absolute error (labels only).
    """
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax, lx = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    spectrum = "Σ √w |Δ|" if estimate == "median" else "½ Σ w Δ²"
    term, ylabel = (("reconstruction", f"reconstruction term ({spectrum})") if history.get("reconstruction")
                    else ("loss", f"loss ({spectrum} [+ KL])"))
    for key, label in ((term, "training"), (f"val_{term}", "validation")):
        if history.get(key):
            epochs = range(1, len(history[key]) + 1)
            ax.plot(epochs, history[key], "o-", ms=2, label=label)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.set_title(title, fontsize=9)
    if history.get("learning_rate"):
        lx.plot(range(1, len(history["learning_rate"]) + 1), history["learning_rate"], "k-")
        lx.set_yscale("log")
    lx.set_ylabel("learning rate")
    lx.set_xlabel("epoch")
    if save is not None:
        fig.savefig(save, dpi=110, format="png")
    return fig
