"""Report stage, presentation: the figures (matplotlib, Agg) and the report as Markdown and HTML."""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402 -- the backend must be chosen first
import numpy as np  # noqa: E402

from imbadv import report as rp  # noqa: E402

MODEL_COLORS = {"balanced": "#4c72b0", "under": "#dd8452", "over": "#55a868"}

# A block of the report: ("h", level, text) | ("p", text) | ("ul", [text]) |
# ("table", header, rows) | ("img", file name, caption)
Block = tuple


def _save(fig: Any, path: Path, caption: str) -> tuple[str, str]:
    """Write the figure; returns (file name, caption) for the report."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name, caption


def _title(caption: str) -> str:
    return caption.split(": ", 1)[-1]


def confusion(path: Path, counts: np.ndarray, names: list[str], caption: str) -> tuple[str, str]:
    """Fig. 1: a confusion matrix as row percentages (row = true class)."""
    cm = np.asarray(counts, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100 * cm / cm.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)
    for (i, j), v in np.ndenumerate(pct):
        if not math.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v > 60 else "black")  # fmt: skip
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted class", ylabel="true class")  # fmt: skip
    ax.set_title(_title(caption), fontsize=9)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    fig.colorbar(image, ax=ax, label="% of the true class")
    return _save(fig, path, caption)


def bars(path: Path, series: dict[str, dict[int, Any]], names: list[str], ylabel: str, caption: str) -> tuple[str, str]:  # fmt: skip
    """Figs. 2 and 5: one bar per class and model; error bars are each cell's 95 % interval."""
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(series))
    for k, (model, cells) in enumerate(series.items()):
        order = sorted(cells)
        xs = [c + (k - (len(series) - 1) / 2) * width for c in order]
        means = np.array([100 * cells[c].mean for c in order])
        errs = np.array([[means[i] - 100 * cells[c].lo, 100 * cells[c].hi - means[i]] for i, c in enumerate(order)])  # fmt: skip
        ax.bar(xs, means, width, label=model, color=MODEL_COLORS.get(model), yerr=np.nan_to_num(errs.T), capsize=2)  # fmt: skip
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set(ylabel=ylabel)
    ax.set_title(_title(caption), fontsize=9)
    ax.legend(title="model")
    return _save(fig, path, caption)


def pair_panels(path: Path, panels: dict, pair: tuple[int, int], names: list[str], caption: str) -> tuple[str, str]:  # fmt: skip
    """Fig. 6: where each class of the pair goes, clean and attacked, on the under and over models."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharey=True, squeeze=False)
    x = np.arange(len(names))
    for (i, cls), (j, imbalance) in itertools.product(
        enumerate(pair), enumerate(("under", "over"))
    ):
        ax, data = axes[i][j], panels.get((cls, imbalance))
        ax.set_title(f"{names[cls]}, {imbalance}-sampled model", fontsize=9)
        if data is None:
            ax.text(0.5, 0.5, "no results", ha="center", transform=ax.transAxes)
            continue
        ax.bar(x - 0.2, 100 * np.asarray(data[0]), 0.4, label="clean", color="#999999")
        ax.bar(x + 0.2, 100 * np.asarray(data[1]), 0.4, label="attacked", color="#c44e52")
        ax.axvline(pair[1 - i], color="black", lw=0.8, ls=":")  # the partner class
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("% of the class's test images")
    handles = [h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]][:2]
    if handles:
        fig.legend(handles, ["clean", "attacked"], loc="upper right")
    return _save(fig, path, caption)


def eps_curves(path: Path, curves: dict[str, list[tuple[float, float]]], caption: str) -> tuple[str, str]:  # fmt: skip
    """Adversarial target-class accuracy against eps, one line per Table 1 column."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        eps, acc = zip(*sorted(points), strict=True)
        ax.plot(eps, [100 * a for a in acc], marker="o", label=label, ls="--" if label.startswith("Different") else "-")  # fmt: skip
    ax.set(xlabel="eps (pixel units on [0, 1])", ylabel="adversarial accuracy (%)")
    ax.set_title(_title(caption), fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path, caption)


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
            return "<table>" + row(b[1], "th") + "".join(row(r, "td") for r in b[2]) + "</table>"
        if b[0] == "img":
            data = base64.b64encode((folder / b[1]).read_bytes()).decode()
            return f'<figure><img src="data:image/png;base64,{data}"><figcaption>{_inline(b[2])}</figcaption></figure>'
        return f"<p>{_inline(b[1])}</p>"

    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")  # fmt: skip
    head = f"<meta charset='utf-8'><title>imbadv report</title><style>{style}</style>"
    return (
        f"<!doctype html><html><head>{head}</head><body>{''.join(map(one, blocks))}</body></html>\n"
    )


def draw(sweep: Any, rows: list[dict], sel: Any, names: list[str], pair: tuple[int, int]) -> list[tuple[str, str]]:  # fmt: skip
    """Every figure the sweep has data for, as (file name, caption); written into the sweep folder."""
    root, tag, (a, b) = (
        sweep.root,
        f"{sel.method.upper()}, eps {sel.eps:g}",
        (names[i] for i in pair),
    )

    def per_model(metric: str) -> dict[str, dict]:
        series = {
            m: rp.per_class(rows, sel, metric, imbalance=m, source="same") for m in MODEL_COLORS
        }
        return {m: s for m, s in series.items() if s}

    figs = []
    counts, n_models = balanced_confusion(sweep.results)
    if n_models:
        figs.append(confusion(root / "fig1_confusion_balanced.png", counts, names,
                              f"Fig. 1: the balanced model's confusion on the clean test set (row %, {n_models} seed(s) summed)"))  # fmt: skip
    figs.append(bars(root / "fig2_clean_accuracy.png", per_model("clean_acc"), names, "clean accuracy (%)",
                     "Fig. 2: clean target-class accuracy of every model (error bars: 95 % interval)"))  # fmt: skip
    figs.append(bars(root / "fig5_relative_drop.png", per_model("relative_drop"), names, "relative drop (%)",
                     f"Fig. 5: relative drop (clean - adv) / clean, same-model {tag} (error bars: 95 % interval over seeds)"))  # fmt: skip
    figs.append(pair_panels(root / f"fig6_pair_{a}_{b}.png", pair_data(rows, sel, pair), pair, names,
                            f"Fig. 6: where {a} and {b} test images go, clean and attacked (same-model {tag})"))  # fmt: skip
    if len(sel.all_eps) > 1:
        figs.append(eps_curves(root / "fig_eps.png", eps_data(rows, sel),
                               f"Accuracy against eps: adversarial target-class accuracy, {sel.method.upper()}, mean over classes and seeds"))  # fmt: skip
    return figs


def balanced_confusion(results: list[dict]) -> tuple[np.ndarray, int]:
    """The balanced models' clean confusion counts summed over distinct models (one per seed)."""
    models = {}
    for r in results:
        entry = (
            r["models"]["target"]
            if r["meta"]["imbalance"] == "balanced"
            else r["models"].get("balanced")
        )
        if entry is not None:
            models[entry["key"]] = np.asarray(entry["clean"]["confusion"])
    return (sum(models.values()) if models else np.zeros((0, 0))), len(models)


def pair_data(rows: list[dict], sel: Any, pair: tuple[int, int]) -> dict[tuple[int, str], Any]:
    """Per (class, under|over): the share of the class's images predicted as each class."""
    panels = {}
    for cls in pair:
        for m in ("under", "over"):
            cell = rp.pick(rows, sel, **{"class": cls, "imbalance": m, "source": "same"})
            if cell:
                n = sum(r["n"] for r in cell)
                panels[(cls, m)] = tuple(
                    np.sum([r[k] for r in cell], axis=0) / n for k in ("clean_row", "adv_row")
                )
    return panels


def eps_data(rows: list[dict], sel: Any) -> dict[str, list[tuple[float, float]]]:
    """Per Table 1 column, (eps, adversarial accuracy averaged over classes) for every swept eps."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for _, label, imbalance, source in rp.COLUMNS:
        for eps in sel.all_eps:
            cells = rp.per_class(
                rows, replace(sel, eps=eps), "adv_acc", imbalance=imbalance, source=source
            )
            if cells:
                curves.setdefault(label, []).append(
                    (eps, float(np.mean([s.mean for s in cells.values()])))
                )
    return curves


def pct(v: float, signed: bool = False) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:{'+' if signed else ''}.1f}"


def cell(rec: dict) -> str:
    """Ours: one seed `mean (Wilson 95 %)`; several `mean ± sd (t 95 %)`; none `—`."""
    if rec["n_seeds"] == 0:
        return "—"
    spread = f" ± {pct(rec['sd'])}" if rec["n_seeds"] > 1 else ""
    return f"{pct(rec['mean'])}{spread} ({pct(rec['ci_lo'])}–{pct(rec['ci_hi'])})"


def table_blocks(records: list[dict], sel: Any, names: list[str]) -> list[Block]:
    """Table 1 with the paper's numbers and our difference, a mean row, and the missing cells."""
    header = ["Class"] + [h for _, label, _, _ in rp.COLUMNS for h in (label, "paper", "Δ")]
    grid = {(r["class"], r["column"]): r for r in records}
    rows = [[f"{c} - {name}"] + [v for key, *_ in rp.COLUMNS
             for v in (cell(grid[(c, key)]), pct(grid[(c, key)]["paper"]), pct(grid[(c, key)]["diff"], True))]
            for c, name in enumerate(names)]  # fmt: skip
    mean_row = ["mean (classes with results)"]
    for key, *_ in rp.COLUMNS:
        have = [grid[(c, key)] for c in range(len(names)) if grid[(c, key)]["n_seeds"]]
        ours, paper = (
            np.mean([r[k] for r in have]) if have else math.nan for k in ("mean", "paper")
        )
        mean_row += [pct(ours), pct(paper), pct(ours - paper, True)]
    seeds = sorted({int(s) for r in records for s in r["seeds"].split()})
    return [
        ("h", 2, f"Table 1: adversarial target-class accuracy (%), {sel.method.upper()}, eps {sel.eps:g} "
                 f"({sel.eps_space}), {sel.direction}"),
        ("p", "Rows: target class; columns: which model is attacked and whose gradient makes the images "
              "(different model = the balanced model's gradient, i.e. transfer). Ours: "
              + ("mean ± sd over seeds (t-based 95 % interval)" if len(seeds) > 1 else
                 "one seed, with the 95 % Wilson interval of the accuracy") + f"; seeds {seeds}. "
              "Paper: Possas & Zhou, Table 1 (CIFAR-10, FGSM, eps 0.01). Δ = ours - paper."),
        ("table", header, rows + [mean_row]),
        ("p", "Table 1 of the paper is internally inconsistent: its text gives 25.8 % as the average of "
              "the same-model under-sampled attack, but 25.8 % is the mean of the Balanced column (the "
              "Under column averages 14.2 %). Compare orderings and shapes, not single numbers."),
    ]  # fmt: skip


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
    skip = ("class", "imbalance", "seed", "paths.", "logger.", "device", "jobs_per_gpu", "threads", "attack.eps")  # fmt: skip

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
        + (f"; BIM alpha {distinct(format(r['alpha'], '.4g') for r in bim)}, steps {distinct(r['steps'] for r in bim)}" if bim else ""),
        f"Seeds: {distinct(m['seed'] for m in meta)}",
        f"Models: VGG width {distinct(c['model']['width'] for c in cfg)}; training {distinct(json.dumps(c['trainer']) for c in cfg)}; "
        f"counts {distinct(json.dumps(c['counts']) for c in cfg)}",
        f"Code: imbadv {distinct(m['versions']['imbadv'] for m in meta)} (git {distinct(m['versions']['git'] for m in meta)}), "
        f"torch {distinct(m['versions']['torch'] for m in meta)}, lightning {distinct(m['versions']['lightning'] for m in meta)}",
        f"Jobs: {len(res)} with results, {len(sweep.pending)} without (running or failed), {len(sweep.unreadable)} unreadable",
    ]  # fmt: skip
    if varied := varied_settings(res):
        items.append("**Also varied between jobs (the cells pool them):** " + "; ".join(varied))
    return [("h", 2, "Setup"), ("ul", items)]


def finding_blocks(found: list[Any], names: list[str], cifar10: bool) -> list[Block]:
    """The paper's claims with a verdict and the numbers behind each."""
    blocks: list[Block] = [("h", 2, "The paper's findings, checked on this sweep")]
    if not cifar10:
        blocks.append(("p", f"**The data set here is not CIFAR-10** (classes {', '.join(names)}): the paper's "
                            "numbers are for reference only; these checks say whether the same pattern "
                            "appears in this data, not whether the paper is reproduced."))  # fmt: skip
    blocks.append(("ul", [f"**{f.verdict}**: {f.claim}. {f.evidence}." for f in found]))
    blocks.append(("p", "Supported = the mean difference has the sign the paper reports. An interval that "
                        "includes 0 means this sweep cannot tell the difference from noise: one seed on "
                        "1,000 test images carries about ±3 % (95 %), and seeds move results more."))  # fmt: skip
    return blocks


def write_report(sweep: Any, rows: list[dict], sel: Any, names: list[str], pair: tuple[int, int],
                 records: list[dict], found: list[Any]) -> Path:  # fmt: skip
    """table1.md, the figures, report.md and report.html, all into the sweep folder."""
    root = sweep.root
    table = table_blocks(records, sel, names)
    (root / "table1.md").write_text(to_markdown(table))
    figs = draw(sweep, rows, sel, names, pair)
    missing = missing_items(records, names) + [
        f"job `{j}`: no results.json (running or failed)" for j in sweep.pending
    ]
    missing += [f"job `{j}`: results.json unreadable" for j in sweep.unreadable]
    blocks = [("h", 1, f"imbadv report: {root}"), *setup_blocks(sweep, rows), *table, ("h", 3, "Missing"),
              ("ul", missing) if missing else ("p", "Nothing: every cell has results."),
              ("h", 2, "Figures"), *[("img", f, c) for f, c in figs], *finding_blocks(found, names, rp.is_cifar10(sweep)),
              ("p", "Files: `table1.md`, `table1.csv` (fractions, one row per cell), the figures above.")]  # fmt: skip
    (root / "report.md").write_text(to_markdown(blocks))
    (root / "report.html").write_text(to_html(blocks, root))
    return root / "report.md"
