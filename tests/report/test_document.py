"""The report's setup section names what the numbers come from: here, models read from files."""

from __future__ import annotations

from imbadv.report.document import checkpoint_files


def test_each_checkpoint_file_is_named_once_with_its_sha256():
    file = {"file": "robust.safetensors", "sha256": "ab" * 32, "format": "safetensors"}
    results = [
        {"models": {"target": {"checkpoint": file}, "balanced": {"key": "k1"}}},
        {"models": {"target": {"checkpoint": dict(file)}, "balanced": {"key": "k1"}}},
    ]
    assert checkpoint_files(results) == [f"`robust.safetensors` sha256 {'ab' * 32} (safetensors)"]
    assert checkpoint_files([{"models": {"target": {"key": "k2"}}}]) == []  # trained models only
