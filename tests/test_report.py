"""The run's pages: results/report.html (sparsenets.report, the workflow's rule `report`), opened in a real
browser; and `snakemake --report` after a tiny run, one self-contained page with every figure and its caption."""
from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, snakemake
from sparsenets import claims, figures, study
from sparsenets import report as one_page

FIGURES = {"phew": ["accuracy_vs_density", "layer_widths", "path_kernel", "train_loss"],
           "deconstructing": ["reinit", "sensitivity", "indegree", "freezing"]}


@pytest.fixture(scope="module")
def report(tiny_run):
    """The report's results, as the page embeds them: path -> name, caption (HTML), data URI, ..."""
    page = tiny_run / "report.html"
    snakemake(tiny_run, "--report", str(page), "--config", "preset=tiny")
    html = page.read_text()
    assert "This report covers preset" in html  # the workflow's description
    return json.loads(re.search(r"var results = (\{.*\});", html)[1])


@pytest.mark.e2e
def test_every_figure_is_embedded_with_its_own_caption(report):
    figures = {f"results/{study}/figures/{fig}.png": fig for study, figs in FIGURES.items() for fig in figs}
    assert figures.keys() <= report.keys()
    captions = set()
    for path, fig in figures.items():
        result = report[path]
        assert result["data_uri"].startswith("data:image/png;") and ";base64," in result["data_uri"], path
        assert result["labels"] == {"figure": fig}
        caption = result["caption"]
        assert "The paper claims" in caption and "How to read it" in caption and "tiny" in caption, path
        assert "System Message" not in caption, caption  # the caption's reStructuredText is valid
        captions.add(caption)
    assert len(captions) == len(figures)  # each figure has its own text


@pytest.mark.e2e
def test_claims_are_a_table_in_the_report(report):
    claims = report["results/claims.csv"]
    assert claims["data_uri"].startswith("data:text/csv;")
    assert "<table" in claims["caption"] and "verdict" in claims["caption"] and "C7" in claims["caption"]


@pytest.mark.e2e
def test_the_one_page_report_is_linked_from_snakemakes_report(report):
    assert report["results/report.html"]["data_uri"].startswith("data:text/html")


# ------------------------------------------------------------------------ results/report.html (sparsenets.report)
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
TEMPLATE = REPO / "workflow" / "report" / "figure.rst"
NUMBER = {"quantity": "final test accuracy", "method": "phew", "density": 0.05, "detail": "", "mean": 0.61,
          "ci_low": 0.55, "ci_high": 0.67, "n_seeds": 3, "seeds": "0 1 2"}


def the_claims() -> list[dict]:
    """One verdict of each kind; C4 has no numbers (not enough runs)."""
    return [{"study": "phew", "id": "C3", "claim": claims.CLAIMS["C3"], "network": "mlp/digits", "verdict": v,
             "measured": f"measured {v}", "numbers": [{**NUMBER, "study": "phew", "id": "C3", "network": "mlp/digits",
                                                       "verdict": v}]}
            for v in ("reproduced", "not reproduced", "inconclusive")] + [
        {"study": "deconstructing", "id": "C4", "claim": claims.CLAIMS["C4"], "network": "convnet/digits",
         "verdict": "not enough runs", "measured": "no random-like-imp runs", "numbers": []}]


@pytest.fixture()
def results(tmp_path, monkeypatch):
    """The tiny preset's report context, with its files made up under tmp_path: every figure one drawn PNG,
    the claims written by sparsenets.claims, a small dataset."""
    monkeypatch.chdir(tmp_path)
    job = next(j for j in study.expand(CONFIG, "tiny") if j.kind == "report")
    context = json.loads(job.params["context"])
    runs = pd.DataFrame([{"study": "phew", "dataset": "digits", "model": "mlp", "method": m, "density": d, "seed": 0,
                          "variant": "original", "final_test_acc": 0.5 + d} for m in ("random", "phew")
                         for d in (0.05, 0.2)])
    runs.to_csv(tmp_path / "runs.csv", index=False)
    png = tmp_path / "figure.png"
    figures.draw("accuracy_vs_density", [str(tmp_path / "runs.csv")], [str(png)], preset="tiny")
    for f in context["figures"]:
        Path(f["png"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, f["png"])
    claims.write(the_claims(), context["claims"]["md"], context["claims"]["csv"], preset="tiny")
    for path in context["data"].values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, y_train=np.zeros(1200), y_test=np.zeros(345))
    return context


def test_the_page_holds_the_grid_the_verdicts_and_every_captioned_figure(results, monkeypatch):
    monkeypatch.setenv("SPARSENETS_GIT_COMMIT", "abc1234")
    one_page.write(results, "results/report.html", str(TEMPLATE))
    page = Path("results/report.html").read_text()
    images = re.findall(r"<img src='data:image/png;base64,([^']+)'", page)
    figures = sum(len(s.protocol.figures) for s in study.studies(CONFIG, "tiny"))  # 4 per study, variants too
    assert len(images) == len(results["figures"]) == figures >= 8
    assert base64.b64decode(images[0]) == Path(results["figures"][0]["png"]).read_bytes()
    assert page.count("The paper claims") == figures and "How to read it" in page and "System Message" not in page
    assert "Preset tiny. 1 seed (0)." in page  # the figure's own caption line, read back from the PNG
    assert "git commit <code>abc1234</code>" in page and "UTC" in page
    assert "<td>1 (0)</td><td>2 (tiny)</td><td>1,200</td><td>345</td>" in page  # seeds, epochs, train, test
    for mark in ("✅", "❌", "❔", "⚪"):
        assert mark in page
    assert page.count("0.61 [0.55, 0.67]") == 3 and "no random-like-imp runs" in page
    assert "measured inconclusive" in page and claims.CLAIMS["C4"] in page


def test_a_missing_figure_is_named_and_no_page_is_written(results, capsys):
    from sparsenets.cli import main

    Path(results["figures"][2]["png"]).unlink()
    rc = main(["report", "--context", json.dumps(results), "--caption-template", str(TEMPLATE),
               "--out", "results/report.html"])
    err = capsys.readouterr().err
    assert rc == 1 and results["figures"][2]["png"] in err and "run the pipeline" in err
    assert "Traceback" not in err and not Path("results/report.html").exists()


CHECK = """<script>window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.setAttribute("data-check", JSON.stringify({images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    claims: document.querySelectorAll("#claims-table tr.claim").length}));
});</script>"""


def chromium() -> str:
    """Debian's chromium, installed on first use (as the cluster tests install slurm)."""
    from cluster import ensure_debian_packages

    ensure_debian_packages({"chromium": "chromium"})
    return shutil.which("chromium")


def open_in_chromium(page: Path, *args: str) -> str:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=10000", *args, page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.e2e
def test_the_pipelines_page_opens_in_a_browser_with_every_image_loaded(tiny_run, tmp_path):
    page = tiny_run / "results" / "report.html"  # written by the workflow's rule `report`
    assert (tiny_run / "results" / "logs" / "report.log").exists()
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    dom = open_in_chromium(checked, "--dump-dom")
    found = json.loads(html.unescape(re.search(r'data-check="([^"]+)"', dom)[1]))
    n_figures = sum(len(figs) for figs in FIGURES.values())
    assert found["images"] == found["loaded"] >= n_figures
    assert found["claims"] >= 8  # C1-C3 on phew, C4-C7 and C5b on deconstructing
    shot = tmp_path / "report.png"
    open_in_chromium(page, "--window-size=1200,2200", f"--screenshot={shot}")
    assert shot.stat().st_size > 50_000
