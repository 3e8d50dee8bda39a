"""The bench's text table and the grouped row's achieved rates: what a run prints."""

from __future__ import annotations

import math

TARGETS = {
    "train_vs_raw": 0.90,
    "crop_flip_step_vs_none": 1.10,  # an upper bound: a step's time with augmentation / without
    "at_train_vs_raw": 0.90,
    "attack_vs_torchattacks": 1.0,
    "pgd_vs_torchattacks": 0.95,
    "pgd_l2_vs_torchattacks": 0.95,
    "mifgsm_vs_torchattacks": 0.95,
}


def grouped_rates(grouped: dict, rate: float, flop: float) -> dict:
    """The grouped row's report entries, with each side's achieved GFLOP/s (all K members) beside
    the machine's matmul `rate` measured in the same run."""
    k = grouped["members"]
    for side in ("grouped", "sequence", "processes", "compiled"):
        if f"{side}_images_per_s_per_member" in grouped:  # processes: unless --no-processes
            gflops = k * grouped[f"{side}_images_per_s_per_member"] * flop / 1e9
            grouped[f"{side}_gflops"] = gflops
            grouped[f"{side}_of_matmul_rate"] = gflops / rate if rate else math.nan
    out = {"grouped_vs_sequence": grouped["ratio"], "grouped": grouped}
    if "vs_processes" in grouped:
        out["grouped_vs_processes"] = grouped["vs_processes"]
    if "compiled_vs_grouped" in grouped:
        out["grouped_compiled_vs_grouped"] = grouped["compiled_vs_grouped"]
    return out


def format_table(r: dict) -> str:
    """The report's headline numbers as text; the JSON holds them all."""
    t, m, w, a = r["train"], r["machine"], r["settings"], r["attack"]
    lines = [
        f"imbadv bench on {r['device']}, torch {m['torch']}, {w['model']} width {w['width']:g} "
        f"seed {w['seed']}, batch {w['batch_size']}; fp32 matmul {m['matmul_fp32_gflops']:.1f} "
        f"GFLOP/s; load {m['load_avg_1min']:.1f}",
        f"  {'images/s':<8} {'imbadv':>9} {'reference':>9} {'ratio':>6}  {'identical':<9} "
        f"{'max diff':>8} {'differing':>9}  (targets {TARGETS})",
    ]
    for name, row, ref in (("train", t, "raw loop"), ("AT train", r["at_train"], "raw AT loop")):
        lines.append(
            f"  {name:<8} {row['imbadv_images_per_s']:>9.1f} {row['raw_images_per_s']:>9.1f} "
            f"{row['ratio']:>6.3f}  {'':<28}  vs {ref} (weights max diff "
            f"{row['weights_max_abs_diff']:.2g})"
        )
    for k, v in a.items():
        lines.append(
            f"  {k:<8} {v['imbadv_images_per_s']:>9.1f} {v['torchattacks_images_per_s']:>9.1f} "
            f"{v['ratio']:>6.3f}  {'yes' if v['identical'] else 'NO':<9} "
            f"{v['max_abs_diff']:>8.2g} {v['differing_images']:>9}  vs torchattacks"
        )
    g = r["augment"]
    lines.append(
        f"  crop_flip step {g['ms_per_step']['crop_flip']:.2f} ms vs "
        f"{g['ms_per_step']['none']:.2f} ms without augmentation: ratio {g['ratio']:.3f} "
        f"(target <= {TARGETS['crop_flip_step_vs_none']})"
    )
    lines += optional_lines(r)
    lines += [
        f"  predict  {r['predict']['images_per_s']:>9.1f}",
        f"  training: {t['imbadv_gflops']:.1f} GFLOP/s (raw loop {t['raw_gflops']:.1f})",
    ]
    for key in ("quick_job", "sweep"):
        if key in r:
            lines.append(
                f"  {key}: "
                + ", ".join(f"{k} {v:.0f}" for k, v in r[key].items() if k != "command")
            )
    return "\n".join(lines)


def optional_lines(r: dict) -> list[str]:
    """The lines of the measurements a flag asked for: grouped, stacked, processes, compiled."""
    lines = []
    if "grouped" in r:
        g = r["grouped"]
        lines.append(
            f"  grouped  {g['grouped_images_per_s_per_member']:>9.1f} "
            f"{g['sequence_images_per_s_per_member']:>9.1f} {g['ratio']:>6.3f}  {'':<28}  "
            f"per member, {g['members']} grouped vs in sequence (weights max diff "
            f"{g['weights_max_abs_diff']:.2g}); {g['grouped_gflops']:.1f} vs "
            f"{g['sequence_gflops']:.1f} GFLOP/s, {100 * g['grouped_of_matmul_rate']:.0f} % vs "
            f"{100 * g['sequence_of_matmul_rate']:.0f} % of the matmul rate; device busy "
            + ", ".join(f"{side} {100 * v:.0f} %" for side, v in g["busy_share"].items())
        )
    if "stacked" in r:
        g = r["stacked"]
        lines.append(
            f"  stacked  {g['stacked_images_per_s_per_source']:>9.1f} "
            f"{g['sequence_images_per_s_per_source']:>9.1f} {g['ratio']:>6.3f}  {'':<28}  "
            f"per source, {g['sources']} sources' {'+'.join(g['attacks'])} stacked vs one by one "
            f"(pixels differing {g['differing_pixel_fraction']:.1g})"
        )
    if "grouped_vs_processes" in r:
        g = r["grouped"]
        lines.append(
            f"  grouped  {g['grouped_images_per_s_per_member']:>9.1f} "
            f"{g['processes_images_per_s_per_member']:>9.1f} {g['vs_processes']:>6.3f}  "
            f"{'':<28}  per member, {g['members']} grouped vs {g['members']} processes at once, "
            f"{g['threads_per_process']} thread(s) each (weights max diff vs sequence "
            f"{g['processes_weights_max_abs_diff']:.2g}); {g['processes_gflops']:.1f} GFLOP/s"
        )
    if "grouped_compiled_vs_grouped" in r:
        g = r["grouped"]
        lines.append(
            f"  grouped  {g['compiled_images_per_s_per_member']:>9.1f} "
            f"{g['grouped_images_per_s_per_member']:>9.1f} {g['compiled_vs_grouped']:>6.3f}  "
            f"{'':<28}  per member, {g['members']} grouped compiled vs eager (weights max diff "
            f"{g['compiled_weights_max_abs_diff']:.2g}); {g['compiled_gflops']:.1f} GFLOP/s; "
            "whole runs "
            + ", ".join(f"{t:.1f}" for t in g["compiled_run_seconds"])
            + " s vs "
            + ", ".join(f"{t:.1f}" for t in g["grouped_run_seconds"])
            + " s eager (the first "
            "compiles)"
        )
    if "compile" in r:
        c = r["compile"]
        lines.append(
            f"  compiled {c['compiled_images_per_s']:>9.1f} {c['eager_images_per_s']:>9.1f} "
            f"{c['ratio']:>6.3f}  {'':<28}  trainer.compile=on vs off after warm-up; compiling "
            f"{c['compile_seconds']:.1f} s; "
            + ("compiled" if c["compiled"] else f"fell back: {c['compile_fallback']}")
        )
    if "formats" in r:
        lines.append(formats_line(r["formats"]))
    return lines


def formats_line(f: dict) -> str:
    """The formats row: each side's images/s, the choice and where it was saved."""
    c = f["choice"]
    return (
        "  formats  "
        + ", ".join(f"{n} {v:.1f}" for n, v in f["images_per_s"].items())
        + f" images/s; chosen {c['precision']}, channels_last {c['channels_last']} "
        f"({c['speedup']:.3f}x the default), saved to {f['file']} for {f['device']}, {f['key']}"
    )
