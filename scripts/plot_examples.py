"""Draw a montage of example anomaly maps from `funad eval --json` reports.

    .venv/bin/python scripts/plot_examples.py REPORT.json [REPORT.json...] OUT.png

One row per method of each report, one column per example that it keeps: the three
highest-scoring defect images, the three lowest-scoring defect images and
the three highest-scoring good images of the No-overlap test set. Each panel
shows the image in grey, the anomaly map on top and the ground-truth outline
in white. Run it from the folder `funad eval` ran in, because the report
stores image paths as given on its command line.

The maps are redrawn from the stored patch grids: bilinear upsampling to the
image size and a Gaussian blur of σ = 4 at the 224 px model input, scaled to
the image, as funad's own anomaly maps. The colour scale is shared within a
row (one method), from its lowest to its highest example patch score.
"""

import json
import re
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

BLUR_SIGMA_AT_INPUT = 4.0


def gaussian_blur(image, sigma):
    """Separable Gaussian blur with reflected borders, kernel truncated at 4σ."""
    radius = max(1, int(round(4 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, ((0, 0), (radius, radius)), mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    padded = np.pad(rows, ((radius, radius), (0, 0)), mode="reflect")
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, padded)


def grid_shape(example):
    """Rows and columns of an example's patch grid (older reports: a square `grid`)."""
    if "rows" in example:
        return example["rows"], example["cols"]
    return example["grid"], example["grid"]


def anomaly_map(patch_scores, shape, width, height, input_size):
    small = Image.fromarray(np.asarray(patch_scores, dtype=np.float32).reshape(shape), mode="F")
    upsampled = np.asarray(small.resize((width, height), Image.BILINEAR), dtype=np.float64)
    sigma = BLUR_SIGMA_AT_INPUT * max(width, height) / input_size
    return gaussian_blur(upsampled, sigma)


def mask_of(root, test_image):
    if test_image["defect"] == "good":
        return None
    stem = pathlib.Path(test_image["path"]).stem
    path = pathlib.Path(root) / "ground_truth" / test_image["defect"] / f"{stem}_mask.png"
    if not path.is_file():
        return None
    return np.asarray(Image.open(path).convert("L")) > 127


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: plot_examples.py REPORT.json [REPORT.json...] OUT.png")
    methods = []
    for path in sys.argv[1:-1]:
        report = json.loads(pathlib.Path(path).read_text())
        kept = [(m, report) for m in report["methods"] if m.get("examples")]
        if not kept:
            sys.exit(f"error: {path} stores no example maps; rerun funad eval with this version")
        methods.extend(kept)
    columns = max(len(m["examples"]) for m, _ in methods)
    fig, axes = plt.subplots(len(methods), columns, figsize=(1.5 * columns, 1.9 * len(methods)),
                             squeeze=False)
    for row, (method, report) in enumerate(methods):
        input_size = report["config"]["features"]["input_size"]
        scores = [s for e in method["examples"] for s in e["patch_scores"]]
        low, high = min(scores), max(scores)
        for col in range(columns):
            ax = axes[row][col]
            ax.axis("off")
            if col >= len(method["examples"]):
                continue
            example = method["examples"][col]
            test_image = report["test"][example["test_index"]]
            image = np.asarray(Image.open(test_image["path"]).convert("L"))
            height, width = image.shape
            amap = anomaly_map(example["patch_scores"], grid_shape(example), width, height,
                               input_size)
            ax.imshow(image, cmap="gray")
            ax.imshow(amap, cmap="jet", alpha=0.45, vmin=low, vmax=high)
            mask = mask_of(report["config"]["root"], test_image)
            if mask is not None and mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.7)
            ax.set_title(f"{example['kind']}\n{test_image['defect']} {example['image_score']:.3g}",
                         fontsize=6)
        cfg = report["config"]
        name = method["method"].split(" (")[0]
        head = re.search(r"(\w+) head", method["method"])
        if head:
            name += f", {head.group(1).lower()} head"
        label = f"{name}\nratio {cfg['ratio']:g}, seed {cfg['seed']}"
        axes[row][0].text(-0.1, 0.5, label, fontsize=6, rotation=90, ha="right", va="center",
                          transform=axes[row][0].transAxes)
    fig.tight_layout()
    fig.savefig(sys.argv[-1], dpi=60)
    plt.close(fig)
    # A 256-colour palette keeps the montage small enough for a repository.
    Image.open(sys.argv[-1]).convert("RGB").quantize(256).save(sys.argv[-1], optimize=True)


if __name__ == "__main__":
    main()
