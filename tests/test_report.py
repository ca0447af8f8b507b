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
from sparsenets import claims, figures, paper_tables, provenance, study
from sparsenets import report as one_page

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
# the tiny preset's figures per study (its variant studies included)
FIGURES = {s.name: list(s.protocol.figures) for s in study.studies(CONFIG, "tiny")}


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
    assert len(captions) == len(set(figures.values()))  # each kind of figure has its own text (variant studies share it)


@pytest.mark.e2e
def test_claims_are_a_table_in_the_report(report):
    claims = report["results/claims.csv"]
    assert claims["data_uri"].startswith("data:text/csv;")
    assert "<table" in claims["caption"] and "verdict" in claims["caption"] and "C7" in claims["caption"]


@pytest.mark.e2e
def test_the_one_page_report_is_linked_from_snakemakes_report(report):
    assert report["results/report.html"]["data_uri"].startswith("data:text/html")


# ------------------------------------------------------------------------ results/report.html (sparsenets.report)
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
    for entry in context["paper_tables"]:
        paper_runs().to_csv(tmp_path / "paper-runs.csv", index=False)
        Path(entry["csv"]).parent.mkdir(parents=True, exist_ok=True)
        paper_tables.write(tmp_path / "paper-runs.csv", entry["csv"], entry["tex"], study=entry["study"], preset="tiny")
    return context


def test_the_page_holds_the_grid_the_verdicts_and_every_captioned_figure(results, monkeypatch):
    monkeypatch.setenv("SPARSENETS_GIT_COMMIT", "abc1234")
    one_page.write(results, "results/report.html", str(TEMPLATE))
    page = Path("results/report.html").read_text()
    images = re.findall(r"<img tabindex='0' src='data:image/png;base64,([^']+)'", page)
    figures = sum(len(s.protocol.figures) for s in study.studies(CONFIG, "tiny"))  # 4 per study, variants too
    assert len(images) == len(results["figures"]) == figures >= 8
    assert base64.b64decode(images[0]) == Path(results["figures"][0]["png"]).read_bytes()
    assert page.count("The paper claims") == figures and "How to read it" in page and "System Message" not in page
    assert page.count("<details><summary>the claim, how to read it</summary>") == figures  # folded away
    assert "Preset tiny. 1 seed (0)." in page  # the figure's own caption line, read back from the PNG
    assert "git commit <code>abc1234</code>" in page and "UTC" in page and "provenance-warning" not in page
    assert "<td>1 (0)</td><td>2 (tiny)</td><td>1,200</td><td>345</td>" in page  # seeds, epochs, train, test
    for verdict, glyph in (("reproduced", "✓"), ("not reproduced", "✗"), ("inconclusive", "?"),
                           ("not enough runs", "–")):
        assert f"{glyph} {verdict}</span>" in page
    assert page.count("0.61 [0.55, 0.67]") == 3 and "no random-like-imp runs" in page
    assert "measured inconclusive" in page and claims.CLAIMS["C4"] in page
    assert "runs in MLflow" not in page  # the store is no server: nothing to link to


def test_the_page_states_where_its_results_came_from(results, monkeypatch):
    """Commit (with the dirty mark and a visible warning when it is unknown or dirty), preset, each data file's
    name and sha256, in the page and in claims.md; the digest is cached beside the file."""
    from sparsenets.cli import main

    data = results["data"]["digits"]
    digest = provenance.sha256(data)
    assert Path(data + ".sha256").exists() and provenance.sha256(data) == digest
    for commit, warned in (("abc1234", False), ("abc1234-dirty", True), ("unknown", True)):
        monkeypatch.setenv("SPARSENETS_GIT_COMMIT", commit)
        page = one_page.build(results, str(TEMPLATE.read_text()))
        assert f"git commit <code>{commit}</code>" in page and "preset <code>tiny</code>" in page
        assert f"<code>digits.npz</code> sha256 <code title='{digest}'>" in page
        assert ("id='provenance-warning'" in page) == warned
    monkeypatch.setenv("SPARSENETS_GIT_COMMIT", "abc1234-dirty")
    assert main(["claims", "--preset", "tiny", "--data", data, "--md", "c.md", "--csv", "c.csv"]) == 0
    md = Path("c.md").read_text()
    assert f"commit `abc1234-dirty`" in md and f"data `digits.npz` sha256 `{digest}`" in md
    assert "**Warning: the code had uncommitted changes" in md
    monkeypatch.delenv("SPARSENETS_GIT_COMMIT")
    assert provenance.commit() == provenance.describe_commit() != ""
    assert provenance.describe_commit(Path("/")) == "unknown" and provenance.warning("unknown")


def test_each_claim_links_to_its_runs_when_the_store_is_a_server(results, monkeypatch):
    marker = Path(results["summary"])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"uri": "http://mlflow.example:5000/", "runs": {"phew": "r1"},
                                  "experiments": {"phew": "7", "deconstructing": "8"}}))
    page = one_page.build(results, str(TEMPLATE.read_text()))
    links = re.findall(r"<a class='runs' href='([^']+)'", page)
    assert len(links) == 4 and links[0] == ("http://mlflow.example:5000/#/experiments/7?searchFilter=tags.model%20%3D"
                                            "%20%27mlp%27%20AND%20tags.dataset%20%3D%20%27digits%27")
    assert links[-1].startswith("http://mlflow.example:5000/#/experiments/8?")
    marker.write_text(json.dumps({"uri": "sqlite:////x/mlflow.db", "runs": {}, "experiments": {"phew": "1"}}))
    assert "runs in MLflow" not in one_page.build(results, str(TEMPLATE.read_text()))


def test_the_page_shows_and_links_each_studys_paper_table(results):
    one_page.write(results, "results/report.html", str(TEMPLATE))
    page = Path("results/report.html").read_text()
    for entry in results["paper_tables"]:
        rel = Path(entry["tex"]).relative_to("results")
        csv = Path(entry["csv"]).relative_to("results")
        assert f"<a href='{rel}'>TEX</a>" in page and f"<a href='{csv}'>CSV</a>" in page
    assert page.count("<table class='paper'>") == 2 * len(results["paper_tables"])  # own and fresh weights
    assert "fresh weights (reinit)" in page and "<th>25%</th><th>6.25%</th>" in page


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
  const rgb = c => (c.match(/[\\d.]+/g) || []).slice(0, 3).map(Number);
  const lum = c => { const v = rgb(c).map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
                     return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const contrast = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const badges = [...document.querySelectorAll("#claims-table .badge")].map(b => {
    const s = getComputedStyle(b), r = b.getBoundingClientRect();
    return {text: b.textContent, contrast: contrast(s.color, s.backgroundColor), width: r.width, height: r.height}; });
  const links = [...document.querySelectorAll(".paper-table summary a")].map(a => a.getAttribute("href"));
  document.body.setAttribute("data-check", JSON.stringify({images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    claims: document.querySelectorAll("#claims-table tr.claim").length, badges: badges, links: links,
    provenance: document.querySelector("#provenance").textContent,
    warning: !!document.querySelector("#provenance-warning"),
    folded: [...document.querySelectorAll("figure details")].filter(d => !d.open).length,
    height: document.documentElement.scrollHeight}));
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
    """The page as a reader sees it: every image loaded, every verdict a legible badge (text with contrast ≥ 4.5),
    the provenance stated, the tables for a paper linked to files that exist, captions folded, the page compact.
    Screenshots stay in the test's folder (their paths are printed)."""
    results = tiny_run / "results"
    page = results / "report.html"  # written by the workflow's rule `report`
    assert (results / "logs" / "report.log").exists()
    checked = results / "checked.html"  # beside the page, so its relative links resolve
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    dom = open_in_chromium(checked, "--window-size=1400,1000", "--dump-dom")
    checked.unlink()
    found = json.loads(html.unescape(re.search(r'data-check="([^"]+)"', dom)[1]))
    n_figures = sum(len(figs) for figs in FIGURES.values())
    assert found["images"] == found["loaded"] >= n_figures and found["folded"] == n_figures
    assert found["claims"] >= 8  # C1-C3 on phew, C4-C7 and C5b on deconstructing
    for b in found["badges"]:
        assert b["contrast"] >= 4.5 and b["width"] > 40 and b["height"] > 10, b
        assert re.fullmatch(r"[✓✗?–○] [a-z' ]+", b["text"]), b
    assert re.search(r"git commit [0-9a-f]{40}(-dirty)?|git commit unknown", found["provenance"])
    assert "digits.npz sha256" in found["provenance"] and "preset tiny" in found["provenance"]
    assert found["warning"] == ("-dirty" in found["provenance"] or "unknown" in found["provenance"])
    assert sorted(found["links"]) == sorted(f"{s}/tables/accuracy.{ext}" for s in FIGURES for ext in ("csv", "tex"))
    assert all((results / link).is_file() for link in found["links"])
    assert found["height"] < 600 * n_figures, found["height"]  # was ~1,050 px a figure before they went two to a row
    shots = {"report.png": f"--window-size=1400,{found['height'] + 100}", "report-top.png": "--window-size=1400,1000"}
    for name, size in shots.items():
        open_in_chromium(page, size, f"--screenshot={tmp_path / name}")
        assert (tmp_path / name).stat().st_size > 50_000
        print(f"screenshot: {tmp_path / name}")


@pytest.mark.e2e
def test_the_pipelines_paper_tables_compile(tiny_run, tmp_path):
    """After the tiny pipeline every study has its method x density table, and its LaTeX compiles (pdflatex)."""
    texs = sorted((tiny_run / "results").glob("*/tables/*.tex"))
    assert [t.parent.parent.name for t in texs] == sorted(FIGURES) and {t.stem for t in texs} == {"accuracy"}
    for tex in texs:
        csv = pd.read_csv(tex.with_suffix(".csv"))
        runs = pd.read_csv(tex.with_name("runs.csv"))
        unfrozen = runs[runs["freeze_epoch"].isna()] if "freeze_epoch" in runs else runs
        assert set(csv["method"]) == set(unfrozen["method"])
        assert csv["n_seeds"].min() >= 1 and r"\toprule" in tex.read_text()
    pdf = compile_tex(texs, tmp_path)
    print(f"tables compiled: {pdf}")
    claims_md = (tiny_run / "results" / "claims.md").read_text()
    assert "Provenance: commit `" in claims_md and "data `digits.npz` sha256 `" in claims_md


# ------------------------------------------------------------------------------ tables for a paper (paper_tables)
def paper_runs() -> pd.DataFrame:
    """A deconstructing-like runs table: 2 methods x 2 densities x 3 seeds, own and fresh weights, one frozen run,
    one diverged run, a method whose name LaTeX must escape."""
    rows = [{"study": "deconstructing", "dataset": "cifar10", "model": "resnet20", "method": m, "density": d, "seed": s,
             "variant": v, "freeze_epoch": np.nan, "diverged": False,
             "final_test_acc": 0.5 + 0.1 * (m == "imp") + d + 0.01 * s - 0.05 * (v == "reinit")}
            for m in ("random", "imp", "my_method") for d in (0.25, 0.0625) for s in (0, 1, 2)
            for v in ("original", "reinit")]
    rows.append({**rows[0], "method": "dnw-freeze1", "freeze_epoch": 1.0})
    rows.append({**rows[0], "method": "imp", "density": 0.25, "seed": 3, "final_test_acc": np.nan, "diverged": True})
    return pd.DataFrame(rows)


def test_the_paper_table_holds_mean_and_95_interval_per_method_and_density(tmp_path):
    from sparsenets import paper_tables, stats

    paper_runs().to_csv(tmp_path / "runs.csv", index=False)
    table = paper_tables.write(tmp_path / "runs.csv", tmp_path / "accuracy.csv", tmp_path / "accuracy.tex",
                               study="deconstructing", preset="quick")
    csv = pd.read_csv(tmp_path / "accuracy.csv")
    assert list(csv.columns) == paper_tables.COLUMNS and len(csv) == len(table) == 3 * 2 * 2  # frozen run left out
    cell = csv[(csv["method"] == "imp") & (csv["density"] == 0.25) & (csv["weights"] == "own weights")].iloc[0]
    iv = stats.t_interval({s: 0.6 + 0.25 + 0.01 * s for s in (0, 1, 2)})
    assert (cell["mean"], cell["ci_low"], cell["ci_high"]) == pytest.approx((iv.mean, iv.low, iv.high), rel=1e-5)
    assert cell["n_seeds"] == 3 and cell["seeds"] == "0 1 2"  # the diverged seed 3 has no accuracy
    assert list(dict.fromkeys(csv["method"])) == ["random", "imp", "my_method"]  # the figures' order
    tex = (tmp_path / "accuracy.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 1 and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"my\_method" in tex and r"\emph{fresh weights (reinit)}" in tex and "1 diverged run(s) left out" in tex
    assert rf"{100 * iv.mean:.1f} $\pm$ {100 * iv.half_width:.1f}" in tex
    assert r"\label{tab:deconstructing-resnet20-cifar10}" in tex


def test_a_runs_table_without_accuracy_is_named(tmp_path):
    from sparsenets.cli import main

    pd.DataFrame({"model": ["mlp"], "dataset": ["digits"]}).to_csv(tmp_path / "runs.csv", index=False)
    rc = main(["paper-table", "--runs", str(tmp_path / "runs.csv"), "--study", "phew", "--csv",
               str(tmp_path / "a.csv"), "--tex", str(tmp_path / "a.tex")])
    assert rc == 1 and not (tmp_path / "a.tex").exists()


def pdflatex() -> str:
    """Debian's pdflatex with booktabs, installed on first use (as the browser tests install chromium)."""
    import os

    from cluster import ensure_debian_packages, run_checked

    ensure_debian_packages({"pdflatex": "texlive-latex-base"})
    if subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True).returncode:
        run_checked(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "--no-install-recommends",
                     "texlive-latex-recommended"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("pdflatex")


def compile_tex(tables: list[Path], work: Path) -> Path:
    """\\input every table into a minimal article and run pdflatex on it; a LaTeX error fails with its log."""
    doc = work / "tables.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   + "".join(f"\\input{{{t.resolve()}}}\n\\clearpage\n" for t in tables) + "\\end{document}\n")
    done = subprocess.run([pdflatex(), "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=work,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:]

    return work / "tables.pdf"


def test_the_paper_tables_latex_compiles(tmp_path):
    from sparsenets import paper_tables

    paper_runs().to_csv(tmp_path / "runs.csv", index=False)
    paper_tables.write(tmp_path / "runs.csv", tmp_path / "a.csv", tmp_path / "a.tex", study="deconstructing",
                       preset="quick")
    pdf = compile_tex([tmp_path / "a.tex"], tmp_path)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000
