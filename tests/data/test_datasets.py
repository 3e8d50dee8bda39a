"""CIFAR-100, SVHN, Fashion-MNIST and Tiny-ImageNet on small files written in each official format."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imbadv.data.fashion_mnist as fmnist
import imbadv.data.tiny_imagenet as tiny
from imbadv.core.errors import ConfigError, DataError
from imbadv.data import DATASETS, names
from imbadv.data.base import pixel_stats, pixel_stats_chunked
from imbadv.data.cifar10 import load_cifar10
from imbadv.data.cifar100 import CIFAR100_MEAN, load_cifar100
from imbadv.data.svhn import load_svhn

REPO = Path(__file__).resolve().parents[2]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def one_line_error(call, *fragments: str) -> str:
    """Run `call`, expect a DataError of one line containing every fragment; return it."""
    with pytest.raises(DataError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any pickle.load from here on fails the test: corrupted archives must never be unpickled."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a file was unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)


# ----------------------------------------------------------------------------- CIFAR-100


def write_cifar100(root: Path, monkeypatch) -> dict[str, np.ndarray]:
    """cifar-100-python/{train,test,meta} with 2 train and 1 test image per fine class; md5s published."""
    from torchvision.datasets import CIFAR100

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per in (("train", 2), ("test", 1)):
        fine = np.tile(np.arange(100), per)
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        batch = {"data": data, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}
        (folder / split).write_bytes(pickle.dumps(batch))
        arrays[split], arrays[f"{split}_fine"] = data, fine
    meta = {"fine_label_names": list(names.CIFAR100_FINE)}
    meta["coarse_label_names"] = list(names.CIFAR100_COARSE)
    (folder / "meta").write_bytes(pickle.dumps(meta))
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5(folder / "meta")})
    return arrays


def test_cifar100_fine_and_coarse(tmp_path, monkeypatch):
    arrays = write_cifar100(tmp_path, monkeypatch)
    ds = load_cifar100(tmp_path, download=False)
    assert ds.classes == names.CIFAR100_FINE and ds.classes[47] == "maple_tree"
    assert ds.x_train.shape == (200, 3, 32, 32) and ds.x_test.shape == (100, 3, 32, 32)
    assert ds.train_counts() == [2] * 100 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train[5].reshape(-1), arrays["train"][5])
    np.testing.assert_array_equal(ds.y_train, arrays["train_fine"])
    assert ds.card.channels == 3 and ds.card.image_size == 32 and ds.card.mean == CIFAR100_MEAN
    coarse = load_cifar100(tmp_path, labels="coarse", download=False)
    assert coarse.classes == names.CIFAR100_COARSE and coarse.train_counts() == [10] * 20
    np.testing.assert_array_equal(coarse.y_test, arrays["test_fine"] // 5)


def test_cifar100_corrupted_copy_is_never_unpickled(tmp_path, monkeypatch, offline, no_unpickling):
    write_cifar100(tmp_path, monkeypatch)
    train = tmp_path / "cifar-100-python" / "train"
    blob = bytearray(train.read_bytes())
    blob[100] ^= 0xFF
    train.write_bytes(bytes(blob))
    hint = ("(train; nothing was unpickled)", "cifar-100-python.tar.gz", "IMBADV_DATA_DIR")
    one_line_error(lambda: load_cifar100(tmp_path, download=False), *hint, "download is off")
    one_line_error(lambda: load_cifar100(tmp_path), *hint, "the download failed")
    (tmp_path / "cifar-100-python" / "test").unlink()
    one_line_error(lambda: load_cifar100(tmp_path, download=False), "(train, test; nothing")


def test_cifar100_official_archive_is_checked_then_extracted(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    write_cifar100(tmp_path / "src", monkeypatch)
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-100-python", arcname="cifar-100-python")
    monkeypatch.setattr(CIFAR100, "tgz_md5", md5(archive))
    assert load_cifar100(tmp_path, download=False).train_counts() == [2] * 100
    assert (tmp_path / "cifar-100-python" / "meta").is_file()


def test_cifar10_batches_are_unpickled_only_after_their_md5s_match(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names_ = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names_):
        data = np.full((2, 3072), k, dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": [k % 10, 9]}))
    meta = {"label_names": list(DATASETS.entries["cifar10"].params().known_classes())}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    listed = [[n, md5(folder / n)] for n in names_]
    monkeypatch.setattr(CIFAR10, "train_list", listed[:5])
    monkeypatch.setattr(CIFAR10, "test_list", listed[5:])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    ds = load_cifar10(tmp_path, download=False)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.y_test.tolist() == [5, 9]
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": 0, "labels": []}))
    with monkeypatch.context() as m:
        m.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled a corrupted batch"))
        one_line_error(lambda: load_cifar10(tmp_path, download=False), "download is off")


# ----------------------------------------------------------------------------- SVHN


def write_svhn(root: Path, monkeypatch, train_labels=(10, 1, 1, 2, 9, 10, 1), test_labels=(3, 10)):
    import scipy.io
    from torchvision.datasets import SVHN

    rng = np.random.default_rng(1)
    split_list = dict(SVHN.split_list)
    arrays = {}
    for split, labels in (("train", train_labels), ("test", test_labels)):
        x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
        y = np.array(labels, dtype=np.uint8)[:, None]
        path = root / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": x, "y": y})
        assert not path.read_bytes().startswith(b"\x80")  # MATLAB v5, not a pickle
        split_list[split] = [split_list[split][0], path.name, md5(path)]
        arrays[split] = x
    monkeypatch.setattr(SVHN, "split_list", split_list)
    return arrays


def test_svhn_mat_files_label_10_is_digit_0_and_the_card_says_imbalanced(tmp_path, monkeypatch):
    arrays = write_svhn(tmp_path, monkeypatch)
    ds = load_svhn(tmp_path, download=False)
    assert ds.classes == tuple("0123456789") and ds.x_train.shape == (7, 3, 32, 32)
    assert ds.y_train.tolist() == [0, 1, 1, 2, 9, 0, 1] and ds.y_test.tolist() == [3, 0]
    # [N, C, H, W] from MATLAB's [H, W, C, N]
    np.testing.assert_array_equal(ds.x_train[4, 2], arrays["train"][:, :, 2, 4])
    assert ds.train_counts() == [2, 3, 1, 0, 0, 0, 0, 0, 0, 1]
    assert "imbalanced" in ds.card.note and "2, 3, 1, 0, 0, 0, 0, 0, 0, 1" in ds.card.note
    assert ds.card.mean == (0.4377, 0.4438, 0.4728)


def test_svhn_corrupted_or_missing_files_are_refused_in_one_line(tmp_path, monkeypatch, offline):
    from torchvision.datasets import SVHN

    write_svhn(tmp_path, monkeypatch)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:-10])
    one_line_error(lambda: load_svhn(tmp_path, download=False), "does not match its published md5")
    one_line_error(lambda: load_svhn(tmp_path), "the download failed", "test_32x32.mat")
    # A cut file whose checksum the (patched) list accepts still fails in one line.
    split_list = dict(SVHN.split_list)
    split_list["train"] = [*split_list["train"][:2], md5(path)]
    monkeypatch.setattr(SVHN, "split_list", split_list)
    one_line_error(lambda: load_svhn(tmp_path, download=False), "not a readable SVHN .mat file")
    (tmp_path / "test_32x32.mat").unlink()
    one_line_error(lambda: load_svhn(tmp_path, download=False), "test_32x32.mat is missing")


# ----------------------------------------------------------------------------- Fashion-MNIST


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, gz: bool, n_train: int = 20, n_test: int = 10) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) * 3) % 10,
    }
    for key, stem in fmnist.FILES.items():
        blob = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_files_gz_or_raw(tmp_path, monkeypatch, gz):
    monkeypatch.setattr(fmnist, "DEBIAN_DIR", tmp_path / "no-debian")
    arrays = write_idx(tmp_path / "FashionMNIST" / "raw", gz)
    ds = fmnist.load_fashion_mnist(tmp_path, download=False)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["x_train"])
    assert ds.y_test.tolist() == arrays["y_test"].tolist() and ds.y_train.dtype == np.int64
    assert ds.classes[6] == "shirt" and ds.train_counts() == [2] * 10
    assert (ds.card.channels, ds.card.image_size) == (1, 28)
    assert ds.card.mean == (0.2860,) and ds.card.std == (0.3530,)


def test_fashion_mnist_falls_back_to_the_debian_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "DEBIAN_DIR", tmp_path / "debian")
    write_idx(tmp_path / "debian", gz=True)
    ds = fmnist.load_fashion_mnist(tmp_path / "user", download=False)
    assert str(tmp_path / "debian") in ds.source


def test_fashion_mnist_damaged_or_missing_files_are_refused(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(fmnist, "DEBIAN_DIR", tmp_path / "no-debian")
    raw = tmp_path / "FashionMNIST" / "raw"
    where = (str(raw), "apt-get install dataset-fashion-mnist")
    one_line_error(lambda: fmnist.load_fashion_mnist(tmp_path, download=False), *where)
    one_line_error(lambda: fmnist.load_fashion_mnist(tmp_path), *where, "download failed")
    write_idx(raw, gz=False)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    one_line_error(lambda: fmnist.load_fashion_mnist(tmp_path, download=False), "cut short")
    images.write_bytes(b"\x00\x00\x0d\x03" + images.read_bytes()[4:])
    one_line_error(lambda: fmnist.load_fashion_mnist(tmp_path, download=False), "not an idx file")
    write_idx(raw, gz=False, n_train=20)
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    one_line_error(lambda: fmnist.load_fashion_mnist(tmp_path, download=False), "and 19 labels")


def test_real_fashion_mnist_debian_package_matches_its_card():
    if not all((fmnist.DEBIAN_DIR / f"{s}.gz").is_file() for s in fmnist.FILES.values()):
        pytest.skip(f"dataset-fashion-mnist not installed ({fmnist.DEBIAN_DIR})")
    ds = fmnist.load_fashion_mnist("/nonexistent", download=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and len(ds.y_test) == 10000
    assert ds.train_counts() == [6000] * 10
    assert pixel_stats_chunked(ds.x_train) == (ds.card.mean, ds.card.std)


# ----------------------------------------------------------------------------- Tiny-ImageNet


WORDS = {
    "n01443537": "goldfish, Carassius auratus",
    "n02124075": "Egyptian cat",
    "n02085620": "Chihuahua",
    "n04067472": "reel",
    "n02666196": "reel",  # a shared first synonym: names stay unique
}


def jpeg(color, size: int = 64, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_tiny(root: Path, wnids: list[str], per_class: int = 4, val: int = 1, size: int = 64):
    """tiny-imagenet-200/ in the official layout with one plain colour per class."""
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = {**WORDS, **{w: f"thing {k}" for k, w in enumerate(wnids) if w not in WORDS}}
    (folder / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in words.items()))
    lines = []
    for k, wnid in enumerate(wnids):
        color = (40 * k % 256, 200 - 40 * k % 200, 90)
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(per_class):
            (images / f"{wnid}_{i}.JPEG").write_bytes(jpeg(color, size))
        for i in range(val):
            name = f"val_{k * val + i}.JPEG"
            (folder / "val" / "images" / name).write_bytes(jpeg(color, size))
            lines.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_tiny_imagenet_layout_names_labels_and_card(tmp_path, monkeypatch):
    folder = write_tiny(tmp_path, ["n02124075", "n01443537", "n02085620"], per_class=4, val=2)
    (folder / "train" / "n02085620" / "images" / "n02085620_0.JPEG").write_bytes(
        jpeg(128, mode="L")
    )  # real Tiny-ImageNet has some grayscale JPEGs among RGB ones
    ds = tiny.load_tiny_imagenet(tmp_path, tmp_path / "cache", download=False)
    assert ds.classes == ("goldfish", "chihuahua", "egyptian_cat")  # sorted wnids
    assert ds.x_train.shape == (12, 3, 64, 64) and ds.x_test.shape == (6, 3, 64, 64)
    assert ds.train_counts() == [4, 4, 4] and ds.y_test.tolist() == [2, 2, 0, 0, 1, 1]
    goldfish = ds.x_train[ds.y_train == 0].mean(axis=(0, 2, 3))
    assert np.allclose(goldfish, (40, 160, 90), atol=3)  # wnids.txt's 2nd line, colour k=1
    assert (ds.card.channels, ds.card.image_size) == (3, 64)
    assert (ds.card.mean, ds.card.std) == pixel_stats(ds.x_train)
    monkeypatch.setattr(tiny, "_decode", lambda folder: pytest.fail("decoded twice"))
    again = tiny.load_tiny_imagenet(tmp_path, tmp_path / "cache", download=False)
    assert again.x_train.tobytes() == ds.x_train.tobytes() and again.card == ds.card


def test_names_are_command_line_friendly():
    assert names.friendly("T-shirt/top") == "t_shirt_top"
    assert names.friendly(" Egyptian cat") == "egyptian_cat"
    assert all(names.friendly(n) == n for n in names.FASHION_MNIST_CLASSES + names.CIFAR100_FINE)


def test_tiny_imagenet_incomplete_or_corrupted_copies_are_refused(tmp_path, offline):
    load = lambda: tiny.load_tiny_imagenet(tmp_path, tmp_path / "cache", download=False)  # noqa: E731
    one_line_error(load, "lacks wnids.txt", "tiny-imagenet-200.zip", "download is off")
    one_line_error(lambda: tiny.load_tiny_imagenet(tmp_path, tmp_path / "c"), "the download failed")
    folder = write_tiny(tmp_path, ["n04067472", "n02666196"], per_class=2)
    annotations = folder / "val" / "val_annotations.txt"
    text = annotations.read_text()
    annotations.write_text(text + "val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    one_line_error(load, "val_annotations.txt line 3", "n99999999")
    annotations.write_text(text + "val_9.JPEG\tn04067472\t0\t0\t1\t1\n")
    one_line_error(load, "val_9.JPEG is annotated", "missing")
    annotations.write_text(text)
    (folder / "val" / "images" / "val_0.JPEG").write_bytes(b"not a jpeg")
    one_line_error(load, "val/images/val_0.JPEG cannot be decoded")
    annotations.unlink()
    one_line_error(load, "lacks val/val_annotations.txt")


def test_tiny_imagenet_unique_names_from_words(tmp_path):
    folder = write_tiny(tmp_path, ["n04067472", "n02666196", "n01443537"], per_class=1)
    wnids, classes = names.tiny_imagenet_classes(folder)
    assert wnids == ("n01443537", "n02666196", "n04067472")
    assert classes == ("goldfish", "reel_n02666196", "reel_n04067472")


def test_tiny_imagenet_official_zip_is_checked_then_extracted(tmp_path, monkeypatch):
    import zipfile

    folder = write_tiny(tmp_path / "src", ["n01443537", "n02124075"], per_class=1)
    archive = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    monkeypatch.setattr(tiny, "ZIP_MD5", md5(archive))
    ds = tiny.load_tiny_imagenet(tmp_path, tmp_path / "cache", download=False)
    assert ds.classes == ("goldfish", "egyptian_cat") and ds.train_counts() == [1, 1]


# ----------------------------------------------------------------------------- names and sizes


def test_known_classes_are_torch_free_and_match_the_loaders(tmp_path):
    folder = write_tiny(tmp_path, ["n02124075", "n01443537"], per_class=1)
    for k in range(2):  # egyptian_cat gets 3 training images
        (folder / "train" / "n02124075" / "images" / f"extra_{k}.JPEG").write_bytes(jpeg(9))
    code = (
        "import sys; from imbadv.data import DATASETS as D\n"
        "p = lambda n, **o: D.entries[n].params(**o).known_classes()\n"
        "print(p('fashion_mnist')[6], p('cifar100')[47], p('cifar100', labels='coarse')[17],"
        f" p('svhn')[3], p('tiny_imagenet', root={str(tmp_path)!r}),"
        " p('tiny_imagenet', root='/nonexistent'), 'torch' in sys.modules)\n"
        f"print(D.entries['tiny_imagenet'].params(root={str(tmp_path)!r}).known_train_counts())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [
        "shirt maple_tree trees 3 ('goldfish', 'egyptian_cat') None False",
        "(1, 3)",
    ]


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 64), (3, 32)])
def test_the_vgg_takes_every_card_size_and_normalizes_with_its_stats(channels, size):
    from imbadv.data.base import DataCard
    from imbadv.models import MODELS

    card = DataCard(
        tuple(f"c{k}" for k in range(7)), channels, size, (0.3,) * channels, (0.2,) * channels
    )
    spec = MODELS.parse("model", "vgg", {"width": 0.125})
    model = spec.load(MODELS)(card, spec.params)
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 7)
    assert model.mean.flatten().tolist() == pytest.approx([0.3] * channels)
    grey = model(torch.full((1, channels, size, size), 0.3))  # the mean image normalizes to 0
    zeros = model.classifier(model.features(torch.zeros(1, channels, size, size)))
    assert torch.allclose(grey, zeros, atol=1e-6)


# ----------------------------------------------------------------------------- profiles, C classes


def settings(*overrides: str):
    from hydra import compose, initialize_config_dir

    from imbadv.config.settings import from_config

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return from_config(compose("config", overrides=list(overrides)))


def test_paper_profiles_on_100_classes():
    from imbadv.imbalance import PROFILES
    from imbadv.imbalance.split import class_counts

    spec = PROFILES.parse("imbalance", "under", {"majority": 500, "minority": 100})
    under = class_counts([500] * 100, spec, 47)
    assert under[47] == 100 and under.count(500) == 99
    spec = PROFILES.parse("imbalance", "over", {"majority": 500, "minority": 100})
    over = class_counts([500] * 100, spec, 99)
    assert over[99] == 500 and over.count(100) == 99
    with pytest.raises(ConfigError, match="class=100"):
        class_counts([500] * 100, spec, 100)


def test_classes_by_name_and_index_on_the_command_line(tmp_path):
    store = f"paths.store_dir={tmp_path}"
    s = settings("experiment=quick_fashion_mnist", "class=shirt", "imbalance=under", store)
    assert s.target == 6 and s.dataset.name == "fashion_mnist"
    s = settings("experiment=quick_cifar100", "class=maple_tree", "imbalance=over", store)
    assert s.target == 47 and s.dataset.params.labels == "fine"
    s = settings(
        "dataset=cifar100",
        "dataset.labels=coarse",
        "class=large_man-made_outdoor_things",
        "experiment=quick_cifar100",
        store,
    )
    assert s.target == 9
    s = settings(
        "experiment=smoke", "dataset.num_classes=100", "class=99", "imbalance=under", store
    )
    assert s.target == 99
    with pytest.raises(ConfigError, match="class=oak") as err:
        settings("dataset=cifar100", "class=oak", store)
    assert "maple_tree" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="class=100"):
        settings("experiment=smoke", "dataset.num_classes=100", "class=100", store)


def test_svhn_counts_are_checked_per_digit_before_any_job(tmp_path):
    store = f"paths.store_dir={tmp_path}"
    with pytest.raises(ConfigError, match=r"class 0\)=5000 .* the 4948 training images"):
        settings("dataset=svhn", "class=1", "imbalance=under", store)  # 5,000 of every digit
    # digit 1 has 13,861 images, so over-sampling it at 10,000 passes the check
    s = settings("dataset=svhn", "class=1", "imbalance=over", "counts.majority=10000", store)
    assert s.target == 1


# ----------------------------------------------------------------------------- the real CLI


@pytest.mark.slow
def test_smoke_preset_on_a_200_class_64px_tiny_imagenet_folder(tmp_path):
    import json

    from conftest import run_cli

    wnids = [f"n{10000000 + k:08d}" for k in range(200)]
    write_tiny(tmp_path / "data", wnids, per_class=5, val=1)
    proc = run_cli(
        [
            "experiment=smoke",
            "dataset=tiny_imagenet",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.download=false",
            "class=thing_7",
            "imbalance=under",
            "counts.majority=5",
            "counts.minority=3",  # 1 of 3 held out for validation (0.2 rounds to 1)
            "counts.val_fraction=0.2",
            "trainer.max_epochs=2",
            f"paths.store_dir={tmp_path}/store",
            f"paths.cache_dir={tmp_path}/cache",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=tmp_path,
        timeout=900,  # about 1 min of CPU; generous for a loaded machine
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (result["meta"]["class"], result["meta"]["dataset"]) == (7, "tiny_imagenet")
    counts = result["models"]["target"]["train_counts"]
    assert (
        len(counts) == 200 and counts[7] == 2 and counts[0] == 4
    )  # 3 and 5, minus 1 for validation
    assert {r["n"] for r in result["attacks"]} == {1}  # one val image per class is the test set
