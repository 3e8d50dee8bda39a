"""Data: synthetic structure and determinism, class folders and archives, caching, refusals."""

import hashlib
import inspect
import io
import os
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import imbadv.data.folder as folders
from imbadv.core.errors import ConfigError, DataError
from imbadv.data import DATASETS
from imbadv.data.cifar10 import load_cifar10
from imbadv.data.folder import load_folder
from imbadv.data.load import load_dataset as load_spec
from imbadv.data.synthetic import make_synthetic


def load_dataset(name, cache_dir="data/cache", **options):
    """A data set by name and options, checked through the registry as the settings do."""
    return load_spec(DATASETS.parse("dataset", name, options), cache_dir)


REPO = Path(__file__).resolve().parents[2]
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def color(label: int, index: int) -> tuple[int, int, int]:
    """A colour unique to each (class, image), so pixels tell which file landed where."""
    return (40 * label + 10, 20 * index + 5, 200 - 30 * label)


def write_tree(root: Path, classes=("cat", "ant", "bee"), n_train=4, n_test=2, mode="RGB"):
    """train/ and test/ class folders of lossless PNGs; returns the expected arrays."""
    expected = {}
    for split, n in (("train", n_train), ("test", n_test)):
        xs, ys = [], []
        for label, cls in enumerate(sorted(classes)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                c = color(label, i) if mode == "RGB" else color(label, i)[0]
                Image.new(mode, (6, 5), c).save(root / split / cls / f"{i:04d}.png")
                xs.append(np.asarray(Image.new(mode, (6, 5), c)))
                ys.append(label)
        x = np.stack(xs)
        expected[split] = (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x[:, None], np.array(ys))
    return expected


def make_tar(path: Path, tree: Path, arcname: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=arcname)
    return path


def assert_matches(ds, expected, classes=("ant", "bee", "cat")):
    assert ds.name == "folder" and ds.classes == classes
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_dtypes_and_exact_counts():
    ds = make_synthetic(
        train_per_class=30, test_per_class=7, num_classes=5, image_size=16, channels=1
    )
    assert ds.x_train.shape == (150, 1, 16, 16) and ds.x_test.shape == (35, 1, 16, 16)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.train_counts() == [30] * 5 and np.bincount(ds.y_test).tolist() == [7] * 5
    assert ds.classes == tuple(f"class{k}" for k in range(5)) and ds.num_classes == 5
    assert ds.name == "synthetic" and "seed=0" in ds.source and "\n" not in ds.source


def test_synthetic_is_deterministic_and_seeded():
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert getattr(a, key).tobytes() == getattr(b, key).tobytes()
    assert a.x_train.tobytes() != c.x_train.tobytes()
    assert a.x_test.tobytes() != c.x_test.tobytes()


def test_synthetic_spans_the_pixel_range():
    ds = make_synthetic()
    assert ds.x_train.shape == (5000, 3, 32, 32) and ds.train_counts() == [500] * 10
    assert ds.x_train.min() < 20 and ds.x_train.max() > 235
    assert 100 < ds.x_train.mean() < 156 and 25 < ds.x_train.std() < 60
    # Clipping must stay rare, or the images would be mostly flat black and white.
    assert np.isin(ds.x_train, (0, 255)).mean() < 0.02


def nearest_class_mean_accuracy(ds) -> float:
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64)  # noqa: E731
    train, test = flat(ds.x_train), flat(ds.x_test)
    means = np.stack([train[ds.y_train == k].mean(axis=0) for k in range(ds.num_classes)])
    dist = (test**2).sum(1)[:, None] - 2 * test @ means.T + (means**2).sum(1)[None]
    return float((dist.argmin(axis=1) == ds.y_test).mean())


def test_synthetic_has_learnable_but_overlapping_classes():
    acc = nearest_class_mean_accuracy(make_synthetic())
    assert 0.5 < acc < 0.95, acc
    # The noise knob really controls difficulty.
    assert nearest_class_mean_accuracy(make_synthetic(noise=0.5)) > acc + 0.1


def test_synthetic_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="dataset.train_per_class=0"):
        make_synthetic(train_per_class=0)
    with pytest.raises(ConfigError, match="dataset.noise=-1"):
        make_synthetic(noise=-1)


def test_synthetic_config_matches_the_function():
    conf = yaml.safe_load((REPO / "conf/dataset/synthetic.yaml").read_text())
    params = inspect.signature(make_synthetic).parameters
    assert conf.pop("name") == "synthetic"
    assert conf == {k: p.default for k, p in params.items()}
    ds = load_dataset("synthetic", **{**conf, "train_per_class": 3, "test_per_class": 2})
    assert ds.x_train.tobytes() == make_synthetic(3, 2).x_train.tobytes()


# ----------------------------------------------------------------------------- class folders


def test_folder_directory_sorted_classes_exact_pixels(tmp_path):
    expected = write_tree(tmp_path / "copy")
    ds = load_folder(tmp_path / "copy", tmp_path / "cache")
    assert_matches(ds, expected)
    assert ds.train_counts() == [4, 4, 4]
    assert str((tmp_path / "copy").resolve()) in ds.source


def test_folder_archive_with_top_level_folder(tmp_path):
    expected = write_tree(tmp_path / "copy")
    archive = make_tar(tmp_path / "copy.tar.gz", tmp_path / "copy", "cifar-ish")
    ds = load_folder(archive, tmp_path / "cache")
    assert_matches(ds, expected)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in ds.source and str(archive.resolve()) in ds.source
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert cached == [f"folder-{digest}.lock", f"folder-{digest}.npz"]  # no temporary left


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    expected = write_tree(tmp_path / "copy")
    archive = make_tar(tmp_path / "copy.tgz", tmp_path / "copy", ".")
    load_folder(tmp_path / "copy", tmp_path / "cache")
    load_folder(archive, tmp_path / "cache")

    def no_decoding(items):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(folders, "decode_images", no_decoding)
    assert_matches(load_folder(tmp_path / "copy", tmp_path / "cache"), expected)
    assert_matches(load_folder(archive, tmp_path / "cache"), expected)


def test_changed_directory_is_decoded_again(tmp_path):
    write_tree(tmp_path / "copy")
    first = load_folder(tmp_path / "copy", tmp_path / "cache")
    Image.new("RGB", (6, 5), (1, 2, 3)).save(tmp_path / "copy/train/ant/extra.png")
    second = load_folder(tmp_path / "copy", tmp_path / "cache")
    assert second.train_counts() == [5, 4, 4] and first.source != second.source


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path):
    expected = write_tree(tmp_path / "copy")
    archive = make_tar(tmp_path / "copy.tar.gz", tmp_path / "copy", ".")
    load_folder(archive, tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="unreadable"):
        assert_matches(load_folder(archive, tmp_path / "cache"), expected)
    assert cache.stat().st_size > 1000


def test_a_cache_write_cut_short_leaves_no_cache_under_the_final_name(tmp_path, monkeypatch):
    expected = write_tree(tmp_path / "copy")

    class Killed(BaseException):
        pass

    def dies_halfway(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise Killed

    monkeypatch.setattr(np, "savez", dies_halfway)
    with pytest.raises(Killed):
        load_folder(tmp_path / "copy", tmp_path / "cache")
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]
    monkeypatch.undo()
    assert_matches(load_folder(tmp_path / "copy", tmp_path / "cache"), expected)


def test_concurrent_loads_decode_once(tmp_path, monkeypatch):
    expected = write_tree(tmp_path / "copy")
    calls, real = [], folders.decode_images

    def slow_decode(items):
        calls.append(1)
        time.sleep(0.5)
        return real(items)

    monkeypatch.setattr(folders, "decode_images", slow_decode)
    results = []

    def job():
        results.append(load_folder(tmp_path / "copy", tmp_path / "cache"))

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2
    for ds in results:
        assert_matches(ds, expected)


def test_grayscale_stays_one_channel_and_mixed_becomes_rgb(tmp_path):
    expected = write_tree(tmp_path / "gray", mode="L")
    ds = load_folder(tmp_path / "gray", tmp_path / "cache")
    assert ds.x_train.shape == (12, 1, 5, 6)
    assert_matches(ds, expected)
    Image.new("RGB", (6, 5), (9, 8, 7)).save(tmp_path / "gray/test/ant/rgb.png")
    mixed = load_folder(tmp_path / "gray", tmp_path / "cache")
    assert mixed.x_train.shape == (12, 3, 5, 6)
    # A grey image becomes three equal channels.
    np.testing.assert_array_equal(mixed.x_train[:, 0], expected["train"][0][:, 0])
    np.testing.assert_array_equal(mixed.x_train[:, 2], expected["train"][0][:, 0])


def test_images_of_different_sizes_are_refused(tmp_path):
    write_tree(tmp_path / "copy")
    Image.new("RGB", (7, 5), (0, 0, 0)).save(tmp_path / "copy/test/bee/odd.png")
    with pytest.raises(DataError, match=r"test/bee/odd\.png is 7x5 .* one size"):
        load_folder(tmp_path / "copy", tmp_path / "cache")


def test_test_split_must_have_the_train_classes(tmp_path):
    write_tree(tmp_path / "copy")
    (tmp_path / "copy/test/dog").mkdir()
    Image.new("RGB", (6, 5)).save(tmp_path / "copy/test/dog/0.png")
    with pytest.raises(DataError, match="same class folders.*dog"):
        load_folder(tmp_path / "copy", tmp_path / "cache")


def test_missing_or_wrong_root_is_refused(tmp_path):
    missing = tmp_path / "nowhere" / "copy.tar.gz"
    with pytest.raises(DataError, match="does not exist") as err:
        load_folder(missing, tmp_path / "cache")
    assert f"dataset.root={missing}" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a folder or a .tar.gz"):
        load_folder(tmp_path / "notes.txt", tmp_path / "cache")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat/a.png")
    with pytest.raises(DataError, match="no train/ and test/"):
        load_folder(tmp_path / "flat", tmp_path / "cache")


def hostile_member(kind: str, tmp_path: Path) -> tarfile.TarInfo:
    if kind == "dotdot":
        return tarfile.TarInfo("train/cat/../../../evil.png")
    if kind == "absolute":
        return tarfile.TarInfo(str(tmp_path / "outside" / "evil.png"))
    info = tarfile.TarInfo("train/cat/evil.png")
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}.get(kind, tarfile.CHRTYPE)
    info.linkname = "/etc/passwd"
    return info


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_hostile_archives_are_refused(tmp_path, kind):
    write_tree(tmp_path / "copy")
    archive = tmp_path / "work" / "hostile.tar.gz"
    archive.parent.mkdir()
    png = io.BytesIO()
    Image.new("RGB", (6, 5)).save(png, format="PNG")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "copy", arcname=".")
        member = hostile_member(kind, tmp_path)
        member.size = len(png.getvalue()) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(png.getvalue()) if member.isfile() else None)
    with tarfile.open(archive) as tar:  # the hostile name survived packing unchanged
        assert tar.getmembers()[-1].name == member.name
    before = sorted(p for p in tmp_path.rglob("*"))
    reason = "points outside" if kind in ("dotdot", "absolute") else "link or device"
    with pytest.raises(DataError, match=f"{reason}.*refusing") as err:
        load_folder(archive, tmp_path / "work" / "cache")
    assert str(archive) in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "work" / "cache").glob("*.npz"))
    assert not (tmp_path / "outside").exists() and not (tmp_path / "evil.png").exists()
    assert sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts) == before


# ----------------------------------------------------------------------------- cifar10


def test_cifar10_without_files_or_network_fails_fast_and_says_where(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    def no_waiting(seconds):
        raise AssertionError(f"waited {seconds} s for a network that is not there")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(time, "sleep", no_waiting)  # fast = no retry loop that sleeps
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "\n" not in message
    for hint in ("download failed", "cifar-10-python.tar.gz", "IMBADV_DATA_DIR", "dataset=folder"):
        assert hint in message


def test_cifar10_download_off_never_touches_the_network(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("network used although download=False")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    with pytest.raises(DataError, match="download is off"):
        load_dataset("cifar10", root=str(tmp_path), download=False)


def test_cifar10_arrays_become_nchw(tmp_path, monkeypatch):
    import torchvision.datasets

    class FakeCIFAR10(torchvision.datasets.CIFAR10):
        classes = list(CIFAR10_CLASSES)

        def __init__(self, root, train, download):  # no files read: only the conversion is tested
            n = 6 if train else 4
            self.data = np.arange(n * 32 * 32 * 3, dtype=np.uint8).reshape(n, 32, 32, 3)
            self.targets = list(range(n))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = load_cifar10(tmp_path)
    fake = FakeCIFAR10(tmp_path, True, False)
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train[2, 1], fake.data[2, :, :, 1])
    assert ds.y_train.dtype == np.int64 and ds.classes == CIFAR10_CLASSES
    assert "cifar-10-batches-py" in ds.source


# ----------------------------------------------------------------------------- dispatch


def test_load_dataset_dispatches_and_refuses_unknown_names(tmp_path):
    with pytest.raises(ConfigError, match="dataset=imagenet"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match="dataset.colour"):
        load_dataset("synthetic", colour="red")
    with pytest.raises(ConfigError, match="dataset.root=\\?\\?\\?"):
        load_dataset("folder")
    expected = write_tree(tmp_path / "copy")
    copy = load_dataset("folder", cache_dir=tmp_path / "cache", root=str(tmp_path / "copy"))
    assert_matches(copy, expected)


# ----------------------------------------------------------------------------- the real copy


def real_copy() -> Path:
    env = os.environ.get("IMBADV_CIFAR10_JPEG")
    path = Path(env) if env else REPO.parent / "shared/data/cifar10-jpeg.tar.gz"
    if not path.is_file():
        pytest.skip(f"real CIFAR-10 JPEG copy not found at {path} (set IMBADV_CIFAR10_JPEG)")
    return path


@pytest.mark.slow
def test_real_cifar10_jpeg_copy(tmp_path, monkeypatch):
    archive = real_copy()
    ds = load_folder(archive, tmp_path)
    assert ds.classes == CIFAR10_CLASSES
    assert ds.x_train.shape == (50000, 3, 32, 32) and ds.x_test.shape == (10000, 3, 32, 32)
    assert ds.train_counts() == [5000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10

    def decode_again(*args, **kwargs):
        raise AssertionError(
            "the second load decoded the images again instead of reading the cache"
        )

    # The second load reads the cache: checked by what it calls, not by a clock on a shared machine
    monkeypatch.setattr(folders, "_decode_folder", decode_again)
    again = load_folder(archive, tmp_path)
    assert again.x_train.tobytes() == ds.x_train.tobytes()
    assert np.array_equal(again.y_test, ds.y_test)
