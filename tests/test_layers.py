"""The package's layering, read from the sources (so an import inside a function counts too).

Science and fitting are libraries the mock, the plots and the report use,
never the other way round; matplotlib lives only in the plotting modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import survey_denoise

PACKAGE = Path(survey_denoise.__file__).parent
LIBRARIES = ("fitting", "science")
FORBIDDEN = ("survey_denoise.mock", "survey_denoise.plots", "survey_denoise.report", "matplotlib")
PLOTTING = {"plots.py", "report.py", "figures.py"}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            # ``from .. import mock`` imports a module through its parent.
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _breaks(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("path", sorted(p for lib in LIBRARIES for p in (PACKAGE / lib).rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_fitting_and_science_import_no_mock_plots_or_matplotlib(path):
    bad = sorted(n for n in imported_modules(path) if _breaks(n, FORBIDDEN))
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_only_plotting_modules_import_matplotlib():
    bad = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name not in PLOTTING and any(_breaks(n, ("matplotlib",)) for n in imported_modules(p)))
    assert not bad, f"matplotlib imported outside plots.py, report.py and */figures.py: {bad}"


def test_the_import_reader_resolves_relative_and_lazy_imports():
    fitting = PACKAGE / "fitting" / "fast.py"
    names = imported_modules(fitting)
    assert "survey_denoise.lines" in names          # from .. import lines
    assert "survey_denoise.resample" in names       # lazy, inside continuum_basis
    assert "survey_denoise.fitting.templates" in names
