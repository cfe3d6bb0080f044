"""A small archive of the first test images, for a device-tool call that carries little.

    python scripts/subset_archive.py ../shared/data/cifar10-jpeg.tar.gz .data/cifar10-test1000.tar.gz --per-class 100

The device tool sends at most 64 MiB, and two shipped PreActResNet-18 (22 MB each) leave no room for
the whole CIFAR-10 copy (19.6 MB). AutoAttack is measured on the first 1,000 test images of the
class-balanced order (`weat_core.data.balanced_order`: the first image of each class, then the
second of each, ...), which are the first 100 of each class in name order. This writes exactly those
files, bytes unchanged, as `test/<class>/<file>` into a new .tar.gz (about 1 MB for 1,000 JPEGs),
so that `eval --dataset DEST --n 1000` attacks the same images, in the same order, as on the whole
archive; it checks that before it returns. The source is a class-folder archive or folder (the
layout `weat_core.data` reads); only its test split is copied.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from weat_core.data import IMG_SUFFIXES, load_split  # noqa: E402


def test_files(src: Path) -> dict[str, list[tuple[str, bytes]]]:
    """{class: [(file name, bytes), ...]} of the test split, each class in name order."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    if src.is_dir():
        d = next((src / s for s in ("test", "val") if (src / s).is_dir()), None)
        if d is None:
            raise SystemExit(f"{src} has no test/ or val/ folder of class folders")
        for c in sorted(p.name for p in d.iterdir() if p.is_dir()):
            fs = sorted(f for f in (d / c).rglob("*") if f.suffix.lower() in IMG_SUFFIXES)
            out[c] = [(f.relative_to(d / c).as_posix(), f.read_bytes()) for f in fs]
        return out
    with tarfile.open(src) as tar:
        ms = []
        for m in tar.getmembers():
            parts = m.name.strip("./").split("/")
            if m.isfile() and len(parts) >= 3 and parts[-3] in ("test", "val") \
                    and Path(parts[-1]).suffix.lower() in IMG_SUFFIXES:
                ms.append((m.name, parts[-2], parts[-1], tar.extractfile(m).read()))
    for _, c, f, data in sorted(ms):  # the loader's order: by the member's whole name
        out.setdefault(c, []).append((f, data))
    return out


def write_subset(src: Path, dest: Path, per_class: int) -> int:
    """Write the first `per_class` test images of each class of `src` into the archive `dest`;
    returns the number of images written."""
    files = test_files(src)
    if not files:
        raise SystemExit(f"{src} holds no test images")
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(dest, "w:gz") as tar:
        for c in sorted(files):
            for f, data in files[c][:per_class]:
                info = tarfile.TarInfo(f"test/{c}/{f}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                n += 1
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="a class-folder archive (.tar.gz) or folder with a test/ split")
    p.add_argument("dest", type=Path, help="the archive to write (.tar.gz)")
    p.add_argument("--per-class", type=int, default=100, help="images per class (default 100: 1,000 for CIFAR-10)")
    args = p.parse_args(argv)
    if args.per_class < 1:
        p.error("--per-class takes a whole number, 1 or more")
    n = write_subset(args.src, args.dest, args.per_class)
    # the same images, in the same order, as the first n of the whole split
    whole, part = load_split(str(args.src), "test", limit=n), load_split(str(args.dest), "test", limit=n)
    if whole.classes != part.classes or not torch.equal(whole.x, part.x) or not torch.equal(whole.y, part.y):
        raise SystemExit(f"{args.dest} does not hold the first {n} test images of {args.src} in their order")
    print(f"wrote {args.dest}: the first {n} test images of {args.src} "
          f"({args.dest.stat().st_size / 2**20:.1f} MiB), checked against it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
