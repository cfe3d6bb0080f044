"""Datasets: the shared CIFAR-10 tarball, ImageFolder layouts built here with PIL, the
class-balanced order, and clear errors when data is missing."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from weat_core import WeatError
from weat_core.data import CIFAR10_CLASSES, ImageSet, balanced_order, data_root, load_split

# ---- the shared CIFAR-10 JPEG tarball -----------------------------------------------------


@pytest.fixture(scope="module")
def cifar_test200(cifar_tarball) -> ImageSet:
    return load_split(cifar_tarball, "test", limit=200)


def test_tarball_test_split(cifar_test200):
    s = cifar_test200
    assert s.x.dtype == torch.uint8 and s.x.shape == (200, 3, 32, 32)
    assert s.y.dtype == torch.int64 and s.y.shape == (200,)
    assert s.classes == CIFAR10_CLASSES and s.num_classes == 10 and len(s) == 200
    assert torch.equal(s.y, torch.arange(10).repeat(20))  # round-robin over the classes
    assert s.x.float().std() > 20  # real images, not blank
    f = s.float([0, 1])
    assert f.dtype == torch.float32 and f.shape == (2, 3, 32, 32) and 0 <= f.min() and f.max() <= 1
    torch.testing.assert_close(f, s.x[:2].float() / 255)


def test_tarball_limit_is_a_prefix_of_the_balanced_order(cifar_tarball, cifar_test200):
    s = load_split(cifar_tarball, "test", limit=25)
    assert torch.equal(s.x, cifar_test200.x[:25]) and torch.equal(s.y, cifar_test200.y[:25])
    sub = cifar_test200.subset(30)
    assert torch.equal(sub.x, cifar_test200.x[:30])


def test_tarball_missing_split(tmp_path):
    archive = tmp_path / "only-train.tar.gz"
    src = _write_image_folder(tmp_path / "src", splits=("train",))
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "train", arcname="train")
    assert load_split(archive, "train").x.shape[0] == 6
    with pytest.raises(WeatError, match="no test or val/"):
        load_split(archive, "test")


def test_tarball_round_trips_an_image_folder(tmp_path):
    src = _write_image_folder(tmp_path / "src")
    archive = tmp_path / "data.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="./mydata")  # a leading ./ and a top folder, as tar often writes
    a, b = load_split(archive, "test"), load_split(src, "test")
    assert a.classes == b.classes and torch.equal(a.y, b.y) and torch.equal(a.x, b.x)


# ---- a small ImageFolder built here ------------------------------------------------------

COLORS = {"apple": (200, 10, 10), "grass": (10, 200, 10), "sky": (10, 10, 200)}


def _write_image_folder(root: Path, splits=("train", "test"), size=(8, 8)) -> Path:
    """root/<split>/<class>/*.png, 2 images per class; in "sky" one grayscale (mode L) and one
    RGBA image, which must come back as RGB."""
    from PIL import Image

    for split in splits:
        for cls, rgb in COLORS.items():
            d = root / split / cls
            d.mkdir(parents=True)
            if cls == "sky":
                Image.new("L", size, 77).save(d / "0.png")
                Image.new("RGBA", size, (*rgb, 128)).save(d / "1.png")
            else:
                Image.new("RGB", size, rgb).save(d / "0.png")
                Image.new("RGB", size, rgb).save(d / "1.jpg", quality=100)
        (root / split / "README.txt").write_text("not an image class")
        (root / split / "apple" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_loads(tmp_path):
    root = _write_image_folder(tmp_path / "imgs")
    s = load_split(root, "train")
    assert s.classes == ("apple", "grass", "sky")
    assert s.x.dtype == torch.uint8 and s.x.shape == (6, 3, 8, 8)
    assert s.y.tolist() == [0, 0, 1, 1, 2, 2]  # without a limit: folder order
    # every image is RGB with the colour it was written with
    px = s.x[:, :, 4, 4]  # (6, 3)
    assert px[4].tolist() == [77, 77, 77]  # grayscale → replicated to 3 channels
    assert px[5].tolist() == list(COLORS["sky"])  # RGBA → alpha dropped
    for i in (0, 1):
        assert np.abs(px[i].numpy().astype(int) - COLORS["apple"]).max() <= 3  # PNG exact, JPEG close
    assert np.abs(px[2].numpy().astype(int) - COLORS["grass"]).max() <= 3
    limited = load_split(root, "train", limit=6)  # with a limit: the class-balanced order
    assert limited.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(limited.x, s.x[[0, 2, 4, 1, 3, 5]])
    assert load_split(root, "test").x.shape == (6, 3, 8, 8)


def test_image_folder_limit_and_val_fallback(tmp_path):
    root = _write_image_folder(tmp_path / "imgs")
    (root / "test").rename(root / "val")
    s = load_split(root, "test", limit=4)
    assert s.y.tolist() == [0, 1, 2, 0] and s.x.shape == (4, 3, 8, 8)
    for bad in (0, -3):  # not "all", not "none": an error
        with pytest.raises(WeatError, match="positive number"):
            load_split(root, "test", limit=bad)


def test_image_folder_relative_to_data_root(tmp_path, monkeypatch):
    _write_image_folder(tmp_path / "root" / "mydata")
    monkeypatch.chdir(tmp_path)
    assert len(load_split("mydata", "train", root=tmp_path / "root")) == 6
    monkeypatch.setenv("WEAT_DATA_DIR", str(tmp_path / "root"))
    assert data_root() == tmp_path / "root"
    assert len(load_split("mydata", "train")) == 6


def test_image_folder_mixed_sizes_is_a_clear_error(tmp_path):
    from PIL import Image

    root = _write_image_folder(tmp_path / "imgs")
    Image.new("RGB", (16, 16)).save(root / "train" / "grass" / "big.png")
    with pytest.raises(WeatError, match="different sizes"):
        load_split(root, "train")


@pytest.mark.parametrize("limit", [None, 5])
def test_image_folder_with_empty_class_folders(limit, tmp_path):
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "train" / "dog").mkdir()
    (tmp_path / "d" / "train" / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(WeatError, match="holds no images"):
        load_split(tmp_path / "d", "train", limit=limit)


def test_image_folder_without_classes(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    with pytest.raises(WeatError, match="no class folders"):
        load_split(tmp_path / "d", "train")
    with pytest.raises(WeatError, match="no test or val/"):
        load_split(tmp_path / "d", "test")


# ---- balanced order ------------------------------------------------------------------------


def test_balanced_order_by_hand():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    assert balanced_order(y).tolist() == [0, 3, 5, 1, 4, 2]
    assert balanced_order(torch.tensor([2, 2, 0])).tolist() == [2, 0, 1]
    assert balanced_order(torch.zeros(0, dtype=torch.long)).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_balanced_order_properties(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 7, (300,), generator=g)
    y[y == 3] = 4  # a class label that never occurs must not matter
    order = balanced_order(y)
    assert sorted(order.tolist()) == list(range(300))  # a permutation
    yo = y[order]
    counts = torch.bincount(y, minlength=7)
    for n in range(1, 301):  # every prefix is as balanced as the class sizes allow
        c = torch.bincount(yo[:n], minlength=7)
        cap = torch.minimum(counts, torch.full_like(counts, int(c[counts > 0].max())))
        assert (c[counts > 0] >= cap[counts > 0] - 1).all()
    for k in y.unique():  # each class keeps its own order
        idx = order[yo == k]
        assert (idx[1:] > idx[:-1]).all()


def test_balanced_order_round_robin_reference():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (50,), generator=g)
    queues = {int(c): [i for i in range(50) if int(y[i]) == c] for c in y.unique()}
    want = []
    while any(queues.values()):  # the reference: visit the classes in order, one image each
        for c in sorted(queues):
            if queues[c]:
                want.append(queues[c].pop(0))
    assert balanced_order(y).tolist() == want


# ---- errors --------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Make every urllib request fail at once, as on a machine without network (torchvision
    downloads through urllib), so the test neither downloads CIFAR-10 in a networked CI nor
    waits on DNS."""
    import urllib.error
    import urllib.request

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_missing_cifar10_offline_is_one_clear_sentence(tmp_path, no_network):
    """No data under root and no network: a WeatError naming WEAT_DATA_DIR, not a traceback."""
    with pytest.raises(WeatError) as err:
        load_split("cifar10", "test", root=tmp_path / "none", download=False)
    _check_missing_message(str(err.value), "CIFAR10")
    with pytest.raises(WeatError) as err:
        load_split("cifar10", "test", root=tmp_path / "none")
    _check_missing_message(str(err.value), "CIFAR10")


@pytest.mark.parametrize("download", [False, True])
def test_missing_cifar10_names_a_class_folder_copy_beside_it(tmp_path, no_network, download):
    """$WEAT_DATA_DIR/cifar10/{train,test} is the layout the app lists; a command asking for the
    torchvision copy in that folder is told where the class-folder copy is and how to use it."""
    (tmp_path / "cifar10" / "test" / "cat").mkdir(parents=True)
    with pytest.raises(WeatError) as err:
        load_split("cifar10", "test", root=tmp_path, download=download)
    msg = str(err.value)
    _check_missing_message(msg, "CIFAR10")
    assert f"--dataset {tmp_path / 'cifar10'}" in msg
    with pytest.raises(WeatError) as err:  # a copy without the asked split is not offered
        load_split("cifar10", "train", root=tmp_path, download=download)
    assert "--dataset" not in str(err.value)


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("name", ["cifar100", "svhn", "tinyimagenet"])
def test_missing_datasets(name, download, tmp_path, no_network):
    with pytest.raises(WeatError) as err:
        load_split(name, "test", root=tmp_path / "data", download=download)
    _check_missing_message(str(err.value), "")


def _check_missing_message(msg: str, what: str) -> None:
    assert "WEAT_DATA_DIR" in msg and what in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.count(". ") == 0  # one sentence


def test_unknown_dataset_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeatError, match="unknown dataset 'imagenet-1k'.*cifar10"):
        load_split("imagenet-1k", "test", root=tmp_path)


def test_bad_split_name():
    with pytest.raises(ValueError):
        load_split("cifar10", "validation")


def test_unreadable_archive(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(WeatError, match="cannot read the archive"):
        load_split(bad, "test")
