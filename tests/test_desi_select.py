"""DESI at survey scale: healpix trees, file lists, multi-target coadds and target selection."""

from __future__ import annotations

import numpy as np
import pytest
from _desi_files import healpix_coadd, write_pair
from astropy.io import fits

from survey_denoise.io.desi import find_coadds, read_desi, read_file_list, redrock_path
from survey_denoise.io.desi_select import TargetSelection, target_bits
from survey_denoise.io.ingest import NothingRead, ingest, selection_removed
from survey_denoise.io.registry import ReadError

BGS_FAINT, BGS_BRIGHT, BGS_WISE = 1 << 0, 1 << 1, 1 << 2
# One file's targets: every combination the cuts tell apart, with known answers.
TARGETS = {
    # TARGETID: (SPECTYPE, ZWARN, Z, BGS_TARGET)
    101: ("GALAXY", 0, 0.10, BGS_BRIGHT),
    102: ("GALAXY", 0, 0.30, BGS_FAINT),
    103: ("GALAXY", 4, 0.20, BGS_BRIGHT),
    104: ("STAR", 0, 0.00, BGS_BRIGHT),
    105: ("QSO", 0, 1.50, BGS_FAINT),
    106: ("GALAXY", 0, 0.05, BGS_WISE),
    107: ("GALAXY", 0, 0.45, 0),
    108: ("GALAXY", 1, 0.15, BGS_FAINT | BGS_BRIGHT),
}


def _write(path, targets=TARGETS, **kwargs):
    ids = list(targets)
    spectype, zwarn, z, bgs = zip(*targets.values(), strict=True)
    desi = [(1 << 60) if b else (1 << 1) for b in bgs]  # BGS_ANY, else an ELG
    return write_pair(path, ids, spectype=spectype, zwarn=zwarn, z=z, bgs_target=bgs,
                      desi_target=desi, **kwargs)


def _expected(keep):
    return sorted(t for t, row in TARGETS.items() if keep(*row))


def test_bit_table_matches_desitarget():
    bits = target_bits()
    # desitarget py/desitarget/data/targetmask.yaml, main survey.
    for name, where in {"LRG": ("DESI_TARGET", 0), "ELG": ("DESI_TARGET", 1),
                        "QSO": ("DESI_TARGET", 2), "SKY": ("DESI_TARGET", 32),
                        "BGS_ANY": ("DESI_TARGET", 60), "MWS_ANY": ("DESI_TARGET", 61),
                        "BGS_FAINT": ("BGS_TARGET", 0), "BGS_BRIGHT": ("BGS_TARGET", 1),
                        "BGS_WISE": ("BGS_TARGET", 2), "BGS_FAINT_HIP": ("BGS_TARGET", 3)}.items():
        assert bits[name] == where


def test_a_multi_target_coadd_reads_every_target_with_its_redshift(tmp_path):
    coadd, _ = _write(tmp_path / "coadd-main-bright-1.fits")
    ds = read_desi(coadd)
    assert ds["galaxy"].values.tolist() == list(TARGETS)
    assert ds["z"].values.tolist() == [row[2] for row in TARGETS.values()]
    assert ds["spectype"].values.tolist() == [row[0] for row in TARGETS.values()]
    assert ds["fibermap_bgs_target"].values.tolist() == [row[3] for row in TARGETS.values()]
    # Each row's spectrum is its own (the writer scales target i by 1 + i/n).
    good = ds["ivar"].values[0] > 0
    ratio = np.median(ds["flux"].values[:, good] / ds["flux"].values[0, good], axis=1)
    np.testing.assert_allclose(ratio, 1 + np.arange(len(TARGETS)) / len(TARGETS), rtol=1e-4)


def test_redrock_in_another_order_still_matches_by_targetid(tmp_path):
    order = [7, 2, 5, 0, 3, 6, 1, 4]
    coadd, rr = _write(tmp_path / "coadd-main-bright-2.fits", redrock_order=order)
    with fits.open(rr) as hdul:
        assert hdul["REDSHIFTS"].data["TARGETID"].tolist() == [list(TARGETS)[i] for i in order]
    ds = read_desi(coadd)
    assert ds["z"].values.tolist() == [row[2] for row in TARGETS.values()]
    assert ds["zwarn"].values.tolist() == [row[1] for row in TARGETS.values()]
    sel = TargetSelection(spectype=("GALAXY",), zwarn_max=0)
    kept = read_desi(coadd, selection=sel)["galaxy"].values.tolist()
    assert kept == _expected(lambda s, w, z, b: s == "GALAXY" and w == 0)


@pytest.mark.parametrize(("selection", "keep", "removed"), [
    (TargetSelection(spectype="galaxy"), lambda s, w, z, b: s == "GALAXY", {"spectype": 2}),
    (TargetSelection(zwarn_max=0), lambda s, w, z, b: w == 0, {"zwarn": 2}),
    (TargetSelection(z_min=0.1, z_max=0.3), lambda s, w, z, b: 0.1 <= z <= 0.3, {"z": 4}),
    (TargetSelection(target="BGS_BRIGHT,BGS_FAINT"), lambda s, w, z, b: b & 3, {"target": 2}),
    (TargetSelection(target=["BGS_WISE"]), lambda s, w, z, b: b & 4, {"target": 7}),
    (TargetSelection(target="BGS_ANY"), lambda s, w, z, b: b, {"target": 1}),
    (TargetSelection(target="ELG"), lambda s, w, z, b: not b, {"target": 7}),
    (TargetSelection(target="BGS_BRIGHT,BGS_FAINT", spectype="GALAXY", zwarn_max=0, z_max=0.2),
     lambda s, w, z, b: b & 3 and s == "GALAXY" and w == 0 and z <= 0.2,
     {"target": 2, "spectype": 2, "zwarn": 2, "z": 1}),
], ids=["spectype", "zwarn", "z-range", "bgs-bits", "bgs-wise", "bgs-any", "desi-elg", "all"])
def test_each_cut_removes_exactly_the_right_targets(tmp_path, selection, keep, removed):
    coadd, _ = _write(tmp_path / "coadd-main-bright-3.fits")
    ds = read_desi(coadd, selection=selection)
    assert sorted(ds["galaxy"].values.tolist()) == _expected(keep)
    assert ds.attrs["selection_removed"] == removed
    assert sum(removed.values()) == len(TARGETS) - ds.sizes["galaxy"]
    # The kept targets' spectra are theirs, not the first rows of the file.
    full = read_desi(coadd)
    np.testing.assert_array_equal(ds["flux"].values,
                                  full["flux"].sel(galaxy=ds["galaxy"].values).values)


def test_target_without_a_redshift_fails_the_redshift_cuts(tmp_path):
    coadd, rr = _write(tmp_path / "coadd-main-bright-4.fits")
    with fits.open(rr, mode="update") as hdul:
        hdul["REDSHIFTS"].data["TARGETID"][0] = 999  # 101 is now unknown to redrock
    for sel in (TargetSelection(zwarn_max=0), TargetSelection(z_max=5.0),
                TargetSelection(spectype="GALAXY")):
        assert 101 not in read_desi(coadd, selection=sel)["galaxy"].values


def test_selection_on_a_file_without_main_survey_bits_says_so(tmp_path):
    coadd, _ = _write(tmp_path / "coadd-sv1-bright-5.fits", drop_columns=["BGS_TARGET"])
    with pytest.raises(ReadError, match="FIBERMAP has no BGS_TARGET column"):
        read_desi(coadd, selection=TargetSelection(target="BGS_BRIGHT"))
    # Bits of the column it does have still select.
    assert read_desi(coadd, selection=TargetSelection(target="BGS_ANY")).sizes["galaxy"] == 7
    # A real SV1 coadd names its SV columns.
    from _data import DESI_COADDS

    sv1 = tmp_path / "coadd-sv1.fits"
    with fits.open(DESI_COADDS[0]) as hdul:
        fm = hdul["FIBERMAP"]
        cols = [c for c in fm.columns if c.name not in ("DESI_TARGET", "BGS_TARGET")]
        hdul["FIBERMAP"] = fits.BinTableHDU.from_columns(cols, header=fm.header, name="FIBERMAP")
        hdul.writeto(sv1)
    with pytest.raises(ReadError, match="SV1_BGS_TARGET: an SV/commissioning file"):
        read_desi(sv1, redrock=redrock_path(DESI_COADDS[0]),
                  selection=TargetSelection(target="BGS_BRIGHT"))


def test_unknown_bit_and_empty_range_are_refused():
    with pytest.raises(ValueError, match="unknown DESI targeting bit.*BGS_SHINY"):
        TargetSelection(target="BGS_BRIGHT,BGS_SHINY")
    with pytest.raises(ValueError, match="above z_max"):
        TargetSelection(z_min=0.5, z_max=0.1)
    assert TargetSelection.from_options() is None  # the default: no selection


def _tree(root):
    """Three healpix coadds of 8 targets each (ids offset per pixel) and one without its redrock."""
    made = {}
    for k, pixel in enumerate([10016, 10017, 9985]):
        ids = {t + 1000 * k: row for t, row in TARGETS.items()}
        coadd, rr = _write(healpix_coadd(root, pixel), ids)
        made[coadd] = rr
    lonely, _ = _write(healpix_coadd(root, 2001, program="dark"), {5: TARGETS[101]}, redrock=False)
    (root / "main" / "bright" / "100" / "notes.txt").write_text("not a coadd")
    return made, lonely


def test_tree_walk_finds_every_coadd_and_pairs_its_redrock(tmp_path):
    made, lonely = _tree(tmp_path)
    found = find_coadds([tmp_path])
    assert sorted(found) == sorted([*made, lonely])
    for coadd, rr in made.items():
        assert redrock_path(coadd) == rr and rr.exists()
    assert found == sorted(found)  # the same order on every run, whatever the file system's
    # Files and folders mixed; a coadd reached twice is read once.
    first = next(iter(made))
    assert find_coadds([first, tmp_path / "main"]).count(first) == 1


def test_file_list_paths_are_relative_to_the_list(tmp_path):
    made, _ = _tree(tmp_path / "tree")
    listing = tmp_path / "files.txt"
    rel = [c.relative_to(tmp_path) for c in made]
    listing.write_text("# coadds to read\n\n" + "\n".join(map(str, rel)) + "  # trailing note\n")
    assert read_file_list(listing) == [tmp_path / r for r in rel]
    with pytest.raises(FileNotFoundError, match="no such file list"):
        read_file_list(tmp_path / "nope.txt")


def test_ingest_a_tree_with_selection(tmp_path):
    made, lonely = _tree(tmp_path)
    sel = TargetSelection(spectype="GALAXY", zwarn_max=0, target="BGS_BRIGHT,BGS_FAINT")
    coadds = find_coadds([tmp_path])
    ds, skipped = ingest(coadds, "desi", progress=False, chunk_size=4,
                         options=[{"selection": sel}] * len(coadds))
    keep = _expected(lambda s, w, z, b: b & 3 and s == "GALAXY" and w == 0)
    expected = sorted(t + 1000 * k for k in range(3) for t in keep)
    assert sorted(ds["galaxy"].values.tolist()) == expected
    assert [s.path for s in skipped] == [str(lonely)]
    assert "redrock-main-dark-2001.fits" in skipped[0].reason
    assert selection_removed(ds) == {"target": 3 * 2, "spectype": 3 * 2, "zwarn": 3 * 2}
    assert "selection_removed" not in ds.attrs


def test_selection_that_keeps_nothing_says_so(tmp_path):
    made, _ = _tree(tmp_path)
    sel = TargetSelection(z_min=5.0)
    with pytest.raises(NothingRead, match=r"selection removed every target.*z 24"):
        ingest(list(made), "desi", progress=False, options=[{"selection": sel}] * len(made))


def test_pipeline_files_input_selects_as_the_cli_does(tmp_path):
    import yaml

    from survey_denoise.cli.ingest import desi as desi_command
    from survey_denoise.pipeline import stages
    from survey_denoise.pipeline.config import ConfigError, DesiSelect, load_config

    cli = {p.name: p.default for p in desi_command.params}
    for name, field in DesiSelect.model_fields.items():
        assert cli[name] == field.default is None, name  # same default: no selection

    made, _ = _tree(tmp_path / "healpix")
    config = {"name": "bgs", "outputs": {"dir": str(tmp_path / "run")},
              "input": {"files": {"paths": [str(tmp_path / "healpix/main/bright/*/*/coadd-*.fits")],
                                  "format": "desi",
                                  "select": {"spectype": ["GALAXY"], "zwarn_max": 0,
                                             "target": ["BGS_BRIGHT", "BGS_FAINT"]}}}}
    path = tmp_path / "bgs.yaml"
    path.write_text(yaml.safe_dump(config))
    ds, skipped = stages.ingest(load_config(path), None)
    keep = _expected(lambda s, w, z, b: b & 3 and s == "GALAXY" and w == 0)
    assert sorted(ds["galaxy"].values.tolist()) == sorted(
        t + 1000 * k for k in range(3) for t in keep)
    assert not skipped and selection_removed(ds) == {"target": 6, "spectype": 6, "zwarn": 6}

    config["input"]["files"]["select"]["target"] = ["BGS_SHINY"]
    config["input"]["files"]["format"] = None
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "BGS_SHINY" in str(err.value)
    config["input"]["files"]["select"] = {"zwarn_max": 0}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="set format: desi"):
        load_config(path)


def _arrays_in_graph(array) -> int:
    """Bytes of numpy data held in a dask array's graph (what the driver would ship)."""
    total = 0
    for value in dict(array.__dask_graph__()).values():
        value = getattr(value, "value", value)  # dask's DataNode wraps literal data
        if isinstance(value, np.ndarray):
            total += value.nbytes
    return total


def test_on_a_cluster_the_spectra_stay_on_the_workers(tmp_path):
    from survey_denoise.cluster import connect
    from survey_denoise.io.store import open_store, write_store

    made, lonely = _tree(tmp_path / "healpix")
    sel = TargetSelection(zwarn_max=0, target="BGS_ANY")
    coadds = find_coadds([tmp_path / "healpix"])
    options = [{"selection": sel}] * len(coadds)
    local, skipped_local = ingest(coadds, "desi", progress=False, chunk_size=5, options=options)
    assert _arrays_in_graph(local["flux"].data) > 0  # threads: read into this process
    with connect("local", 2, echo=None) as client:
        ds, skipped = ingest(coadds, "desi", client=client, progress=False, chunk_size=5,
                             options=options)
        assert _arrays_in_graph(ds["flux"].data) == 0
        assert skipped == skipped_local and selection_removed(ds) == selection_removed(local)
        write_store(ds, tmp_path / "raw.zarr", client=client, progress=False)
    back = open_store(tmp_path / "raw.zarr", frame="observed")
    assert back["galaxy"].values.tolist() == local["galaxy"].values.tolist()
    assert back.chunks["galaxy"] == local.chunks["galaxy"]
    for name in ("flux", "ivar", "mask", "z", "flags", "fibermap_bgs_target", "source_file"):
        np.testing.assert_array_equal(back[name].values, local[name].values)
    for name in ("flux", "ivar", "mask"):
        assert back[name].dtype == local[name].dtype
        assert back[name].attrs == local[name].attrs
