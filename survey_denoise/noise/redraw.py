"""A degraded store's noise, drawn again: fresh realisations for training.

A store made by :func:`~survey_denoise.noise.degrade.degrade` records how
it was made: the noise model and its options, the seed and ``z_target``
(``attrs["noise"]``), the cosmology (``attrs["cosmology"]``) and the
normalisation (``attrs["norm_convention"]``).  :class:`NoiseRecord` reads
that record back and :meth:`NoiseRecord.draw` runs the same kernel,
:func:`~survey_denoise.noise.degrade.degrade_kernel`, on the clean spectra
the store was made from, with a seed derived from a key (``"epoch-3"``):
the same noise model, a new realisation, reproducible from the key.  With
no key it uses the record's own seed and gives back the store itself, which
the tests use to prove the record complete.

Why a de-noiser wants this: trained on one fixed noise draw per galaxy, a
network fits those draws.  On the mock the training galaxies' reconstruction
term ends 2-3 times lower than new galaxies', and a variance head trained on
those residuals falls short on new galaxies by 4-13 times
(docs/models.md, *Where a de-noised pixel's error comes from*).  A new draw
every epoch leaves only the signal to learn.  This is the "noise
augmentation" long used for de-noising networks (e.g. Zhang et al. 2017,
IEEE TIP 26, 3142, who draw the noise afresh for every batch).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import numpy as np

from .degrade import degrade_kernel
from .models import DESI_CURVE, DesiNoise, UniformNoise


@dataclass(frozen=True)
class NoiseRecord:
    """What :func:`~survey_denoise.noise.degrade.degrade` did to a store, enough to do it again.

    Attributes
    ----------
    noise : UniformNoise or DesiNoise
        The noise model, rebuilt from its description.
    seed : int
        The seed the store was degraded with.
    z_target : float or None
        The redshift every galaxy was moved to (None: left where it was).
    cosmology : str
        astropy cosmology name of the distances.
    method : str
        Normalisation convention of the clean spectra (re-applied after the noise).
    """

    noise: UniformNoise | DesiNoise
    seed: int
    z_target: float | None
    cosmology: str
    method: str

    @classmethod
    def from_dataset(cls, noisy, clean) -> NoiseRecord:
        """The record of ``noisy``, made by degrading ``clean``.

        Raises
        ------
        ValueError
            If ``noisy`` was not made by ``degrade`` (no ``attrs["noise"]``),
            its noise used a curve other than the shipped one (which cannot
            be found again), or the rebuilt model does not describe itself
            as the record does.
        """
        raw = noisy.attrs.get("noise")
        if not isinstance(raw, str):
            raise ValueError("the noisy store records no noise (attrs['noise']): drawing its noise "
                             "again needs a store made by 'degrade'")
        rec = json.loads(raw)
        model = rec.get("model")
        if model == "uniform":
            noise = UniformNoise(sigma=rec["sigma"], combine=rec["combine"], renormalise=rec["renormalise"])
        elif model == "desi":
            if rec.get("curve") != DESI_CURVE.name:
                raise ValueError(f"the noisy store's DESI noise used the curve {rec.get('curve')!r}, not "
                                 f"the shipped {DESI_CURVE.name}: it cannot be drawn again")
            noise = DesiNoise(curve=DESI_CURVE, scale=rec["scale"], exptime=rec["exptime"],
                              combine=rec["combine"], renormalise=rec["renormalise"])
        else:
            raise ValueError(f"the noisy store's noise model {model!r} is not one this version can draw")
        described = json.loads(json.dumps(noise.describe(), default=str))
        differ = sorted(k for k, v in described.items() if rec.get(k) != v)
        if differ:
            raise ValueError(f"the noisy store's noise record differs from the rebuilt model in {differ}")
        cosmology = json.loads(noisy.attrs["cosmology"])["name"] if "cosmology" in noisy.attrs else "Planck18"
        return cls(noise, int(rec["seed"]), rec.get("z_target"), cosmology,
                   clean.attrs.get("norm_convention", "none"))

    def seed_for(self, key: str | None) -> int:
        """The seed of draw ``key``: the record's own for None, else one derived from both."""
        if key is None:
            return self.seed
        return int(np.random.SeedSequence([self.seed, zlib.crc32(key.encode())]).generate_state(1)[0])

    def draw(self, clean, rest_edges: np.ndarray, key: str | None = None) -> tuple[np.ndarray, ...]:
        """Noisy flux, ivar and mask of the clean spectra ``clean`` (a loaded chunk), draw ``key``.

        Parameters
        ----------
        clean : xarray.Dataset
            In-memory rest-frame spectra with ``flux``, ``ivar``, ``mask``,
            ``z``, ``norm`` and ``flags`` (the galaxies of one chunk).
        rest_edges : ndarray (npix + 1,)
            The grid's pixel edges, Angstrom.
        key : str, optional
            Names the realisation; None gives the store's own.

        Returns
        -------
        flux, ivar : ndarray (n, npix), float32
            In the store's normalisation; ivar in (normalised flux)^-2.
        mask : ndarray (n, npix), bool
        """
        flux, ivar, mask, *_ = degrade_kernel(
            clean["flux"].values, clean["ivar"].values, clean["mask"].values, clean["z"].values,
            clean["norm"].values, clean["flags"].values, clean["galaxy"].values, noise=self.noise,
            seed=self.seed_for(key), z_target=self.z_target, cosmology=self.cosmology,
            method=self.method, rest_edges=np.asarray(rest_edges, np.float64))
        return flux, ivar, mask

    def describe(self) -> dict:
        """JSON-ready summary for a model card."""
        return {**self.noise.describe(), "seed": self.seed, "z_target": self.z_target}
