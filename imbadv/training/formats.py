"""Precision and memory layout by measurement: `trainer.precision=auto`, `trainer.channels_last=auto`.

`python -m imbadv.bench --formats` times imbadv's training step in each format the device can run
(fp32 or bf16-mixed, NHWC or NCHW) for one model, width and batch, and writes its choice to
`<store>/formats.json` under the device's name. A job asking for `auto` reads that choice for its
device, model, width and batch when the sweep is composed, before any store key is made, so a
measured bf16 model is keyed as a bf16 model. Without a measurement `auto` is fp32 and NHWC, the
formats the presets set explicitly before: no store key changes until a measurement exists.
A value given explicitly is never replaced. The choice is recorded in every model record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from imbadv.training import TrainSettings

FILE = "formats.json"
DEFAULT = {"precision": "32-true", "channels_last": True}
# bf16 changes the numbers, so it must win clearly; a layout changes only the summation order.
BF16_MARGIN, LAYOUT_MARGIN = 1.10, 1.05


def side_name(precision: str, channels_last: bool) -> str:
    """One measured format as the bench's report names it: `32-true/nhwc`."""
    return f"{precision}/{'nhwc' if channels_last else 'nchw'}"


def entry_key(model: str, width: float | None, batch: int) -> str:
    """Where one model's choice sits under its device in the table: `vgg width 1 batch 32`."""
    return f"{model} width {1.0 if width is None else width:g} batch {batch}"


def choose(images_per_s: dict[str, float]) -> dict[str, Any]:
    """The format to train in from the median images/s of each measured side (`side_name`s;
    the default `32-true/nhwc` must be among them): NCHW only when it beats NHWC by 5 %, bf16 only
    when its best layout beats the chosen fp32 format by 10 %."""
    base = images_per_s[side_name(**DEFAULT)]
    nchw = images_per_s.get(side_name("32-true", False), 0.0)
    fp32 = dict(DEFAULT, channels_last=not nchw >= LAYOUT_MARGIN * base)
    best = images_per_s[side_name(**fp32)]
    bf16 = {c: images_per_s.get(side_name("bf16-mixed", c), 0.0) for c in (True, False)}
    fast = max(bf16, key=lambda c: (bf16[c], c))  # ties: NHWC
    chosen = fp32
    if bf16[fast] >= BF16_MARGIN * best:
        chosen = {"precision": "bf16-mixed", "channels_last": fast}
    return chosen | {"speedup": images_per_s[side_name(**chosen)] / base}


def read_table(path: Path) -> dict[str, Any]:
    """The measured choices, {} when none were written; a damaged file is an error."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def save_choice(path: Path, device: str, key: str, entry: dict[str, Any]) -> None:
    """Add or replace one device's choice for one model (written atomically)."""
    table = read_table(path)
    table.setdefault(device, {})[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def resolve(
    train: TrainSettings, key: str, device: str | None, table: dict[str, Any], why: str = ""
) -> tuple[TrainSettings, dict[str, Any]]:
    """`train` with its `auto` formats replaced, and what the model record says about them:
    the measured choice for `device` and `key` where the table has one, else the default."""
    asked = {"precision": train.precision, "channels_last": train.channels_last}
    auto = [k for k, v in asked.items() if v == "auto"]
    if not auto:
        return train, {**asked, "chosen": "given"}
    entry = table.get(device or "", {}).get(key)
    if entry is None:
        reason = why or f"no measurement for {device}, {key} in {FILE}"
        picked, chosen = DEFAULT, f"default ({reason})"
    else:
        picked = entry
        chosen = f"measured on {device} ({entry.get('when', '?')}, {entry['speedup']:.2f}x)"
    fixed = {k: picked[k] for k in auto}
    return replace(train, **fixed), {**asked, **fixed, "auto": auto, "chosen": chosen}


def cpu_name() -> str:
    """This CPU as a table entry's device: `cpu: <model name>`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                return f"cpu: {value.strip()}"
    except OSError:
        pass
    return "cpu"


@lru_cache(maxsize=8)
def gpu_name(index: str) -> str | None:
    """The name nvidia-smi gives GPU `index` (a number or UUID), None without it: no CUDA context in this process, so
    a launcher may still fork its workers."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = [smi, "--query-gpu=name", "--format=csv,noheader", "-i", index]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_name(request: str) -> str | None:
    """The table's name of the device a job asking for `request` (device=...) trains on, found
    without torch; with `auto` or `cuda`, the first visible GPU (a machine's GPUs are taken to
    be of one kind); `auto` with no GPU in sight is this CPU; None when it cannot be told."""
    if request == "cpu":
        return cpu_name()
    index = int(request[5:]) if request.startswith("cuda:") else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = None if env is None else [v.strip() for v in env.split(",") if v.strip()]
    if visible is not None and index >= len(visible):
        return cpu_name() if request == "auto" else None
    name = gpu_name(visible[index] if visible is not None else str(index))
    return (
        cpu_name()
        if name is None and request == "auto" and shutil.which("nvidia-smi") is None
        else name
    )
