"""Every experiment preset composes with every registered adversarial-training method."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from imbadv.adversarial import ADVERSARIAL
from imbadv.config.settings import CONF_DIR, from_config

PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
OWN_LOSS = {n for n, e in ADVERSARIAL.entries.items() if not e.facts.uses_objective}
COSINE = {n for n, e in ADVERSARIAL.entries.items() if e.facts.head == "cosine"}


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_takes_every_method(preset, tmp_path):
    for mode in ADVERSARIAL.names():
        overrides = [f"experiment={preset}", f"adversarial={mode}", f"paths.data_dir={tmp_path}"]
        if mode in OWN_LOSS:
            overrides.append("objective=ce")
        if mode in COSINE:
            overrides.append("model.head=cosine")
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        s = from_config(cfg)
        assert s.adversarial.mode == mode
        assert s.adversarial.key() == {"mode": mode}  # the YAML holds each method's defaults
