"""Build the demo's unlabeled training set and held-out test set from PyPI's elpv-dataset.

Usage: elpv_prepare.py WHEEL OUT_DIR

ELPV (Buerhop-Lutz, Deitsch et al.): 300x300 grey electroluminescence images
of solar cells, each with a defect probability (0, 1/3, 2/3, 1). Licence:
CC BY-NC-SA 4.0, so the images stay outside the repository. The demo uses
monocrystalline cells: training gets 300 normal and 30 defective cells (10%),
mixed and without labels; the test set has 150 other normal cells and 75
other cells with defect probability 1. Test labels go to OUT_DIR/test_labels.csv
in frame order, for the AUROC at the end; training never reads them.
"""

import csv
import os
import random
import sys
import zipfile

TRAIN_NORMAL, TRAIN_DEFECT, TEST_NORMAL, TEST_DEFECT = 300, 30, 150, 75


def main(wheel: str, out: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        rows = [line.split() for line in z.read("elpv_dataset/data/labels.csv").decode().splitlines() if line.strip()]
        mono = [(path, float(p)) for path, p, kind in rows if kind == "mono"]
        normal = sorted(path for path, p in mono if p == 0.0)
        defect = sorted(path for path, p in mono if p == 1.0)
        rng = random.Random(0)
        rng.shuffle(normal)
        rng.shuffle(defect)
        train = normal[:TRAIN_NORMAL] + defect[:TRAIN_DEFECT]
        test = [(p, 0) for p in normal[TRAIN_NORMAL : TRAIN_NORMAL + TEST_NORMAL]]
        test += [(p, 1) for p in defect[TRAIN_DEFECT : TRAIN_DEFECT + TEST_DEFECT]]
        rng.shuffle(train)
        rng.shuffle(test)
        os.makedirs(os.path.join(out, "train"), exist_ok=True)
        os.makedirs(os.path.join(out, "test"), exist_ok=True)
        for i, path in enumerate(train):
            with open(os.path.join(out, "train", f"{i:04d}.png"), "wb") as f:
                f.write(z.read("elpv_dataset/data/" + path))
        for i, (path, _) in enumerate(test):
            with open(os.path.join(out, "test", f"{i:04d}.png"), "wb") as f:
                f.write(z.read("elpv_dataset/data/" + path))
    with open(os.path.join(out, "test_labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "source", "defective"])
        for i, (path, label) in enumerate(test):
            w.writerow([i, path, label])
    print(f"{len(train)} unlabeled training images, {len(test)} test images in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
