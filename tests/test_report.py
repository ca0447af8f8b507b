"""`snakemake --report` after a tiny run: one self-contained page with every figure and its caption."""
from __future__ import annotations

import json
import re

import pytest

from conftest import snakemake

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
