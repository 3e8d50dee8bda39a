"""Report stage, document: table1.md, report.md and report.html (blocks as Markdown and HTML)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from imbadv.report import (
    classdoc,
    controlled,
    figures,
    learning,
    longtail,
    masking,
    overfitting,
    verdicts,
)
from imbadv.report import paper as rp
from imbadv.report.loading import is_cifar10, scale_note
from imbadv.report.plan import plan_blocks
from imbadv.report.plots import matrix_order
from imbadv.report.stats import pct
from imbadv.table import recipe_of

# A block of the report: ("h", level, text) | ("p", text) | ("ul", [text]) |
# ("table", header, rows) | ("img", file name, caption)
Block = tuple


def to_markdown(blocks: list[Block]) -> str:
    """The report as Markdown; images are referenced by file name next to the report."""

    def one(b: Block) -> str:
        if b[0] == "h":
            return "#" * b[1] + " " + b[2]
        if b[0] == "ul":
            return "\n".join(f"- {item}" for item in b[1])
        if b[0] == "table":
            return "\n".join(
                "| " + " | ".join(map(str, r)) + " |" for r in [b[1], ["---"] * len(b[1]), *b[2]]
            )
        return f"![{b[2]}]({b[1]})\n\n*{b[2]}*" if b[0] == "img" else b[1]

    return "\n\n".join(map(one, blocks)) + "\n"


def _inline(text: Any) -> str:
    """Escaped text with `code` spans and **bold**, the only inline marks the report uses."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(str(text)))
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def to_html(blocks: list[Block], folder: Path) -> str:
    """The report as one self-contained HTML page (figures embedded, so it can be mailed)."""

    def row(cells: list, tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>"

    def one(b: Block) -> str:
        if b[0] == "h":
            return f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>"
        if b[0] == "ul":
            return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>"
        if b[0] == "table":
            body = row(b[1], "th") + "".join(row(r, "td") for r in b[2])
            return f"<div class='wide'><table>{body}</table></div>"  # a wide table scrolls, never the page
        if b[0] == "img":
            data = base64.b64encode((folder / b[1]).read_bytes()).decode()
            return f'<figure><img src="data:image/png;base64,{data}"><figcaption>{_inline(b[2])}</figcaption></figure>'
        return f"<p>{_inline(b[1])}</p>"

    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 8px}"
        "table{border-collapse:collapse;font-size:12px;max-width:100%}"
        "td,th{border:1px solid #ccc;padding:2px 4px;vertical-align:top}"
        ".wide{overflow-x:auto;max-width:100%}img{max-width:100%;height:auto}"
        "p,li{overflow-wrap:anywhere}"
    )
    head = f"<meta charset='utf-8'><title>imbadv report</title><style>{style}</style>"
    return (
        f"<!doctype html><html><head>{head}</head><body>{''.join(map(one, blocks))}</body></html>\n"
    )


def cell(rec: dict) -> str:
    """Ours: one seed `mean (Wilson 95 %)`; several `mean ± sd (t 95 %)`; none `—`."""
    if rec["n_seeds"] == 0:
        return "—"
    spread = f" ± {pct(rec['sd'])}" if rec["n_seeds"] > 1 else ""
    flag = " †" if rec.get("degenerate") else ""  # below the floor in at least one seed
    flag += " ‡" if rec.get("not_learned") else ""  # a model that never learned, in some seed
    lo, hi = max(0.0, rec["ci_lo"]), min(1.0, rec["ci_hi"])  # a t-interval can pass 0 or 100 %
    return f"{pct(rec['mean'])}{spread} ({pct(lo)}–{pct(hi)}){flag}"


def table_blocks(records: list[dict], sel: Any, names: list[str], floor: Any) -> list[Block]:
    """Table 1 with the paper's numbers and our difference, a mean row, and the missing cells."""
    header = ["Class"] + [h for _, label, _, _ in rp.COLUMNS for h in (label, "paper", "Δ")]
    grid = {(r["class"], r["column"]): r for r in records}
    return [
        (
            "h",
            2,
            f"Table 1: adversarial target-class accuracy (%), {sel.method.upper()}, eps {sel.eps:g} "
            f"({sel.eps_space}), {sel.direction}",
        ),
        ("p", table_note(records, floor)),
        ("table", header, class_rows(grid, names) + [mean_row(grid, names)]),
        (
            "p",
            "Table 1 of the paper is internally inconsistent: its text gives 25.8 % as the average of "
            "the same-model under-sampled attack, but 25.8 % is the mean of the Balanced column (the "
            "Under column averages 14.2 %). Compare orderings and shapes, not single numbers.",
        ),
    ]


def class_rows(grid: dict[tuple, dict], names: list[str]) -> list[list[str]]:
    """Table 1's row per class: ours, the paper's and the difference, column by column."""
    return [
        [f"{c} - {name}"]
        + [
            v
            for key, *_ in rp.COLUMNS
            for v in (
                cell(grid[(c, key)]),
                pct(grid[(c, key)]["paper"]),
                pct(grid[(c, key)]["diff"], True),
            )
        ]
        for c, name in enumerate(names)
    ]


def mean_row(grid: dict[tuple, dict], names: list[str]) -> list[str]:
    """Table 1's mean row over the classes with results, ours against the paper's."""
    out = ["mean (classes with results)"]
    for key, *_ in rp.COLUMNS:
        have = [grid[(c, key)] for c in range(len(names)) if grid[(c, key)]["n_seeds"]]
        ours, paper = (
            np.mean([r[k] for r in have]) if have else math.nan for k in ("mean", "paper")
        )
        out += [pct(ours), pct(paper), pct(ours - paper, True)]
    return out


def table_note(records: list[dict], floor: Any) -> str:
    """What Table 1's rows, columns, intervals and marks mean, with the counts behind them."""
    seeds = sorted({int(s) for r in records for s in r["seeds"].split()})
    return (
        "Rows: target class; columns: which model is attacked and whose gradient makes the images "
        "(different model = the balanced model's gradient, i.e. transfer). Ours: "
        + (
            "mean ± sd over seeds (t-based 95 % interval)"
            if len(seeds) > 1
            else "one seed, with the 95 % Wilson interval of the accuracy"
        )
        + f"; seeds {seeds}. "
        f"Combinations measured: {sum(r['n_seeds'] > 0 for r in records)} of {len(records)}. "
        "Paper: Possas & Zhou, Table 1 (CIFAR-10, FGSM, eps 0.01). Δ = ours - paper. "
        f"† = degenerate baseline in at least one seed ({floor.describe()}): left out of findings; "
        f"{sum(r['degenerate'] for r in records)} of {sum(r['n_seeds'] for r in records)} (cell, seed) results are. "
        f"‡ = from a model that never learned in at least one seed (below): left out of findings; "
        f"{sum(r.get('not_learned', 0) for r in records)} (cell, seed) results are."
    )


def missing_items(records: list[dict], names: list[str]) -> list[str]:
    """Table cells without results, one line per class."""
    labels = {key: label for key, label, _, _ in rp.COLUMNS}
    out = []
    for c, name in enumerate(names):
        gone = [labels[r["column"]] for r in records if r["class"] == c and r["n_seeds"] == 0]
        if gone:
            out.append(
                f"class {c} ({name}): "
                + ("all columns" if len(gone) == len(labels) else ", ".join(gone))
            )
    return out


def distinct(values: Any) -> str:
    return ", ".join(sorted({str(v) for v in values})) or "—"


def varied_settings(results: list[dict]) -> list[str]:
    """Config keys, other than the table's own axes, whose value differs between jobs."""
    skip = (
        "class",
        "imbalance",
        "seed",
        "paths.",
        "logger.",
        "device",
        "jobs_per_gpu",
        "threads",
        "attack.eps",
    )

    def flat(cfg: dict, prefix: str = "") -> dict[str, str]:
        out = {}
        for k, v in cfg.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": str(v)}
        return out

    configs = [flat(r["config"]) for r in results]
    keys = sorted({k for c in configs for k in c if not k.startswith(skip)})
    return [
        f"{k} ({distinct(c.get(k) for c in configs)})"
        for k in keys
        if len({c.get(k) for c in configs}) > 1
    ]


def setup_blocks(sweep: Any, rows: list[dict]) -> list[Block]:
    """What the numbers come from: data copy, eps space, attacks, seeds, models, code, jobs."""
    res, meta = sweep.results, [r["meta"] for r in sweep.results]
    bim = [r for r in rows if r["method"] == "bim"]
    cfg = [r["config"] for r in res]
    items = [
        f"Data set: {distinct(m['dataset'] for m in meta)}; copy: {distinct(m['dataset_source'] for m in meta)}",
        f"eps space: {distinct(r['eps_space'] for r in rows)}; eps: {distinct(format(r['eps'], 'g') for r in rows)}",
        f"Attacks: {distinct(r['method'] for r in rows)}; direction: {distinct(r['direction'] for r in rows)}; "
        f"gradient sources: {distinct(r['source'] for r in rows)}"
        + (
            f"; BIM alpha {distinct(format(r['params'].get('alpha', float('nan')), '.4g') for r in bim)}, steps {distinct(r['params'].get('steps') for r in bim)}"
            if bim
            else ""
        ),
        f"Seeds: {distinct(m['seed'] for m in meta)}",
        f"Models: {distinct(json.dumps(c.get('model')) for c in cfg)}; training {distinct(json.dumps(c['trainer']) for c in cfg)}; "
        f"recipe {distinct(json.dumps(recipe_of(c), sort_keys=True) for c in cfg)}; "
        f"counts {distinct(json.dumps(c.get('counts')) for c in cfg)}",
        f"Code: imbadv {distinct(m['versions']['imbadv'] for m in meta)} (git {distinct(m['versions']['git'] for m in meta)}), "
        f"torch {distinct(m['versions']['torch'] for m in meta)}, lightning {distinct(m['versions']['lightning'] for m in meta)}",
        f"Jobs: {len(res)} with results, {len(sweep.pending)} without (running or failed), {len(sweep.unreadable)} unreadable",
    ]
    if files := checkpoint_files(res):
        items.append("Models from files (`model=checkpoint`, never trained): " + "; ".join(files))
    if varied := varied_settings(res):
        items.append("**Also varied between jobs (the cells pool them):** " + "; ".join(varied))
    return [("h", 2, "Setup"), ("ul", items)]


def checkpoint_files(results: list[dict]) -> list[str]:
    """Each checkpoint a sweep evaluated, once: its file name, sha256 and format."""
    found = (e.get("checkpoint") for r in results for e in r["models"].values())
    return sorted({f"`{c['file']}` sha256 {c['sha256']} ({c['format']})" for c in found if c})


def transfer_blocks(rows: list[dict], sel: Any) -> list[Block]:
    """The transfer matrix as a table: gradient source (rows) x attacked model (columns)."""
    grid = figures.transfer_grid(rows, sel)
    sources, models = (matrix_order({k[i] for k in grid}) for i in (0, 1))
    if all(s == m for s, m in grid):  # the diagonal alone is the class-wise section's
        return []
    body = [
        [f"gradient of {s}"] + [pct(grid[(s, m)]) if (s, m) in grid else "—" for m in models]
        for s in sources
    ]
    return [
        ("h", 2, f"Transfer matrix: {sel.method.upper()}, eps {sel.eps:g}"),
        (
            "p",
            "Adversarial target-class accuracy (%) of the attacked model (columns) on images made "
            "with the gradient of the model in each row; each cell averaged over seeds within a "
            "class, then over classes. `-c` = the row's target class; the diagonal is the "
            "white-box attack (the same image sets, docs/transfer.md).",
        ),
        ("table", ["gradient / attacked model", *models], body),
    ]


def write_report(rep: Any) -> Path:
    """table1.md, the figures, report.md and report.html, all into the report folder."""
    root, sweep = rep.sweep.root, rep.sweep
    root.mkdir(parents=True, exist_ok=True)
    table = table_blocks(rep.records, rep.sel, rep.names, rep.floor)
    (root / "table1.md").write_text(to_markdown(table))
    figs = figures.draw(sweep, rep.rows, rep.sel, rep.names, rep.pair, rep.sums)
    missing = missing_items(rep.records, rep.names) + classdoc.seed_gaps(rep.records)
    missing += [f"job `{j}`: no results.json (running or failed)" for j in sweep.pending]
    missing += [f"job `{j}`: results.json unreadable" for j in sweep.unreadable]
    blocks = [
        ("h", 1, f"imbadv report: {', '.join(map(str, sweep.roots))}"),
        *classdoc.sources_blocks(sweep),
        *([("p", f"Made by `{rep.command}`.")] if rep.command else []),
        *(plan_blocks(rep.plan, rep.section) if rep.plan is not None else []),
        *setup_blocks(sweep, rep.rows),
        *learning.blocks(rep.unlearned, rep.rows, rep.sel, rep.learned_rules),
        *table,
        ("h", 3, "Missing"),
        ("ul", missing) if missing else ("p", "Nothing: every cell has results."),
        *classdoc.table2_blocks(rep.rows, rep.sel, rep.names, rep.floor),
        *classdoc.classwise_blocks(rep.sums, rep.names, rep.sel, rep.baseline, rep.counts),
        *transfer_blocks(rep.rows, rep.sel),
        *controlled.prior_blocks(sweep.results),
        *controlled.partner_blocks(rep.rows, rep.sel, rep.names),
        ("h", 2, "Figures"),
        *[("img", f, c) for f, c in figs],
        *longtail.contrast_blocks(rep.contrasts),
        *overfitting.blocks(sweep),
        *masking.blocks(sweep),
        *verdicts.finding_blocks(
            rep.found, rep.names, is_cifar10(sweep), rep.floor, rep.plan, scale_note(sweep)
        ),
        ("p", "Files: `table1.md`, `table1.csv` (fractions, one row per cell), the figures above."),
    ]
    (root / "report.md").write_text(to_markdown(blocks))
    (root / "report.html").write_text(to_html(blocks, root))
    return root / "report.md"
