"""The public API: every advertised name resolves, and importing stays light."""

import subprocess
import sys

import survey_denoise as sd


def test_every_public_name_resolves():
    for name in sd.__all__:
        assert getattr(sd, name) is not None, name


def test_import_does_not_pull_in_tensorflow_or_ppxf():
    code = ("import sys, survey_denoise; "
            "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'ppxf')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_name_is_an_attribute_error():
    try:
        sd.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("expected AttributeError")
