"""Noise: models of it, the DESI noise curve they read, and the ``degrade`` stage.

Modules, one idea each: :mod:`.models` (:class:`UniformNoise`,
:class:`DesiNoise`), :mod:`.desi_curve` (building the DESI curve from
coadds), :mod:`.degrade` (adding noise to rest-frame spectra), :mod:`.redraw`
(a degraded store's noise drawn again, for training).
"""

from __future__ import annotations

from .degrade import degrade, degrade_kernel, dimming_factor
from .desi_curve import build_desi_curve, write_curve
from .models import DESI_CURVE, NOISE_MODELS, DesiNoise, UniformNoise, make_noise
from .redraw import NoiseRecord

__all__ = ["DESI_CURVE", "NOISE_MODELS", "DesiNoise", "NoiseRecord", "UniformNoise", "build_desi_curve",
           "degrade", "degrade_kernel", "dimming_factor", "make_noise", "write_curve"]
