"""Random streams keyed by galaxy, so results do not depend on chunking.

Every random draw that touches a galaxy (its mock properties, the noise
added to it) comes from a stream seeded by ``(seed, purpose, galaxy id)``.
Re-chunking a store, changing the number of workers or resuming a run that
was killed therefore reproduces exactly the same numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np


def _key(galaxy_id: object) -> int:
    if isinstance(galaxy_id, (int, np.integer)):
        return int(galaxy_id) & 0xFFFF_FFFF_FFFF_FFFF
    return zlib.crc32(str(galaxy_id).encode())


def galaxy_rng(seed: int, purpose: str, galaxy_id: object) -> np.random.Generator:
    """Generator for one galaxy and one purpose (e.g. ``"noise"``, ``"mock"``)."""
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode()), _key(galaxy_id)])


def galaxy_rngs(seed: int, purpose: str, galaxy_ids: Iterable[object]) -> list[np.random.Generator]:
    """One generator per galaxy; see :func:`galaxy_rng`."""
    return [galaxy_rng(seed, purpose, g) for g in galaxy_ids]


def standard_normal(seed: int, purpose: str, galaxy_ids: Iterable[object], npix: int) -> np.ndarray:
    """Standard-normal draws of shape ``(n_galaxy, npix)``, float32, one stream per galaxy row."""
    ids = list(galaxy_ids)
    out = np.empty((len(ids), npix), dtype=np.float32)
    for i, g in enumerate(ids):
        out[i] = galaxy_rng(seed, purpose, g).standard_normal(npix, dtype=np.float32)
    return out
