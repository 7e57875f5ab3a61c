"""Mock spectra in the raw schema, with truth, generated lazily chunk by chunk.

:func:`synthesize` is the per-chunk kernel (plain numpy): galaxy ids in,
spectra and truth out.  :func:`generate` wraps it in ``xr.map_blocks`` so a
survey of millions streams to Zarr with one chunk in memory per worker.

Flux conventions
----------------
Observed frame: f_obs(lambda_obs) in 1e-17 erg/s/cm2/A.  Rest frame (the
fast path, directly on a :class:`~survey_denoise.grid.Grid`):
f_rest(lambda_rest) = (1 + z) f_obs(lambda_rest (1 + z)), so that a line
integrates to the same flux in both frames.

Continuum: SFH weights x age-binned BC03 SSPs (one matrix product per chunk),
Calzetti attenuation, Gaussian stellar broadening in log-lambda (FFT), plus
the power-law continuum of broad-line AGN.  MILES' 2.5 A FWHM is close to
SDSS's R ~ 2000, so the templates are not broadened further for the
instrument.  Emission lines are Gaussians integrated exactly over the
output pixels with sigma^2 = sigma_gas^2 + sigma_inst^2.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from .. import lines as L
from .. import ssp
from ..grid import C_KMS, GRID, Grid
from ..schema import FLUX_UNIT, add_provenance, make_spectra
from . import nebular, population
from .dust import calzetti
from .instrument import INSTRUMENTS, Instrument
from .priors import CLASSES, default_priors

WORK_RANGE = (3000.0, 9600.0)
"""Least rest-frame range (A) of the observed-frame path's working grid (widened as needed)."""
REST_MARGIN = 24
"""Extra working pixels on each side of a rest-frame grid (FFT wrap-around, broadening)."""

TRUTH_UNITS = {
    "true_class": "index into " + ",".join(CLASSES),
    "true_logmass": "log10 M_sun (living stars and remnants, whole galaxy)",
    "true_logsfr": "log10 M_sun/yr (last 100 Myr, whole galaxy)",
    "true_logsfr10": "log10 M_sun/yr (last ~10 Myr, whole galaxy: what the lines trace)",
    "true_oh": "12 + log10(O/H)",
    "true_logzstar": "log10 Z/Z_sun (stars)",
    "true_ebv_star": "mag", "true_ebv_gas": "mag", "true_ebv_lines": "mag",
    "true_sigma_star": "km/s", "true_sigma_gas": "km/s",
    "true_fibre_frac": "fraction of the galaxy light in the fibre",
    "true_age_gyr": "Gyr (oldest stars)", "true_tau_gyr": "Gyr",
    "true_mass_weighted_age_gyr": "Gyr", "true_burst_frac": "fraction of mass formed",
    "true_dl_mpc": "Mpc",
    "true_halpha_broad_flux": "1e-17 erg/s/cm2", "true_broad_sigma": "km/s",
}
for _k in L.catalogue_keys():
    TRUTH_UNITS[f"true_{_k}_flux"] = "1e-17 erg/s/cm2"


@dataclass(frozen=True)
class MockConfig:
    """What to simulate (everything a chunk needs besides its galaxy ids).

    Attributes
    ----------
    seed : int
    survey : str
        Instrument name (``"sdss"``).
    rest : bool
        Rest-frame output directly on ``grid`` (the fast path).
    grid : dict
        :meth:`Grid.to_dict` of the rest-frame grid.
    z_range : tuple
        Redshift range.
    noise : bool
        Add the instrument's noise (otherwise ivar is the noise model's but flux is noise-free).
    emission : bool
        Add emission lines (False gives the pure continuum, used by tests).
    exptime : float, optional
        Effective exposure time, s, of an instrument with an exposure-time
        scaling (DESI: :meth:`~survey_denoise.mock.instrument.DesiInstrument.at_depth`;
        BGS is 180 s).  Default: the instrument's own depth.
    aperture : bool
        Carry each galaxy's fibre fraction to the instrument's fibre and seeing
        at its redshift (:func:`~survey_denoise.mock.population.fibre_fraction_at`),
        for redshifts well beyond the priors' SDSS-like ones.
    """

    seed: int = 0
    survey: str = "sdss"
    rest: bool = False
    grid: tuple = tuple(GRID.to_dict().items())
    z_range: tuple[float, float] = (0.024, 0.05)
    noise: bool = True
    emission: bool = True
    exptime: float | None = None
    aperture: bool = False

    @property
    def instrument(self) -> Instrument:
        try:
            inst = INSTRUMENTS[self.survey]
        except KeyError:
            raise ValueError(f"unknown survey {self.survey!r}; known: {sorted(INSTRUMENTS)}") from None
        return inst if self.exptime is None else inst.at_depth(self.exptime)

    @property
    def frame(self) -> str:
        """The schema frame of the spectra: ``"rest"`` or ``"observed"``."""
        return "rest" if self.rest else "observed"

    @property
    def rest_grid(self) -> Grid:
        return Grid.from_dict(dict(self.grid))


TRUTH_PROPERTIES = ("logmass", "logsfr", "logsfr10", "oh", "logzstar", "ebv_star", "ebv_gas", "sigma_star",
                    "sigma_gas", "fibre_frac", "age_gyr", "tau_gyr", "mass_weighted_age_gyr",
                    "burst_frac", "dl_mpc")
"""Population properties (:func:`survey_denoise.mock.population.draw`) copied into the truth."""


def _truth_dtypes() -> dict[str, type]:
    """Names, order and dtypes of the truth columns, known without drawing a galaxy."""
    names = (["true_class"] + [f"true_{k}" for k in TRUTH_PROPERTIES] + ["true_ebv_lines"]
             + [f"true_{k}_flux" for k in L.catalogue_keys()] + ["true_halpha_broad_flux", "true_broad_sigma"])
    return {name: np.int8 if name == "true_class" else np.float64 for name in names}


def _truth(props: dict, fluxes: dict) -> dict[str, np.ndarray]:
    values = {"true_class": props["class"], "true_ebv_lines": fluxes["ebv_lines"],
              "true_halpha_broad_flux": fluxes["broad_halpha"],
              "true_broad_sigma": np.where(fluxes["broad_halpha"] > 0, fluxes["broad_sigma"], 0.0)}
    values.update({f"true_{k}": props[k] for k in TRUTH_PROPERTIES})
    values.update({f"true_{k}_flux": v for k, v in nebular.catalogue_fluxes(fluxes).items()})
    return {name: np.asarray(values[name], dtype) for name, dtype in _truth_dtypes().items()}


def _continuum_rest(props: dict, fluxes: dict, wave_min: float, dlnlam: float, npix: int) -> np.ndarray:
    """Rest-frame stellar (+ AGN) continuum, f_rest in 1e-17 erg/s/cm2/A, on a log grid."""
    templates = ssp.templates_on(wave_min, wave_min * np.exp(dlnlam * (npix - 1)), npix)
    n = props["z"].size
    weights = (props["zweights"][:, :, None] * props["sfh"][:, None, :]).reshape(n, -1)
    wave = wave_min * np.exp(dlnlam * np.arange(npix))
    scale = props["fibre_frac"] * ssp.L_SUN_ERG_S / (4 * np.pi * (props["dl_mpc"] * nebular.MPC_CM) ** 2)
    cont = weights @ templates
    cont *= (scale / nebular.FLUX_SCALE)[:, None]
    cont *= 10 ** (-0.4 * calzetti(wave)[None, :] * props["ebv_star"][:, None])
    from .synth import broaden
    cont = broaden(cont, props["sigma_star"] / (C_KMS * dlnlam))
    slope = default_priors().broad_lines["continuum_slope"]
    agn = fluxes["agn_continuum"]
    if np.any(agn > 0):
        cont += agn[:, None] * (wave[None, :] / 5100.0) ** slope
    return cont


def _add_lines(flux, edges, props, fluxes, zfac, sigma_inst):
    from .synth import add_gaussians
    sig = np.sqrt(props["sigma_gas"] ** 2 + sigma_inst**2)
    for key, line in L.all_lines().items():
        add_gaussians(flux, edges, line.wavelength * zfac, fluxes[key], sig)
    broad = np.sqrt(fluxes["broad_sigma"] ** 2 + sigma_inst**2)
    for key in ("halpha", "hbeta", "hgamma", "hdelta"):
        add_gaussians(flux, edges, L.wavelength(key) * zfac, fluxes[f"broad_{key}"], broad)


def _work_range(inst: Instrument, z_range: tuple[float, float]) -> tuple[float, float]:
    """Rest-frame working range: :data:`WORK_RANGE`, widened to cover the instrument at every z."""
    lo = inst.wavelength[0] / (1 + z_range[1]) * np.exp(-4 * inst.dlnlam)
    hi = inst.wavelength[-1] / (1 + z_range[0]) * np.exp(4 * inst.dlnlam)
    return min(WORK_RANGE[0], float(lo)), max(WORK_RANGE[1], float(hi))


def synthesize(ids: np.ndarray, cfg: MockConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Spectra and truth of galaxies ``ids`` (the per-chunk kernel).

    Returns
    -------
    flux, ivar : ndarray (n, npix), float32
        1e-17 erg/s/cm2/A (rest or observed frame per ``cfg.rest``).
    z : ndarray (n,)
    truth : dict of ndarray (n,)
        ``true_*`` variables, see :data:`TRUTH_UNITS`.
    """
    ids = np.asarray(ids)
    props = population.draw(cfg.seed, ids, z_range=cfg.z_range)
    inst = cfg.instrument
    if cfg.aperture:
        props["fibre_frac"] = population.fibre_fraction_at(
            props["fibre_frac"], props["z"], inst.fibre_diameter_arcsec, inst.seeing_arcsec)
    fluxes = nebular.line_fluxes(props)
    z = props["z"]
    u_exp = props["u"][:, population.U["exposure"]]
    if cfg.rest:
        grid = cfg.rest_grid
        wmin = grid.wave_min * np.exp(-REST_MARGIN * grid.dlnlam)
        cont = _continuum_rest(props, fluxes, wmin, grid.dlnlam, grid.npix + 2 * REST_MARGIN)
        flux = np.ascontiguousarray(cont[:, REST_MARGIN:-REST_MARGIN])
        if cfg.emission:
            _add_lines(flux, grid.edges, props, fluxes, np.ones_like(z), inst.sigma_inst_kms)
        # Noise of the native pixels averaged onto grid pixels, in rest units.
        sigma = inst.sigma_rest(flux, inst.exposure(u_exp), grid, z)
        ivar = 1.0 / sigma**2
        if cfg.noise:
            from ..rng import standard_normal
            flux = flux + sigma * standard_normal(cfg.seed, f"mock-noise-{inst.name}-rest", ids, grid.npix)
    else:
        dln = inst.dlnlam
        w0, w1 = _work_range(inst, cfg.z_range)
        npw = int(np.ceil(np.log(w1 / w0) / dln))
        cont = _continuum_rest(props, fluxes, w0, dln, npw)
        # cumulative rest-frame integral at the working edges; edge k at ln(w0) + (k - 1/2) dln
        cum = np.concatenate([np.zeros((z.size, 1)),
                              np.cumsum(cont * (w0 * np.exp(dln * np.arange(npw)) * dln), 1)], 1)
        obs_edges = np.exp(np.log(inst.wavelength[0]) + dln * (np.arange(inst.npix + 1) - 0.5))
        pos0 = (np.log(obs_edges[0]) - np.log(1 + z) - (np.log(w0) - dln / 2)) / dln
        from ..resample import shift_rebin
        flux = shift_rebin(cum, pos0, inst.npix) / np.diff(obs_edges)[None, :]
        if cfg.emission:
            _add_lines(flux, obs_edges, props, fluxes, 1 + z, inst.sigma_inst_kms)
        if cfg.noise:
            flux, ivar = inst.observe(flux, ids, cfg.seed, u_exp)
        else:
            ivar = 1.0 / inst.sigma(flux, inst.exposure(u_exp)) ** 2
    return flux.astype(np.float32), ivar.astype(np.float32), z, _truth(props, fluxes)


def _chunk(ds: xr.Dataset, cfg: MockConfig, wavelength: np.ndarray, attrs: dict) -> xr.Dataset:
    ids = ds["galaxy"].values
    flux, ivar, z, truth = synthesize(ids, cfg)
    out = make_spectra(flux, ivar, wavelength, ids, z, frame=cfg.frame, extra=truth, attrs=attrs)
    return out


def generate(ids: np.ndarray, cfg: MockConfig, *, chunk_size: int = 1000,
             design: str = "natural") -> xr.Dataset:
    """A lazy mock survey of galaxies ``ids`` in the raw schema, truth on ``galaxy``.

    Parameters
    ----------
    ids : ndarray of int
        Galaxy ids (usually from :func:`survey_denoise.mock.designs.select`).
    cfg : MockConfig
        What to simulate.
    chunk_size : int
        Galaxies per chunk (one task each).
    design : str
        Recorded in the provenance.

    Returns
    -------
    xarray.Dataset
        Dask-backed: ``flux``, ``ivar``, ``mask``, ``z``, ``norm``, ``flags`` and
        the ``true_*`` variables; nothing is computed until written.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        raise ValueError("a mock survey needs at least one galaxy")
    cfg.instrument  # noqa: B018 - fail early on an unknown survey
    if cfg.rest:
        wavelength = cfg.rest_grid.wavelength.copy()
    else:
        wavelength = cfg.instrument.wavelength
    attrs = {"source": "survey_denoise.mock", "survey": cfg.survey, "flux_unit": FLUX_UNIT,
             "truth_units": json.dumps(TRUTH_UNITS), "priors_version": default_priors().version}
    if cfg.rest:
        attrs["grid"] = json.dumps(cfg.rest_grid.to_dict())
    cfg_dict = {k: v for k, v in asdict(cfg).items() if k != "grid"}
    attrs = add_provenance(attrs, "mock", design=design, n=int(ids.size), **cfg_dict)
    # template: one galaxy of zeros with a chunk's variables and dtypes, so that the
    # driver neither draws nor synthesises a galaxy (which reads the stellar library)
    zeros = np.zeros((1, wavelength.size), np.float32)
    sample = make_spectra(zeros, zeros, wavelength, ids[:1], np.zeros(1), frame=cfg.frame, attrs=attrs,
                          extra={k: np.zeros(1, dtype) for k, dtype in _truth_dtypes().items()})
    # a dask variable makes map_blocks lazy (a coordinate-only dataset runs eagerly);
    # built from one small array per chunk, so that a chunk's task does not carry
    # every id of the survey (16 MB per write unit at 10^6 galaxies)
    base = xr.Dataset({"ids": ("galaxy", _chunked(ids, chunk_size))}, coords={"galaxy": ids})
    template = xr.Dataset(
        {name: (var.dims, _lazy(var, ids.size, chunk_size), var.attrs) for name, var in sample.data_vars.items()},
        coords={"galaxy": ids, "wavelength": sample["wavelength"]}, attrs=sample.attrs)
    ds = xr.map_blocks(_chunk, base, args=(cfg, wavelength, attrs), template=template)
    ds["wavelength"].attrs.update(sample["wavelength"].attrs)
    ds.attrs = dict(sample.attrs)
    return ds


def _chunked(values: np.ndarray, chunk_size: int):
    import dask.array as da

    return da.concatenate([da.from_array(values[s:s + chunk_size], chunks=-1)
                           for s in range(0, values.size, chunk_size)])


def _lazy(var: xr.DataArray, n: int, chunk_size: int):
    import dask.array as da

    shape = (n,) + var.shape[1:]
    chunks = (chunk_size,) + var.shape[1:]
    return da.empty(shape, dtype=var.dtype, chunks=chunks)
