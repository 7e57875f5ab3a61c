import contextlib
import io

import numpy as np
import pytest
from ppxf import ppxf_util

from survey_denoise import lines


def _ppxf_vacuum_lines():
    """Every line pPXF's emission_lines knows, with its vacuum wavelength."""
    ln_lam = np.log(np.geomspace(3000, 9000, 4000))
    with contextlib.redirect_stdout(io.StringIO()):
        _, names, waves = ppxf_util.emission_lines(ln_lam, [3000, 9000], 2.5, vacuum=True)
    return dict(zip(names, waves, strict=True))


def test_wavelengths_are_ppxf_s_own():
    ppxf_lines = _ppxf_vacuum_lines()
    checked = 0
    for line in lines.all_lines().values():
        if line.ppxf_name is not None:
            assert line.wavelength == pytest.approx(ppxf_lines[line.ppxf_name], abs=1e-3), line.key
            checked += 1
    assert checked >= 15


def test_catalogue_keys_match_design():
    assert set(lines.catalogue_keys()) == {
        "halpha", "hbeta", "hgamma", "hdelta", "oii_3727", "oiii_4363", "oiii_4959",
        "oiii_5007", "nii_6548", "nii_6583", "sii_6716", "sii_6731", "oi_6300"}
    waves = [lines.wavelength(k) for k in lines.catalogue_keys()]
    assert waves == sorted(waves)


def test_blends_and_doublets():
    assert lines.components("oii_3727") == ("oii_3726", "oii_3729")
    assert 3727 < lines.wavelength("oii_3727") < 3730
    assert lines.components("halpha") == ("halpha",)
    nii = lines.all_lines()["nii_6548"]
    assert nii.doublet_of == "nii_6583" and nii.doublet_ratio == pytest.approx(0.33)
    assert lines.all_lines()["halpha"].case_b == pytest.approx(2.86)
    with pytest.raises(KeyError, match="unknown line key"):
        lines.wavelength("lyalpha")


def test_sources_are_cited():
    meta = lines.line_table().meta
    assert any("pPXF" in s for s in meta["sources"])
    assert str(lines.line_table()["wavelength"].unit) == "Angstrom"
