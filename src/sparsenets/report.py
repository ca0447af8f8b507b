"""One self-contained page for a run: results/report.html, to read, mail or archive as it is.

At the top: the preset, and per study its networks, methods, densities, seeds, epochs and the sizes of the
training and test sets; the git commit and the date. Then every claim's verdict (✅ ❌ ❔ ⚪ 🔭) with the numbers
it rests on (mean over seeds and 95 % interval), its regime (the paper's setting beside the run's) and its
robustness, from the claims.csv and claims.md the claims job writes.
Then every figure, embedded as a PNG data URI, with its caption: the text of workflow/report/figure.rst
(the one caption Snakemake's own `--report` shows), rendered here without Snakemake, and the figure's
caption line (preset, seeds, bands, coinciding series) read back from the PNG. No script, no external
file, no network: the page opens anywhere. Torch-free: the report job reads PNGs, CSVs and npz headers.

`sparsenets.study` spells the job (Grid.report: its inputs and the context below); the rule in
workflow/rules/report.smk runs `python -m sparsenets report`.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .claims import MARKS
from .io import write_text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em}.meta{color:#555;margin-top:0}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .5em;
vertical-align:top;text-align:left}th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap}
table.numbers{margin:.3em 0;font-size:.9em}table.numbers td,table.numbers th{border-color:#e2e2e2}
.mark{font-size:1.2em}figure{margin:2em 0;page-break-inside:avoid}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{font-size:.93em}figcaption .line{color:#555;font-style:italic}
details summary{cursor:pointer;color:#444}
"""


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


def claims_rows(csv_path: str, md_path: str) -> list[dict[str, Any]]:
    """One entry per verdict (study, claim, network): the claim, what was measured and its number rows."""
    _read(csv_path, "claims table")
    numbers = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
    said = _md_verdicts(_read(md_path, "claims page").decode("utf-8"))
    out = []
    for (study, cid, network, verdict), rows in numbers.groupby(["study", "id", "network", "verdict"], sort=False,
                                                                dropna=False):
        network = "" if pd.isna(network) else str(network)
        claim, measured, regime, robustness = said.get((study, cid, network or "–"), ("", "", "", ""))
        out.append({"study": study, "id": cid, "network": network, "verdict": verdict, "claim": claim,
                    "measured": measured, "regime": regime, "robustness": robustness,
                    "numbers": rows[rows["quantity"].notna()].to_dict("records")})
    return out


def _md_verdicts(md: str) -> dict[tuple[str, str, str], tuple[str, str, str, str]]:
    """(study, claim id, network) -> (claim text, what was measured, regime with the paper's and the run's setting,
    robustness), from claims.md's verdict table (study, claim, network, verdict, regime, robustness, measured)."""
    out = {}
    for line in md.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        m = re.fullmatch(r"\*\*(\S+)\*\* (.*)", cells[1]) if len(cells) == 7 else None
        if m:
            out[(cells[0], m[1], cells[2])] = (m[2], cells[6], cells[4], cells[5])
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


def _claims_table(claims: list[dict[str, Any]]) -> str:
    counts = ", ".join(f"{MARKS[v]} {sum(c['verdict'] == v for c in claims)} {v}" for v in MARKS)
    rows = []
    for c in claims:
        numbers = "".join(
            f"<tr><td>{_e(n['quantity'])}</td><td>{_e(n['method'] if pd.notna(n['method']) else '–')}</td>"
            f"<td class='num'>{_num(n['density'])}</td><td>{_e(n['detail'] if pd.notna(n['detail']) else '')}</td>"
            f"<td class='num'>{_e(_interval(n))}</td><td>{_e(n['seeds'] if pd.notna(n['seeds']) else '–')}</td></tr>"
            for n in c["numbers"])
        detail = (f"<details><summary>{len(c['numbers'])} numbers</summary><table class='numbers'><tr><th>quantity</th>"
                  f"<th>method</th><th>density</th><th>detail</th><th>mean [95 % CI]</th><th>seeds</th></tr>{numbers}"
                  f"</table></details>") if numbers else ""
        rows.append(f"<tr class='claim'><td class='mark' title='{_e(c['verdict'])}'>{MARKS.get(c['verdict'], '?')}</td>"
                    f"<td>{_e(c['verdict'])}</td><td><b>{_e(c['id'])}</b> {_e(c['claim'])}</td><td>{_e(c['study'])}"
                    f"</td><td>{_e(c['network'] or '–')}</td><td>{_e(c.get('regime', ''))}</td>"
                    f"<td>{_e(c.get('robustness', ''))}</td><td>{_e(c['measured'])}{detail}</td></tr>")
    return (f"<p>{_e(counts)} (one row per study, claim and network; a difference within the seed noise is never "
            f"reproduced).</p><table id='claims-table' class='claims'><tr><th></th><th>verdict</th><th>claim</th>"
            f"<th>study</th><th>network</th><th>regime (paper · this run)</th><th>robustness</th><th>measured, and "
            f"the numbers behind the verdict (mean over seeds, 95 % interval)</th></tr>{''.join(rows)}</table>")


def _figure(entry: Mapping[str, Any], template: str | None, config: Mapping[str, Any]) -> str:
    data = _read(entry["png"], f"figure {entry['fig']} of study {entry['study']}")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    text = figure_caption(template, config, entry["study"], entry["fig"], entry.get("tables", []))
    line = png_caption(data)
    return (f"<figure id='{_e(entry['study'])}-{_e(entry['fig'])}'><img src='{uri}' alt='{_e(entry['fig'])} "
            f"({_e(entry['study'])})'><figcaption>{text}"
            + (f"<p class='line'>{_e(line)}</p>" if line else "") + "</figcaption></figure>")


def build(context: Mapping[str, Any], template: str | None = None, commit: str | None = None,
          now: dt.datetime | None = None) -> str:
    """The page. `context` (sparsenets.study.Grid.report): preset, config (its studies and recipes), figures
    [{study, fig, png, tables}], claims {csv, md}, data {dataset: npz}; `template`: the figure caption text."""
    commit = commit or os.environ.get("SPARSENETS_GIT_COMMIT") or "unknown"
    now = now or dt.datetime.now(dt.timezone.utc)
    config, preset = context["config"], context["preset"]
    claims = claims_rows(context["claims"]["csv"], context["claims"]["md"])
    sizes = dataset_sizes(context.get("data", {}))
    figures = []
    for study in dict.fromkeys(f["study"] for f in context["figures"]):
        figures.append(f"<h3>{_e(study)}</h3>")
        figures += [_figure(f, template, config) for f in context["figures"] if f["study"] == study]
    reduced = "" if preset == "paper" else " This is a reduced preset: its trends need not match the papers'."
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sparsenets report: preset {_e(preset)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>
<h1>sparsenets: preset <code>{_e(preset)}</code></h1>
<p class="meta">git commit <code>{_e(commit)}</code> · built {now:%Y-%m-%d %H:%M} UTC</p>
<p>PHEW (Patil &amp; Dovrolis, 2021) and “Deconstructing the Structure of Sparse Neural Networks” (Van Gelder,
Wortsman &amp; Ehsani, 2020), replicated on this run.{reduced}</p>
{_studies_table(context, sizes)}
<h2 id="claims">Claims</h2>
{_claims_table(claims)}
<p>How each claim is tested: <code>{_e(context['claims']['md'])}</code>; every number:
<code>{_e(context['claims']['csv'])}</code>.</p>
<h2 id="figures">Figures</h2>
{''.join(figures)}
</body></html>
"""


def write(context: Mapping[str, Any], out: str | os.PathLike, template_path: str | None = None) -> None:
    """Build the page and write it whole or not at all."""
    template = _read(template_path, "caption template").decode("utf-8") if template_path else None
    write_text(out, build(context, template))


def context_json(text: str) -> dict[str, Any]:
    """The job's context from its params (sparsenets.study.Grid.report)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"report: --context is not valid JSON ({e})") from e


__all__ = ["ReportError", "build", "claims_rows", "dataset_sizes", "figure_caption", "png_caption", "write"]
