"""trainer.precision/channels_last `auto`: the bench's measured choice per device, model and batch,
resolved before any key is made; the default without a measurement; explicit values kept."""

import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli
from hydra import compose, initialize_config_dir

from imbadv.config.settings import from_config
from imbadv.pipeline.plan import train_key
from imbadv.training import TrainSettings, formats

CONF = Path(__file__).resolve().parents[2] / "conf"
ROOT = Path(__file__).resolve().parents[2]
SMOKE_KEY = "vgg width 0.125 batch 64"  # the smoke preset's model and batch


def ips(**sides: float) -> dict[str, float]:
    names = {"fp32": "32-true/nhwc", "fp32_nchw": "32-true/nchw"}
    names |= {"bf16": "bf16-mixed/nhwc", "bf16_nchw": "bf16-mixed/nchw"}
    return {names[k]: v for k, v in sides.items()}


@pytest.mark.parametrize(
    ("sides", "precision", "channels_last"),
    [
        (ips(fp32=100, fp32_nchw=104, bf16=109, bf16_nchw=90), "32-true", True),  # under margins
        (ips(fp32=100, fp32_nchw=106), "32-true", False),  # NCHW 6 % faster, no bf16 side
        (ips(fp32=100, fp32_nchw=50, bf16=111, bf16_nchw=120), "bf16-mixed", False),
        (ips(fp32=100, fp32_nchw=120, bf16=125, bf16_nchw=130), "32-true", False),  # vs 120
    ],
)
def test_choice_moves_from_the_default_only_by_its_margins(sides, precision, channels_last):
    c = formats.choose(sides)
    assert (c["precision"], c["channels_last"]) == (precision, channels_last)
    assert c["speedup"] == pytest.approx(sides[formats.side_name(precision, channels_last)] / 100)


def test_resolve_keeps_given_values_and_fills_auto_from_the_table():
    table = {"gpu": {"k": {"precision": "bf16-mixed", "channels_last": False, "speedup": 2.0}}}
    given = TrainSettings(precision="32-true", channels_last=True)
    assert formats.resolve(given, "k", "gpu", table)[0] is given
    half = TrainSettings(precision="auto", channels_last=True)
    train, note = formats.resolve(half, "k", "gpu", table)
    assert (train.precision, train.channels_last) == ("bf16-mixed", True)
    assert note["auto"] == ["precision"] and note["chosen"].startswith("measured on gpu")
    both = TrainSettings(precision="auto", channels_last="auto")
    train, note = formats.resolve(both, "other", "gpu", table)
    assert (train.precision, train.channels_last) == ("32-true", True)
    assert note["chosen"].startswith("default (no measurement for gpu, other")


def settings(store: Path, *extra: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"paths.store_dir={store}", *extra])
    return from_config(cfg)


def write_table(store: Path, precision: str, channels_last: bool) -> None:
    entry = {"precision": precision, "channels_last": channels_last, "speedup": 1.5}
    formats.save_choice(store / formats.FILE, formats.cpu_name(), SMOKE_KEY, entry)


def test_without_a_measurement_auto_is_the_old_default_and_keeps_every_key(tmp_path):
    auto = settings(tmp_path, "device=cpu")
    old = settings(
        tmp_path, "device=cpu", "trainer.precision=32-true", "trainer.channels_last=true"
    )
    assert auto.train == old.train and train_key(auto) == train_key(old)
    assert auto.formats["chosen"].startswith("default (no measurement")


def test_a_measurement_decides_auto_and_the_key_but_never_an_explicit_value(tmp_path):
    write_table(tmp_path, "32-true", False)
    s = settings(tmp_path, "device=cpu")
    assert s.train.channels_last is False and train_key(s)["channels_last"] is False
    assert s.formats["chosen"].startswith(f"measured on {formats.cpu_name()}")
    kept = settings(tmp_path, "device=cpu", "trainer.channels_last=true")
    assert kept.train.channels_last is True and kept.formats["auto"] == ["precision"]
    other = settings(tmp_path, "device=cpu", "trainer.batch_size=32")  # another entry: none
    assert other.train.channels_last is True


def test_a_cluster_launch_takes_the_default_on_both_sides(tmp_path):
    write_table(tmp_path, "32-true", False)
    s = settings(tmp_path, "device=cpu", "launcher=slurm_cpu")
    assert s.train.channels_last is True and "cluster launch" in s.formats["chosen"]


def test_a_job_trains_in_the_measured_format_and_its_record_says_so(tmp_path):
    store = tmp_path / "store"
    write_table(store, "32-true", False)
    args = [*TINY, "trainer.max_epochs=1", "attack.methods=[fgsm]", "logger=none", "device=cpu"]
    args += [f"paths.store_dir={store}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = run_cli(args, cwd=ROOT, env={"IMBADV_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    record = results["models"]["target"]
    assert record["formats"]["channels_last"] is False and record["layout"] == "contiguous"
    assert record["formats"]["auto"] == ["precision", "channels_last"]
