#!/usr/bin/env bash
# Rewrite constraints/ci.txt from the active environment.
#
# Run it in an environment made by scripts/install-dev.sh (or one upgraded
# from it) once `python -m pytest -q -n 2 -m "slow or not slow"` passes there.
# The package itself (installed editable) is left out.
set -euo pipefail

cd "$(dirname "$0")/.."
{
    echo "# Exact versions for CI and scripts/install-dev.sh (pip -c); users get pyproject.toml's ranges."
    echo "# Python $(python -c 'import platform; print(platform.python_version())'); regenerate with: bash scripts/freeze-constraints.sh"
    python -m pip freeze --exclude-editable | grep -v -i -E '^survey[-_]denoise([=@ ]|$)'
} > constraints/ci.txt
echo "wrote constraints/ci.txt ($(grep -c '==' constraints/ci.txt) pinned packages)"
