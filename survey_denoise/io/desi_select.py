"""Which DESI targets an ingest keeps: spectral type, redshift warnings, redshift range, targeting bits.

A :class:`TargetSelection` is applied by :func:`~survey_denoise.io.desi.read_desi`
to a coadd's FIBERMAP and its redrock REDSHIFTS *before* any spectrum is read,
so targets it drops never reach the store.  The cuts run in a fixed order
(targeting bits, SPECTYPE, ZWARN, redshift range) and each counts the targets
it removed among those the earlier cuts kept, so the counts add up to the
targets dropped.

Targeting bits are looked up by name in ``data/desi_targetmask.ecsv`` (copied
from desitarget's main-survey ``targetmask.yaml``; see its header), never
hard-coded here.  Only the main-survey FIBERMAP columns ``DESI_TARGET`` and
``BGS_TARGET`` are known: an SV or commissioning file (``SV1_DESI_TARGET``,
``CMX_TARGET``...) numbers its bits differently and is refused with a reason.

A target that redrock did not fit (not in REDSHIFTS) fails every redshift
cut (SPECTYPE, ZWARN, z): nothing is known about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from .registry import ReadError

CUTS = ("target", "spectype", "zwarn", "z")
"""Names of the cuts, in the order they are applied and reported."""


@cache
def target_bits() -> dict[str, tuple[str, int]]:
    """Targeting bit names -> (FIBERMAP column, bit number), from ``data/desi_targetmask.ecsv``."""
    from astropy.table import Table

    path = resources.files("survey_denoise") / "data" / "desi_targetmask.ecsv"
    with resources.as_file(path) as p:
        table = Table.read(p, format="ascii.ecsv")
    return {str(row["name"]): (str(row["column"]), int(row["bit"])) for row in table}


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Comma-separated text or a sequence of names -> upper-case names, empty ones dropped."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [
        part for item in value for part in str(item).split(",")]
    return tuple(dict.fromkeys(s.strip().upper() for s in items if s.strip()))


@dataclass(frozen=True)
class TargetSelection:
    """Cuts on DESI targets applied at ingest; the default keeps everything.

    Attributes
    ----------
    spectype : tuple of str
        Keep only these redrock SPECTYPEs (e.g. ``("GALAXY",)``); empty: any.
    zwarn_max : int, optional
        Keep only ``ZWARN <= zwarn_max`` (``0``: no warning at all).
    z_min, z_max : float, optional
        Keep only ``z_min <= Z <= z_max`` (redshift, dimensionless).
    target : tuple of str
        Keep targets with *any* of these targeting bits set (names from
        ``data/desi_targetmask.ecsv``, e.g. ``BGS_BRIGHT``, ``BGS_ANY``).
    """

    spectype: tuple[str, ...] = ()
    zwarn_max: int | None = None
    z_min: float | None = None
    z_max: float | None = None
    target: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "spectype", _names(self.spectype))
        object.__setattr__(self, "target", _names(self.target))
        known = target_bits()
        unknown = [n for n in self.target if n not in known]
        if unknown:
            raise ValueError(f"unknown DESI targeting bit(s) {', '.join(unknown)}; known (main "
                             f"survey, DESI_TARGET and BGS_TARGET): {', '.join(known)}")
        if self.z_min is not None and self.z_max is not None and self.z_min > self.z_max:
            raise ValueError(f"z_min {self.z_min} is above z_max {self.z_max}")

    @classmethod
    def from_options(cls, *, spectype=None, zwarn_max=None, z_min=None, z_max=None,
                     target=None) -> TargetSelection | None:
        """A selection from CLI/config values, or None when no cut is asked for."""
        sel = cls(_names(spectype), zwarn_max, z_min, z_max, _names(target))
        return sel if sel.active() else None

    def active(self) -> list[str]:
        """Names of the cuts this selection applies, in order."""
        given = {"target": bool(self.target), "spectype": bool(self.spectype),
                 "zwarn": self.zwarn_max is not None,
                 "z": self.z_min is not None or self.z_max is not None}
        return [c for c in CUTS if given[c]]

    def masks(self) -> dict[str, int]:
        """FIBERMAP column -> OR of the chosen bits' values."""
        out: dict[str, int] = {}
        for name in self.target:
            column, bit = target_bits()[name]
            out[column] = out.get(column, 0) | (1 << bit)
        return out

    def describe(self) -> str:
        """The cuts in words, e.g. ``target in BGS_BRIGHT|BGS_FAINT, spectype GALAXY``."""
        parts = []
        if self.target:
            parts.append("target " + "|".join(self.target))
        if self.spectype:
            parts.append("spectype " + "|".join(self.spectype))
        if self.zwarn_max is not None:
            parts.append(f"zwarn <= {self.zwarn_max}")
        if self.z_min is not None or self.z_max is not None:
            lo = "" if self.z_min is None else f"{self.z_min} <= "
            hi = "" if self.z_max is None else f" <= {self.z_max}"
            parts.append(f"{lo}z{hi}")
        return ", ".join(parts) or "none"

    def apply(self, fibermap: Mapping[str, np.ndarray], zinfo: Mapping[str, np.ndarray],
              where: str) -> tuple[np.ndarray, dict[str, int]]:
        """Which targets pass, and how many each cut removed.

        Parameters
        ----------
        fibermap : mapping of str to ndarray
            FIBERMAP columns (n_target,), by FITS name.
        zinfo : mapping of str to ndarray
            Per-target redrock values matched by TARGETID: ``found``, ``z``,
            ``zwarn``, ``spectype``.
        where : str
            The file, for error messages.

        Returns
        -------
        keep : ndarray of bool (n_target,)
        removed : dict of str to int
            Targets removed by each active cut (in :data:`CUTS` order).

        Raises
        ------
        ReadError
            If a targeting-bit cut needs a FIBERMAP column the file lacks
            (naming the SV/CMX columns it has instead, if any).
        """
        n = len(zinfo["found"])
        keep = np.ones(n, bool)
        removed: dict[str, int] = {}
        found = np.asarray(zinfo["found"], bool)
        tests = {
            "target": lambda: self._bits(fibermap, n, where),
            "spectype": lambda: found & np.isin(np.char.upper(np.asarray(zinfo["spectype"], str)),
                                                self.spectype),
            "zwarn": lambda: found & (np.asarray(zinfo["zwarn"]) <= self.zwarn_max),
            "z": lambda: found & self._in_range(np.asarray(zinfo["z"], np.float64)),
        }
        for cut in self.active():
            passed = tests[cut]()
            removed[cut] = int((keep & ~passed).sum())
            keep &= passed
        return keep, removed

    def _bits(self, fibermap, n: int, where: str) -> np.ndarray:
        passed = np.zeros(n, bool)
        for column, mask in self.masks().items():
            if column not in fibermap:
                others = sorted(c for c in fibermap if c.endswith(column) or c == "CMX_TARGET")
                hint = (f"; it has {', '.join(others)}: an SV/commissioning file, whose bits are "
                        "numbered differently and are not supported") if others else ""
                raise ReadError(f"{where}: FIBERMAP has no {column} column, needed by the "
                                f"targeting-bit selection {'|'.join(self.target)}{hint}")
            passed |= (np.asarray(fibermap[column]).astype(np.int64) & np.int64(mask)) != 0
        return passed

    def _in_range(self, z: np.ndarray) -> np.ndarray:
        ok = np.isfinite(z)
        if self.z_min is not None:
            ok &= z >= self.z_min
        if self.z_max is not None:
            ok &= z <= self.z_max
        return ok
