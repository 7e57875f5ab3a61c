"""Multi-target DESI coadd + redrock pairs in the real HDU layout, built from a shipped coadd.

The DESI files inside fastspecfit hold one target each; a real healpix coadd
holds hundreds.  :func:`write_pair` copies a shipped file's HDU layout
(FIBERMAP, EXP_FIBERMAP, B/R/Z WAVELENGTH/FLUX/IVAR/MASK/RESOLUTION, SCORES;
REDSHIFTS, FIBERMAP, TSNR2 in the redrock file) and repeats its target N times
with chosen TARGETID, SPECTYPE, ZWARN, Z and targeting bits.  Target ``i``'s
flux is the real spectrum times ``1 + i / N`` so targets can be told apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _data import DESI_COADDS
from astropy.io import fits

TEMPLATE = DESI_COADDS[1]
"""A main-survey coadd (FIBERMAP has DESI_TARGET and BGS_TARGET)."""


def _repeat_table(hdu: fits.BinTableHDU, n: int) -> fits.BinTableHDU:
    data = np.repeat(np.asarray(hdu.data), n) if n else np.asarray(hdu.data)[:0]
    return fits.BinTableHDU(data, header=hdu.header, name=hdu.name)


def write_pair(coadd: str | Path, targetid: Sequence[int], *, spectype: Sequence[str] | str = "GALAXY",
               zwarn: Sequence[int] | int = 0, z: Sequence[float] | float = 0.1,
               desi_target: Sequence[int] | int = 1 << 60, bgs_target: Sequence[int] | int = 2,
               redrock_order: Sequence[int] | None = None, drop_columns: Sequence[str] = (),
               redrock: bool = True, template: Path = TEMPLATE) -> tuple[Path, Path | None]:
    """Write ``coadd`` and (if ``redrock``) the redrock file beside it.

    Parameters
    ----------
    coadd : str or Path
        Path of the coadd; its name must start with ``coadd-``.
    targetid : sequence of int
        One TARGETID per target, in FIBERMAP order.
    spectype, zwarn, z, desi_target, bgs_target : sequence or scalar
        Per target (or one value for all): redrock SPECTYPE, ZWARN, Z and the
        FIBERMAP DESI_TARGET / BGS_TARGET bit masks.
    redrock_order : sequence of int, optional
        Order of the targets' rows in REDSHIFTS (a permutation of
        ``range(n)``); default the FIBERMAP order.
    drop_columns : sequence of str
        FIBERMAP columns to leave out (e.g. ``["BGS_TARGET"]``).
    redrock : bool
        Write the redrock file too.
    template : Path
        Shipped single-target coadd to copy the layout from.

    Returns
    -------
    (coadd, redrock) : Path, Path or None
    """
    coadd = Path(coadd)
    coadd.parent.mkdir(parents=True, exist_ok=True)
    tid = np.asarray(targetid, np.int64)
    n = tid.size

    def per(value, dtype):
        return np.broadcast_to(np.asarray(value, dtype=dtype), (n,))

    with fits.open(template) as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)])
        for hdu in hdul[1:]:
            name = hdu.name
            if name == "FIBERMAP":
                table = _repeat_table(hdu, n)
                table.data["TARGETID"] = tid
                table.data["DESI_TARGET"] = per(desi_target, np.int64)
                table.data["BGS_TARGET"] = per(bgs_target, np.int64)
                if drop_columns:
                    cols = [c for c in table.columns if c.name not in set(drop_columns)]
                    table = fits.BinTableHDU.from_columns(cols, header=table.header, name=name)
                out.append(table)
            elif name == "SCORES":
                table = _repeat_table(hdu, n)
                table.data["TARGETID"] = tid
                out.append(table)
            elif name.endswith(("_FLUX", "_IVAR", "_MASK", "_RESOLUTION")):
                data = np.repeat(np.asarray(hdu.data)[:1], n, axis=0)
                if name.endswith("_FLUX"):
                    data = data * (1 + np.arange(n, dtype=np.float32) / max(n, 1))[:, None]
                out.append(fits.ImageHDU(data.astype(hdu.data.dtype.newbyteorder("=")),
                                         header=hdu.header, name=name))
            else:  # WAVELENGTH, EXP_FIBERMAP: as they are
                out.append(hdu.copy())
        out.writeto(coadd, overwrite=True)

    if not redrock:
        return coadd, None
    rr_path = coadd.with_name("redrock-" + coadd.name[len("coadd-"):])
    order = np.arange(n) if redrock_order is None else np.asarray(redrock_order)
    rr_template = template.with_name("redrock-" + template.name[len("coadd-"):])
    with fits.open(rr_template) as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)])
        for hdu in hdul[1:]:
            if hdu.name in ("REDSHIFTS", "FIBERMAP", "TSNR2"):
                table = _repeat_table(hdu, n)
                table.data["TARGETID"] = tid[order]
                if hdu.name == "REDSHIFTS":
                    table.data["Z"] = per(z, np.float64)[order]
                    table.data["ZWARN"] = per(zwarn, np.int64)[order]
                    table.data["SPECTYPE"] = per(spectype, "U6")[order]
                out.append(table)
            else:
                out.append(hdu.copy())
        out.writeto(rr_path, overwrite=True)
    return coadd, rr_path


def healpix_coadd(root: str | Path, pixel: int, survey: str = "main",
                  program: str = "bright") -> Path:
    """Where DESI keeps a healpix coadd: ``root/survey/program/<pixel//100>/<pixel>/coadd-...``."""
    return (Path(root) / survey / program / str(pixel // 100) / str(pixel)
            / f"coadd-{survey}-{program}-{pixel}.fits")
