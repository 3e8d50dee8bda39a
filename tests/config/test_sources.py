"""imbadv.config.sources: source names, canonical model names and the paper's two sources."""

from __future__ import annotations

from imbadv.config.sources import NAME, Source, model_name
from imbadv.imbalance import PROFILES, targeted


def test_the_paper_sources_are_plain_strings_in_keys_and_rows():
    assert Source.SAME == "same" and Source.BALANCED == "balanced"
    assert (
        Source.BALANCED in PROFILES.names()
    )  # the balanced source is the balanced profile's model
    assert f"{Source.SAME}" == "same"


def test_model_names_carry_the_class_only_for_targeted_profiles():
    assert targeted("under") and not targeted("balanced") and not targeted("exp")
    assert model_name("under", 3, "none") == "under-3"
    assert model_name("exp", 3, "none") == "exp"
    assert model_name(Source.BALANCED, None, "fast_fgsm") == "balanced+fast_fgsm"


def test_a_source_name_parses_into_profile_class_and_mode():
    match = NAME.match("over-cat+pgd")
    assert (match["profile"], match["cls"], match["mode"]) == ("over", "cat", "pgd")
