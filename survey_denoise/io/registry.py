"""A registry of survey readers: each survey module registers how to recognise and read its files.

Like ``specutils``' I/O registry, a reader is registered with an *identifier*
that looks at the file (FITS HDU names and columns, never the file name), so
``read(path)`` finds the right reader by itself.  Adding a survey means one new
module in ``survey_denoise/io/`` that calls :func:`register` at import time
(modules there are discovered on first use; other packages use the
``survey_denoise.readers`` entry-point group); nothing else changes.

A reader returns a raw spectra dataset (observed frame, physical units,
``norm = 1``) valid under :func:`survey_denoise.schema.validate`.  A reader may
also say how several of its datasets share one wavelength axis
(``common_axis``); the default is the sorted union of their wavelengths.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import pkgutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

ENTRY_POINT_GROUP = "survey_denoise.readers"
"""Entry-point group through which other packages add readers (each entry is a module)."""


class ReadError(ValueError):
    """A survey file cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Reader:
    """One registered survey format.

    Attributes
    ----------
    name : str
        Format name used on the command line (``sdss``, ``desi``...).
    identify : callable
        ``identify(hdul) -> bool`` given an open :class:`astropy.io.fits.HDUList`;
        must only look at headers and column names (cheap).
    read : callable
        ``read(path, **options) -> xarray.Dataset`` in the raw schema; raises
        :class:`ReadError` (naming the file) for a file it does not recognise.
    common_axis : callable, optional
        ``common_axis(list of wavelength arrays) -> ndarray``: the one observed
        wavelength axis that several spectra of this survey are placed on
        without resampling.  Default: the sorted union of the wavelengths.
    """

    name: str
    identify: Callable[[object], bool]
    read: Callable[..., xr.Dataset]
    common_axis: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None


_READERS: dict[str, Reader] = {}


def register(name: str, identify: Callable[[object], bool], read: Callable[..., xr.Dataset],
             common_axis: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None) -> Reader:
    """Register a survey reader under ``name`` (replacing any earlier one).

    Parameters
    ----------
    name : str
        Format name.
    identify : callable
        ``identify(hdul) -> bool``, see :class:`Reader`.
    read : callable
        ``read(path, **options) -> xarray.Dataset``.
    common_axis : callable, optional
        See :class:`Reader`.

    Returns
    -------
    Reader
    """
    reader = Reader(name, identify, read, common_axis)
    _READERS[name] = reader
    return reader


_discovered = False
_discovery_lock = threading.RLock()


def _load_builtins() -> None:
    """Import every module of ``survey_denoise.io`` and every entry point, once.

    Survey modules register themselves on import, so a new survey module in
    this package (or a package declaring a ``survey_denoise.readers`` entry
    point) is found without editing any list.
    """
    global _discovered
    with _discovery_lock:  # readers run in threads; all must see a full registry
        if _discovered:
            return
        package = importlib.import_module(__package__)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{__package__}.{module.name}")
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
        _discovered = True


def formats() -> list[str]:
    """Names of all known formats."""
    _load_builtins()
    return sorted(_READERS)


def get_reader(name: str) -> Reader:
    """The reader registered as ``name``.

    Raises
    ------
    ReadError
        If no reader has that name.
    """
    _load_builtins()
    try:
        return _READERS[name]
    except KeyError:
        raise ReadError(f"unknown format {name!r}; known formats: {', '.join(sorted(_READERS))}") from None


@contextlib.contextmanager
def open_fits(path: str | Path) -> Iterator[Any]:
    """Open a FITS file, check that every HDU is complete, and close it afterwards.

    Astropy only *warns* about a truncated file or a damaged header, and then
    reads what it can; here either is an error that names the file.  The
    structure is checked before astropy sees the file (:func:`_check_structure`)
    rather than by turning astropy's warnings into errors: warning filters are
    process-wide, and readers run in Dask's worker threads, where one thread
    restoring the filters undoes another's.  Use as ``with open_fits(path) as
    hdul:`` and copy the data needed inside the block.

    Yields
    ------
    astropy.io.fits.HDUList

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ReadError
        If the file is not FITS, is truncated, or has a damaged header.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ReadError(f"{path}: is a directory, not a FITS file")
    # The file object is ours, so it is closed even when astropy fails half-way.
    with open(path, "rb") as fh:
        _check_structure(fh, path)
        fh.seek(0)
        try:
            hdul = fits.open(fh, memmap=False, lazy_load_hdus=False)
        except Exception as err:  # astropy raises OSError, ValueError... for what the walk lets through
            raise ReadError(f"{path}: not a readable FITS file ({_reason(err)})") from None
        with hdul:
            yield hdul


_BLOCK = 2880  # bytes; FITS headers and data come in whole blocks (FITS 4.0, sect. 3.1)
_CARD = 80


def _check_structure(fh, path: Path) -> None:
    """Walk the HDUs of an open FITS file: every header ends, every data unit is whole.

    The last data unit may lack its padding to a whole block (some writers
    leave it out), but padding is never cut short.  Raises :class:`ReadError`
    naming the first fault.
    """
    from astropy.io import fits

    size = path.stat().st_size
    pos, index = 0, 0
    while pos < size:
        raw = _header_bytes(fh, path, pos, index)
        try:
            header = fits.Header.fromstring(raw.decode("ascii"))
            data_size = _data_size(header)
        except Exception as err:  # damaged cards: UnicodeDecodeError, ValueError, KeyError...
            raise ReadError(f"{path}: not a readable FITS file (header of HDU {index}: {_reason(err)})") from None
        name = header.get("EXTNAME", index)
        end = pos + len(raw) + data_size
        if end > size:
            raise ReadError(f"{path}: truncated FITS file (HDU {name!r} needs {end} bytes, the file has {size})")
        pos = end + (-data_size) % _BLOCK
        if end < size < pos:  # padding cut short: whatever followed is lost
            raise ReadError(f"{path}: truncated FITS file (it ends inside the padding after HDU {name!r}, "
                            f"at byte {size} of {pos})")
        index += 1


def _header_bytes(fh, path: Path, pos: int, index: int) -> bytes:
    """The header blocks of HDU ``index``, which starts at byte ``pos``, up to its END card."""
    key = b"SIMPLE  =" if index == 0 else b"XTENSION="
    fh.seek(pos)
    raw = b""
    while True:
        block = fh.read(_BLOCK)
        if len(block) < _BLOCK:
            if index == 0 and not raw:
                raise ReadError(f"{path}: not a readable FITS file (shorter than one {_BLOCK}-byte block)")
            raise ReadError(f"{path}: truncated FITS file (header of HDU {index} has no END card "
                            f"before the end of the file)")
        if not raw and not block.startswith(key):
            where = "" if index == 0 else f" after HDU {index - 1}, at byte {pos}"
            raise ReadError(f"{path}: not a readable FITS file (no {key[:8].decode().strip()} card{where})")
        raw += block
        if any(block[i:i + 8] == b"END     " for i in range(0, _BLOCK, _CARD)):
            return raw


def _data_size(header) -> int:
    """Bytes in the data unit described by ``header`` (FITS 4.0, eqs. 1-2), without padding."""
    naxis = int(header["NAXIS"])
    if naxis == 0:
        return 0
    axes = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
    if header.get("GROUPS") is True and axes[0] == 0:  # random groups: NAXIS1 = 0 is not an axis
        axes = axes[1:]
    return abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (
        int(header.get("PCOUNT", 0)) + int(np.prod(axes, dtype=np.int64)))


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def identify(path: str | Path) -> str:
    """Name of the format of the file at ``path``, found by looking inside it.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ReadError
        If the file is not FITS, is truncated, or no registered reader
        recognises it (the message lists the HDUs found).
    """
    _load_builtins()
    with open_fits(path) as hdul:
        for name, reader in _READERS.items():
            if reader.identify(hdul):
                return name
        found = [h.name for h in hdul]
    raise ReadError(f"{path}: not a file of any known survey ({', '.join(sorted(_READERS))}); "
                    f"its HDUs are {found}")


def read(path: str | Path, fmt: str | None = None, **options) -> xr.Dataset:
    """Read one survey file into the raw spectra schema.

    Parameters
    ----------
    path : str or Path
        The file.
    fmt : str, optional
        Format name; found with :func:`identify` when not given.  Every
        reader refuses a file its own identifier does not recognise.
    **options
        Passed to the reader (e.g. ``redrock=`` for DESI).

    Returns
    -------
    xarray.Dataset
        Raw, observed-frame, physical-unit spectra.

    Raises
    ------
    FileNotFoundError, ReadError
        Naming the file and what is wrong.
    """
    if fmt is None:
        fmt = identify(path)
    ds = get_reader(fmt).read(path, **options)
    ds.attrs.setdefault("survey", fmt)
    return ds


def common_axis(fmt: str | None, wavelengths: Sequence[np.ndarray]) -> np.ndarray:
    """One observed wavelength axis holding every pixel of ``wavelengths``.

    Uses the format's own ``common_axis`` where it has one (a survey whose
    pixels sit on a fixed lattice fills the gaps between spectra with that
    lattice), else the sorted union of the values.
    """
    reader = get_reader(fmt) if fmt is not None else None
    if reader is not None and reader.common_axis is not None:
        return np.asarray(reader.common_axis(wavelengths), dtype=np.float64)
    return np.unique(np.concatenate([np.asarray(w, dtype=np.float64) for w in wavelengths]))
