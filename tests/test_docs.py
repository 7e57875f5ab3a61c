"""The documentation names files that exist: results, scripts, modules and tests it cites."""

from __future__ import annotations

import glob
import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CITED = re.compile(r"(?<![\w/.])((?:pipelines|benchmarks|docs|tests|survey_denoise|cluster|scripts)/[\w./{},*\-]+)")
RETIRED = {"pipelines/table6.py", "pipelines/figure7.py"}
"""Scripts the results history names as the former way to make a figure (now pipeline configs)."""


def _expand(ref: str) -> list[str]:
    """Shell-style braces: ``a_{x,y}.csv`` -> ``a_x.csv``, ``a_y.csv``."""
    m = re.search(r"\{([^{}]*)\}", ref)
    if not m:
        return [ref]
    return list(itertools.chain.from_iterable(
        _expand(ref[:m.start()] + alt + ref[m.end():]) for alt in m.group(1).split(",")))


def _exists(ref: str) -> bool:
    # A cited prefix (`..._seed13` for `..._seed13.json`, a glob) counts when something matches it.
    return (REPO / ref).exists() or bool(glob.glob(str(REPO / ref) + "*"))


def test_every_cited_path_exists():
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in CITED.finditer(line):
                ref = match.group(1).rstrip(".,;:)*").split("::")[0]
                if "NAME" in ref or "..." in ref or ref in RETIRED:
                    continue  # a placeholder, an elided name, or a retired script named as such
                missing += [f"{doc.relative_to(REPO)}:{number}: {r}" for r in _expand(ref) if not _exists(r)]
    assert not missing, "\n".join(missing)


def test_the_results_contents_link_to_its_sections():
    text = (REPO / "docs" / "results.md").read_text()
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^## (.+)$", text, flags=re.M)}
    links = re.findall(r"^- \[.*?\]\(#(.*?)\)$", text, flags=re.M)
    assert links and set(links) <= anchors, set(links) - anchors
