"""One self-contained page for a run: results/report.html, to read, mail or archive as it is.

At the top: the preset, where the results came from (sparsenets.provenance: commit with a "-dirty" mark, a
warning when it is unknown or dirty, each data file's name and sha256) and per study its networks, methods,
densities, seeds, epochs and the sizes of the training and test sets. Then every claim's verdict as a coloured
text badge ("✓ reproduced", "? inconclusive", ...: legible without emoji fonts) with its regime (the paper's
setting beside the run's), its robustness to the open choices and what was measured, the numbers it rests on
folded away, and a link to the claim's runs in the MLflow UI when the store is a tracking
server. Then each study's tables for a paper (method × density, with links to their CSV and LaTeX files), and
every figure in a two-column grid (click one to enlarge it), embedded as a PNG data URI with a short caption:
the first paragraph of workflow/report/figure.rst (the caption Snakemake's own `--report` shows), rendered here
without Snakemake; the rest of it, and the figure's caption line read back from the PNG, folded away. No
script, no external file, no network: the page opens anywhere. Torch-free.

`sparsenets.study` spells the job (Grid.report: its inputs and the context below); the rule in
workflow/rules/report.smk runs `python -m sparsenets report`.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .claims import VERDICT_COLUMNS, regime_cell
from .io import write_text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1400px;margin:1.2em auto;padding:0 1em;
color:#222;line-height:1.4;font-size:15px}
h1{margin:.2em 0}h2{margin:1.2em 0 .4em;border-bottom:1px solid #ddd}h3{margin:.8em 0 .3em}
.meta{color:#444;margin:.2em 0}.warn{background:#fff4e5;border:1px solid #f0a030;padding:.4em .7em;border-radius:4px}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .45em;
vertical-align:top;text-align:left}th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap}
table.numbers{margin:.3em 0;font-size:.9em}table.numbers td,table.numbers th{border-color:#e2e2e2}
.badge{display:inline-block;padding:.05em .5em;border-radius:1em;font-weight:600;font-size:.88em;white-space:nowrap;
color:#fff;background:#666}.b-reproduced{background:#1a7f37}.b-not-reproduced{background:#c62828}
.b-inconclusive{background:#e8a317;color:#222}.b-not-enough-runs{background:#9e9e9e;color:#111}
.b-outside{background:#3b6fb6}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:.8em 1.2em}
figure{margin:0;page-break-inside:avoid}figure img{width:100%;height:auto;border:1px solid #eee;cursor:zoom-in}
figure img:focus{position:fixed;inset:2vh 2vw;width:96vw;height:96vh;object-fit:contain;background:#fff;z-index:9;
cursor:zoom-out;box-shadow:0 0 0 100vmax rgba(0,0,0,.5)}
figcaption{font-size:.9em}figcaption p{margin:.3em 0}figcaption .line{color:#555;font-style:italic}
details summary{cursor:pointer;color:#335}details{margin:.2em 0}code{font-size:.92em}
"""
# verdict -> (glyph, css class); a verdict not listed (a newer claims.py's) still gets a grey badge with its text
BADGES = {"reproduced": ("✓", "b-reproduced"), "not reproduced": ("✗", "b-not-reproduced"),
          "inconclusive": ("?", "b-inconclusive"), "not enough runs": ("–", "b-not-enough-runs")}


class ReportError(ValueError):
    """A file the page needs is missing or unreadable; the message names it and what to do."""


# ------------------------------------------------------------------------------------------------- inputs
def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ReportError(f"report: cannot read {what} {path} ({e.strerror}); run the pipeline (snakemake) "
                          f"so it exists, then build the report again") from e


def png_caption(data: bytes) -> str:
    """The caption line a figure stored in its PNG (tEXt 'Description'; sparsenets.figures.save)."""
    pos = 8
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"tEXt":
            key, _, value = data[pos + 8:pos + 8 + size].partition(b"\0")
            if key == b"Description":
                return value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + size
    return ""


def dataset_sizes(paths: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """dataset -> (training images, test images), from the npz files the runs read."""
    sizes = {}
    for name, path in paths.items():
        _read(path, f"dataset {name}")  # a clear error first
        with np.load(path) as npz:
            sizes[name] = (len(npz["y_train"]), len(npz["y_test"]))
    return sizes


def claims_rows(csv_path: str) -> list[dict[str, Any]]:
    """One entry per verdict (study, claim, network): the claim, what was measured, its regime (with the paper's
    setting and the run's), robustness and number rows, all from claims.csv (claims.VERDICT_COLUMNS)."""
    _read(csv_path, "claims table")
    numbers = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
    out = []
    for (study, cid, network, verdict), rows in numbers.groupby(["study", "id", "network", "verdict"], sort=False,
                                                                dropna=False):
        said = {k: "" if pd.isna(v) else str(v) for k, v in rows.iloc[0][VERDICT_COLUMNS].items()}
        out.append({"study": study, "id": cid, "network": "" if pd.isna(network) else str(network), "verdict": verdict,
                    **said, "regime": regime_cell(said), "numbers": rows[rows["quantity"].notna()].to_dict("records")})
    return out


# ------------------------------------------------------------------------------------------------ captions
def figure_caption(template: str | None, config: Mapping[str, Any], study: str, fig: str,
                   tables: Iterable[str]) -> str:
    """The figure's caption as HTML: workflow/report/figure.rst rendered as Snakemake renders it (Jinja, then
    reStructuredText), with the same `snakemake` object fields it reads."""
    if not template:
        return ""
    import jinja2
    from docutils.core import publish_parts

    snakemake = SimpleNamespace(wildcards=SimpleNamespace(fig=fig, study=study), config=config,
                                input=list(tables))
    try:
        rst = jinja2.Template(template, undefined=jinja2.StrictUndefined).render(snakemake=snakemake)
    except jinja2.TemplateError as e:
        raise ReportError(f"report: the caption template cannot be rendered for figure {fig} of study {study}: "
                          f"{e}; fix workflow/report/figure.rst") from e
    rst += "\n\n.. _claims.csv: #claims\n"  # the caption's link to the claims, here on this page
    parts = publish_parts(rst, writer="html5", settings_overrides={
        "report_level": 5, "halt_level": 5, "embed_stylesheet": False, "output_encoding": "unicode"})
    return parts["body"]


# -------------------------------------------------------------------------------------------------- page
def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4g}"


def _interval(n: Mapping[str, Any]) -> str:
    """mean [95 % interval], as claims.md spells it."""
    if str(n.get("quantity", "")).startswith("seeds with"):
        return _num(n["n_seeds"])
    if not n.get("n_seeds") or pd.isna(n.get("mean")):
        return "–"
    if n["n_seeds"] == 1 or pd.isna(n.get("ci_low")):
        return f"{_num(n['mean'])} (one seed)"
    return f"{_num(n['mean'])} [{_num(n['ci_low'])}, {_num(n['ci_high'])}]"


def _studies_table(context: Mapping[str, Any], sizes: Mapping[str, tuple[int, int]]) -> str:
    config = context["config"]
    rows = []
    for name, spec in config["presets"][context["preset"]]["studies"].items():
        recipe = config["recipes"][spec["recipe"]]
        train = [min(sizes[d][0], recipe.get("train_subset") or sizes[d][0]) for d in spec["datasets"] if d in sizes]
        test = [sizes[d][1] for d in spec["datasets"] if d in sizes]
        grid = (f"IMP rate {spec['imp']['rate']}, levels {', '.join(map(str, spec['imp']['levels']))}"
                if "imp" in spec else ", ".join(f"{d:g}" for d in spec.get("densities", [])))
        cells = [name, spec["protocol"], ", ".join(f"{m} / {d}" for d in spec["datasets"] for m in spec["models"]),
                 ", ".join(spec["methods"]), grid, f"{len(spec['seeds'])} ({', '.join(map(str, spec['seeds']))})",
                 f"{recipe['epochs']} ({spec['recipe']})", "; ".join(f"{n:,}" for n in train) or "?",
                 "; ".join(f"{n:,}" for n in test) or "?"]  # one per dataset
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    head = ["study", "protocol", "networks", "methods", "densities", "seeds", "epochs (recipe)", "training images",
            "test images"]
    return ("<table class='studies'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>")


def badge(verdict: str) -> str:
    """A verdict as a coloured text badge: glyph and word, so it reads without colour or emoji fonts."""
    glyph, css = BADGES.get(verdict, ("○", "b-outside" if verdict.startswith("outside") else ""))
    return f"<span class='badge {css}' title='{_e(verdict)}'>{glyph} {_e(verdict)}</span>"


def _numbers(c: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(n['quantity'])}</td><td>{_e(n['method'] if pd.notna(n['method']) else '–')}</td>"
        f"<td class='num'>{_num(n['density'])}</td><td>{_e(n['detail'] if pd.notna(n['detail']) else '')}</td>"
        f"<td class='num'>{_e(_interval(n))}</td><td>{_e(n['seeds'] if pd.notna(n['seeds']) else '–')}</td></tr>"
        for n in c["numbers"])
    return (f"<details><summary>{len(c['numbers'])} number{'s' * (len(c['numbers']) != 1)}</summary><table class='numbers'><tr><th>quantity</th>"
            f"<th>method</th><th>density</th><th>detail</th><th>mean [95 % CI]</th><th>seeds</th></tr>{rows}"
            f"</table></details>") if rows else ""


def _regime(text: str) -> str:
    """The regime's verdict in sight; the paper's setting and the run's (long) folded away."""
    head, sep, settings = text.partition(". Paper:")
    return _e(head) + (f"<details><summary>settings</summary>Paper:{_e(settings)}</details>" if sep else "")


def _claims_table(claims: list[dict[str, Any]], links: Mapping[str, str]) -> str:
    verdicts = list(dict.fromkeys([*BADGES, *(c["verdict"] for c in claims)]))
    counts = " ".join(f"{badge(v)} × {sum(c['verdict'] == v for c in claims)}" for v in verdicts)
    rows = []
    for c in claims:
        link = runs_link(links, c)
        runs = f" <a class='runs' href='{_e(link)}' target='_blank' rel='noopener'>runs in MLflow</a>" if link else ""
        rows.append(f"<tr class='claim'><td>{badge(c['verdict'])}</td><td><b>{_e(c['id'])}</b> {_e(c['claim'])}</td>"
                    f"<td>{_e(c['network'] or '–')}<br><small>{_e(c['study'])}</small></td>"
                    f"<td>{_regime(c.get('regime', ''))}</td><td>{_e(c.get('robustness', ''))}</td>"
                    f"<td>{_e(c['measured'])}{runs}{_numbers(c)}</td></tr>")
    return (f"<p>{counts}<br><small>One row per study, claim and network; a difference within the seed noise is "
            f"never reproduced.</small></p><table id='claims-table' class='claims'><tr><th>verdict</th><th>claim</th>"
            f"<th>network</th><th>regime (paper · this run)</th><th>robustness</th><th>measured (mean over seeds ± 95 % "
            f"t-interval half-width)</th></tr>{''.join(rows)}"
            f"</table>")


# ---------------------------------------------------------------------------------------------- MLflow links
def mlflow_links(summary: str | None) -> dict[str, str]:
    """{"": server URL, study: experiment id} from the mlflow_summary job's marker when the store is a tracking
    server (http or https); {} otherwise (a SQLite file has no UI address to link to)."""
    if not summary or not Path(summary).exists():
        return {}
    try:
        marker = json.loads(Path(summary).read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"report: cannot read the MLflow summary marker {summary} ({e}); run snakemake again") from e
    uri = str(marker.get("uri", ""))
    if not uri.startswith(("http://", "https://")):
        return {}
    return {"": uri.rstrip("/"), **{k: str(v) for k, v in marker.get("experiments", {}).items()}}


def runs_link(links: Mapping[str, str], claim: Mapping[str, Any]) -> str:
    """The MLflow UI's page of the claim's study, its runs filtered to the claim's network; "" without a server."""
    from urllib.parse import quote

    exp = links.get(str(claim["study"]))
    if not links.get("") or not exp:
        return ""
    model, _, dataset = str(claim.get("network") or "").partition("/")
    search = f"tags.model = '{model}' AND tags.dataset = '{dataset}'" if dataset else ""
    return f"{links['']}/#/experiments/{exp}" + (f"?searchFilter={quote(search)}" if search else "")


# ------------------------------------------------------------------------------------------------ provenance
def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def _provenance(prov: Mapping[str, Any], now: dt.datetime) -> str:
    commit = str(prov["commit"])
    data = "; ".join(f"{_e(name)}: <code>{_e(d['file'])}</code> sha256 <code title='{_e(d['sha256'])}'>"
                     f"{_e(d['sha256'][:16])}…</code> ({_size(d['bytes'])})"
                     for name, d in prov["data"].items())
    warn = f"<p class='warn' id='provenance-warning'>⚠ Warning: {_e(prov['warning'])}.</p>" if prov["warning"] else ""
    return (f"<p class='meta' id='provenance'>git commit <code>{_e(commit)}</code> · preset <code>{_e(prov['preset'])}"
            f"</code> · built {now:%Y-%m-%d %H:%M} UTC<br>data: {data or '–'}</p>{warn}")


# ---------------------------------------------------------------------------------------------- paper tables
def _paper_tables(entries: list[Mapping[str, Any]], base: str) -> str:
    """Each study's method × density tables, with links to their CSV and LaTeX files (relative to the page)."""
    from . import paper_tables

    out = []
    for entry in entries:
        _read(entry["csv"], f"paper table {entry['name']} of study {entry['study']}")
        table = pd.read_csv(entry["csv"], keep_default_na=False, na_values=[""])
        links = " · ".join(f"<a href='{_e(os.path.relpath(entry[ext], base))}'>{ext.upper()}</a>"
                           for ext in ("csv", "tex"))
        blocks = []
        for network, weights in paper_tables.networks(table):
            densities, rows = paper_tables.matrix(table, network, weights)
            head = "".join(f"<th>{100 * d:.3g}%</th>" for d in densities)
            body = "".join(f"<tr><td>{_e(m)}</td>" + "".join(f"<td class='num'>{_e(v)}</td>" for v in cells)
                           + "</tr>" for m, cells in rows)
            blocks.append(f"<table class='paper'><caption>{_e(network)}, {_e(weights)}</caption><tr><th>method</th>"
                          f"{head}</tr>{body}</table>")
        out.append(f"<details class='paper-table' id='table-{_e(entry['study'])}-{_e(entry['name'])}'><summary>"
                   f"<b>{_e(entry['study'])}</b>: final test accuracy (%), mean ± 95 % interval half-width over "
                   f"seeds ({links})</summary>{''.join(blocks)}</details>")
    return "".join(out)


def _figure(entry: Mapping[str, Any], template: str | None, config: Mapping[str, Any]) -> str:
    """The figure with its caption's first paragraph; the rest and the PNG's caption line folded away."""
    data = _read(entry["png"], f"figure {entry['fig']} of study {entry['study']}")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    text = figure_caption(template, config, entry["study"], entry["fig"], entry.get("tables", []))
    head, sep, rest = text.partition("</p>")
    line = png_caption(data)
    more = (rest if sep else "") + (f"<p class='line'>{_e(line)}</p>" if line else "")
    folded = f"<details><summary>the claim, how to read it</summary>{more}</details>" if more.strip() else ""
    return (f"<figure id='{_e(entry['study'])}-{_e(entry['fig'])}'><img tabindex='0' src='{uri}' "
            f"alt='{_e(entry['fig'])} ({_e(entry['study'])})'><figcaption>{head}{sep}{folded}</figcaption></figure>")


def build(context: Mapping[str, Any], template: str | None = None, now: dt.datetime | None = None,
          base: str = "results") -> str:
    """The page. `context` (sparsenets.study.Grid.report): preset, config (its studies and recipes), figures
    [{study, fig, png, tables}], paper_tables [{study, name, csv, tex}], claims {csv, md}, data {dataset: npz},
    summary (the MLflow marker); `template`: the figure caption text; `base`: the page's folder (for links)."""
    from . import provenance

    now = now or dt.datetime.now(dt.timezone.utc)
    config, preset = context["config"], context["preset"]
    claims = claims_rows(context["claims"]["csv"])
    sizes = dataset_sizes(context.get("data", {}))
    prov = provenance.collect(preset, context.get("data", {}))
    links = mlflow_links(context.get("summary"))
    figures = []
    for study in dict.fromkeys(f["study"] for f in context["figures"]):
        figures.append(f"<h3>{_e(study)}</h3><div class='figs'>"
                       + "".join(_figure(f, template, config) for f in context["figures"] if f["study"] == study)
                       + "</div>")
    reduced = "" if preset == "paper" else " This is a reduced preset: its trends need not match the papers'."
    tables = _paper_tables(context.get("paper_tables", []), base)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sparsenets report: preset {_e(preset)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>
<h1>sparsenets: preset <code>{_e(preset)}</code></h1>
{_provenance(prov, now)}
<p>PHEW (Patil &amp; Dovrolis, 2021) and “Deconstructing the Structure of Sparse Neural Networks” (Van Gelder,
Wortsman &amp; Ehsani, 2020), replicated on this run.{reduced}</p>
{_studies_table(context, sizes)}
<h2 id="claims">Claims</h2>
{_claims_table(claims, links)}
<p><small>How each claim is tested: <code>{_e(context['claims']['md'])}</code>; every number:
<code>{_e(context['claims']['csv'])}</code>.</small></p>
{'<h2 id="tables">Tables for a paper</h2>' + tables if tables else ''}
<h2 id="figures">Figures</h2>
{''.join(figures)}
</body></html>
"""


def write(context: Mapping[str, Any], out: str | os.PathLike, template_path: str | None = None) -> None:
    """Build the page and write it whole or not at all."""
    template = _read(template_path, "caption template").decode("utf-8") if template_path else None
    write_text(out, build(context, template, base=os.path.dirname(os.path.abspath(out))))


def context_json(text: str) -> dict[str, Any]:
    """The job's context from its params (sparsenets.study.Grid.report)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"report: --context is not valid JSON ({e})") from e


__all__ = ["ReportError", "badge", "build", "claims_rows", "dataset_sizes", "figure_caption", "mlflow_links",
           "png_caption", "runs_link", "write"]
