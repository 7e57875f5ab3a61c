"""The shipped pipelines end with a full report: run them small, render the page in chromium.

Each test runs a shipped config (``pipelines/quickstart.yaml``,
``pipelines/paper.yaml``) at a tiny size through the command line, then
loads the ``report.html`` the run wrote in headless chromium and checks that
every section the run record can fill is there and not empty, that the
page's Table 6 holds the numbers of the CSV the run wrote, and that every
figure loads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml
from _services import require

REPO = Path(__file__).resolve().parents[1]

# Recorded output (kind, name) -> the report section it fills.
FILLS = {("table", "reconstruction_mse"): "reconstruction", ("table", "examples"): "examples",
         ("table", "table6"): "lines", ("table", "latent"): "latent", ("table", "mzr_test"): "mzr"}


class _Page(HTMLParser):
    """Per section id: its tables (rows of cell texts), image sources and widths, and text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: dict | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "section":
            self.current = self.sections.setdefault(a["id"], {"tables": [], "imgs": [], "text": []})
        if self.current is None:
            return
        if tag == "table":
            self.current["tables"].append([])
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            self.current["imgs"].append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.current is not None:
            self.current["tables"][-1].append(self.row)
            self.row = None
        elif tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self.current is not None:
            self.current["text"].append(data)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium_run(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", "--allow-file-access-from-files",
               f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": profile})
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _render(report: Path, shot: Path) -> _Page:
    """The page as chromium built it, each image's naturalWidth in ``data-widths`` on <body>."""
    probe = report.with_name("_probe.html")
    probe.write_text(report.read_text().replace(
        "</body>", "<script>window.addEventListener('load', () => document.body.setAttribute("
                   "'data-widths', Array.from(document.images, i => i.naturalWidth).join(',')));"
                   "</script></body>"))
    dom = _chromium_run("--virtual-time-budget=20000", "--dump-dom", probe.resolve().as_uri())
    probe.unlink()
    assert dom.returncode == 0 and "<body" in dom.stdout, dom.stderr[-2000:]
    shotp = _chromium_run("--window-size=1280,3000", f"--screenshot={shot}", report.resolve().as_uri())
    assert shot.exists(), f"chromium wrote no screenshot: rc={shotp.returncode}\n{shotp.stderr[-2000:]}"
    page = _Page()
    page.feed(dom.stdout)
    return page


def run(*args: object) -> subprocess.CompletedProcess:
    """``survey-denoise ARGS`` in a fresh interpreter, with room for a shared 2-core machine."""
    return subprocess.run([sys.executable, "-c", "from survey_denoise.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, timeout=800)


def _small(config: str, tmp: Path, **override) -> tuple[Path, Path]:
    """A shipped config made tiny: ``override`` maps dotted keys to values."""
    raw = yaml.safe_load((REPO / "pipelines" / config).read_text())
    for dotted, value in override.items():
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp / config
    path.write_text(yaml.safe_dump(raw))
    return path, tmp / "run"


def _check_run_report(folder: Path, tmp: Path) -> None:
    require(None if _chromium() else "Debian's chromium is not installed (apt-get install -y chromium)")
    data = json.loads((folder / "run.json").read_text())
    outputs = data["outputs"]
    for o in outputs:
        assert (folder / o["path"]).exists(), o
        assert {"kind", "name", "path", "step"} <= set(o)
    kinds = {o["kind"] for o in outputs}
    assert {"store", "catalogue", "model", "table", "figure", "report"} <= kinds
    assert data["config"] and data["versions"] and data["invocations"][-1]["stages"]
    report = folder / "report.html"
    assert report.exists(), "the run wrote no report.html"
    shot = tmp / "screenshot.png"
    page = _render(report, shot)

    fillable = {FILLS[(o["kind"], o["name"])] for o in outputs if (o["kind"], o["name"]) in FILLS}
    assert {"reconstruction", "examples", "lines", "latent"} <= fillable
    for anchor in fillable:
        sec = page.sections.get(anchor)
        assert sec is not None, f"section {anchor} is missing from the page"
        assert sec["imgs"] and all(t and len(t) > 1 for t in sec["tables"]), f"section {anchor} is empty"
        assert "Could not build" not in "".join(sec["text"]), f"section {anchor}: {''.join(sec['text'])[:300]}"
    for anchor in set(FILLS.values()) - fillable:
        assert anchor not in page.sections
    widths = [int(w) for w in page.body.get("data-widths", "").split(",") if w]
    n_imgs = sum(len(s["imgs"]) for s in page.sections.values())
    assert len(widths) == n_imgs >= 5 and min(widths) > 0, f"figures not loaded: {widths}"

    # Table 6 on the page holds the numbers of the run's CSV, row by row
    csv = pd.read_csv(folder / next(o["path"] for o in outputs if o["name"] == "table6"))
    table = page.sections["lines"]["tables"][0]
    header, rows = table[0], table[1:]
    assert len(rows) == len(csv)
    for row, (_, want) in zip(rows, csv.iterrows(), strict=True):
        got = dict(zip(header, row, strict=True))
        assert got["case"] == want["case"] and got["line"] == want["line"]
        for col in ("sigma", "sigma_fill", "median_offset", "sigma_truth"):
            assert float(got[col]) == pytest.approx(want[col], rel=1e-3), (col, got, want)

    latent = pd.read_parquet(folder / "latent.parquet")
    assert (latent["class"] != "unknown").all(), "the mock's classes did not reach Figure 6"

    img = mpimg.imread(shot)
    assert img.shape[0] >= 3000 and img.shape[1] >= 1280
    assert img[..., :3].std() > 0.05, "screenshot is blank"


@pytest.mark.slow
@pytest.mark.browser
def test_quickstart_ends_with_a_full_report(tmp_path):
    config, out = _small("quickstart.yaml", tmp_path, **{"input.mock.n": 60, "chunk": 30,
                                                        "stages.train.epochs": 2})
    result = run("run", config, "--out", out, "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in result.stdout
    _check_run_report(out, tmp_path)


@pytest.mark.slow
@pytest.mark.browser
def test_paper_pipeline_report_has_the_papers_figures_and_tables(tmp_path):
    config, out = _small("paper.yaml", tmp_path, **{"input.mock.n": 30, "chunk": 15,
                                                   "stages.train.epochs": 2})
    result = run("run", config, "--out", out, "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    _check_run_report(out, tmp_path)
    html = (out / "report.html").read_text()
    for figure in ("fig6_latent.png", "fig7_mse_vs_latent.png", "fig8_examples.png", "fig9_denoised.png"):
        assert figure in html
    held = pd.read_parquet(out / "heldout.parquet")
    # the products are of the galaxies the model never saw
    lat = pd.read_parquet(out / "latent.parquet")
    assert set(lat["galaxy"]) == set(held["galaxy"]) and np.isfinite(lat.filter(like="z")).all().all()
