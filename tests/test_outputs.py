"""The one place that guards output paths: overlaps, existing outputs, atomic replacement."""

import pytest

from survey_denoise.io.outputs import OutputError, check_outputs, replacing, staging


def test_outputs_overlapping_inputs_are_refused_even_with_overwrite(tmp_path):
    store = tmp_path / "r.zarr"
    (store / "flux").mkdir(parents=True)
    for out, relation in [(store, "is"), (tmp_path / "r.zarr" / "x.parquet", "sits inside"),
                          (tmp_path, "contains"), (tmp_path / "sub" / ".." / "r.zarr", "is")]:
        with pytest.raises(OutputError, match=f"the output {relation} the input"):
            check_outputs([out], [store], overwrite=True)
    (tmp_path / "link.zarr").symlink_to(store)
    with pytest.raises(OutputError, match="the output is the input"):
        check_outputs([tmp_path / "link.zarr"], [store], overwrite=True)
    with pytest.raises(OutputError, match="the output contains the output"):
        check_outputs([tmp_path / "o.zarr", tmp_path / "o.zarr" / "t.parquet"])
    check_outputs([tmp_path / "rest.zarr"], [store])


def test_existing_outputs_need_overwrite_or_a_resumed_store(tmp_path):
    table, store = tmp_path / "t.parquet", tmp_path / "t.zarr"
    table.write_bytes(b"old")
    with pytest.raises(OutputError, match=r"t.parquet exists; pass --overwrite"):
        check_outputs([store, table], resumable=[store])
    # --resume may rewrite files derived from a store it resumes, not any file.
    with pytest.raises(OutputError, match=r"t.parquet exists; pass --overwrite"):
        check_outputs([store, table], resume=True, resumable=[store])
    store.mkdir()
    check_outputs([store, table], resume=True, resumable=[store])
    with pytest.raises(OutputError, match="--resume to finish it or --overwrite"):
        check_outputs([store], resumable=[store])
    check_outputs([store, table], overwrite=True, resumable=[store])


def test_replacing_installs_only_complete_outputs(tmp_path):
    out, folder = tmp_path / "a.csv", tmp_path / "m"
    out.write_text("old")
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replacing(out, folder) as (tmp, tmp_folder):
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old" and not staging(out).exists()
    staging(out).mkdir()  # as a killed run leaves it
    (staging(out) / "a.csv").write_text("stale")
    with replacing(out, folder) as (tmp, tmp_folder):
        assert not tmp.exists()
        tmp.write_text("new")
        tmp_folder.mkdir()
        (tmp_folder / "new.txt").write_text("new")
    assert out.read_text() == "new" and sorted(p.name for p in folder.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "m"]
