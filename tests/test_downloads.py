"""The real download paths of `weat_core.data`, exercised against a local HTTP server.

There is no network in CI, so each test builds a small archive in the dataset's own published
format (CIFAR-10's pickled batches, SVHN's .mat files, Tiny-ImageNet's zip), serves it from
127.0.0.1, and points the downloader's URL (and, for torchvision, its MD5 checksums) at it.
Everything after that is the code a user runs online: torchvision's download, checksum and
extraction, then our conversion to an `ImageSet`."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from weat_core import WeatError
from weat_core.data import CIFAR10_CLASSES, load_split


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # a client that hangs up mid-file (a test's download cut short) is expected here;
        # socketserver would print its traceback into the test run's output
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www over HTTP on a free local port; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None  # keep pytest output clean
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_cifar10_downloads_checks_and_loads(server, tmp_path, monkeypatch):
    """CIFAR-10 as torchvision publishes it: cifar-10-python.tar.gz holding pickled batches."""
    from torchvision.datasets import CIFAR10

    www, url = server
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {n: (rng.integers(0, 256, (4, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, 4)])
               for n in names}
    members = {n: pickle.dumps({"data": d, "labels": y}) for n, (d, y) in batches.items()}
    members["batches.meta"] = pickle.dumps({"label_names": list(CIFAR10_CLASSES)})
    tgz = www / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for n, data in members.items():
            _add_bytes(tar, f"cifar-10-batches-py/{n}", data)
    md5 = {n: hashlib.md5(b).hexdigest() for n, b in members.items()}
    monkeypatch.setattr(CIFAR10, "url", f"{url}/cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(tgz))
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n in names[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})

    root = tmp_path / "data"
    test = load_split("cifar10", "test", root=root)  # download=True is the default
    assert (root / "cifar-10-python.tar.gz").is_file() and (root / "cifar-10-batches-py").is_dir()
    data, labels = batches["test_batch"]
    assert torch.equal(test.x, torch.from_numpy(data.reshape(4, 3, 32, 32)))
    assert test.y.tolist() == labels and test.classes == CIFAR10_CLASSES
    train = load_split("cifar10", "train", root=root, download=False)  # now on disk: no second download
    assert train.x.shape == (20, 3, 32, 32)
    assert torch.equal(train.x[:4], torch.from_numpy(batches["data_batch_1"][0].reshape(4, 3, 32, 32)))


def test_cifar10_corrupt_download_is_a_clear_error(server, tmp_path, monkeypatch):
    """A download whose checksum does not match: torchvision refuses it, we say so in one sentence."""
    from torchvision.datasets import CIFAR10

    www, url = server
    (www / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    monkeypatch.setattr(CIFAR10, "url", f"{url}/cifar-10-python.tar.gz")
    with pytest.raises(WeatError) as err:
        load_split("cifar10", "test", root=tmp_path / "data")
    msg = str(err.value)
    assert "CIFAR10" in msg and "WEAT_DATA_DIR" in msg and "\n" not in msg


def test_svhn_downloads_and_maps_label_10_to_0(server, tmp_path, monkeypatch):
    """SVHN as published: test_32x32.mat with X (32, 32, 3, N) and y (N, 1), digit 0 stored as 10."""
    import scipy.io
    from torchvision.datasets import SVHN

    www, url = server
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [10], [9]], dtype=np.uint8)
    mat = www / "test_32x32.mat"
    scipy.io.savemat(mat, {"X": X, "y": y})
    monkeypatch.setitem(SVHN.split_list, "test", [f"{url}/test_32x32.mat", "test_32x32.mat", _md5(mat)])

    s = load_split("svhn", "test", root=tmp_path / "data")
    assert s.y.tolist() == [0, 1, 2, 3, 0, 9]
    assert torch.equal(s.x, torch.from_numpy(X).permute(3, 2, 0, 1))  # (N, C, H, W)


def test_tinyimagenet_downloads_unzips_and_reads_val_labels(server, tmp_path, monkeypatch):
    """Tiny-ImageNet's zip layout: train/<wnid>/images/*.JPEG, and a flat val/images folder whose
    labels live in val/val_annotations.txt."""
    from PIL import Image

    import weat_core.data as data

    www, url = server
    wnids = ["n01443537", "n01629819"]
    rng = np.random.default_rng(2)

    def jpeg() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
        return buf.getvalue()

    with zipfile.ZipFile(www / "tiny-imagenet-200.zip", "w") as z:
        for w in wnids:
            for i in range(3):
                z.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG", jpeg())
        val_labels = ["n01629819", "n01443537", "n01629819"]
        for i, w in enumerate(val_labels):
            z.writestr(f"tiny-imagenet-200/val/images/val_{i}.JPEG", jpeg())
        z.writestr("tiny-imagenet-200/val/val_annotations.txt",
                   "".join(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63\n" for i, w in enumerate(val_labels)))
    monkeypatch.setattr(data, "TINY_URL", f"{url}/tiny-imagenet-200.zip")

    root = tmp_path / "data"
    val = load_split("tinyimagenet", "test", root=root)
    assert val.x.shape == (3, 3, 64, 64) and val.classes == tuple(wnids)
    assert val.y.tolist() == [1, 0, 1]
    train = load_split("tinyimagenet", "train", root=root, download=False)
    assert train.x.shape == (6, 3, 64, 64) and sorted(train.y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_tinyimagenet_server_error_is_a_clear_error(server, tmp_path, monkeypatch):
    import weat_core.data as data

    _, url = server
    monkeypatch.setattr(data, "TINY_URL", f"{url}/missing.zip")  # the server answers 404
    with pytest.raises(WeatError) as err:
        load_split("tinyimagenet", "test", root=tmp_path / "data")
    assert "Tiny-ImageNet" in str(err.value) and "\n" not in str(err.value)
