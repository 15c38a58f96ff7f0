"""Draw a montage of example anomaly maps from `funad eval --json` reports.

    .venv/bin/python scripts/plot_examples.py [--kinds KINDS] [--dpi N] REPORT.json [REPORT.json...] OUT.png

One row per method of each report, one column per example that it keeps: by
default the three highest-scoring defect images, the three lowest-scoring
defect images and the three highest-scoring good images of the No-overlap
test set. `--kinds` picks other kinds, comma-separated, such as
`"typical uneven,typical crack"`: the three images of a defect type in the
middle of its score ranking. Each panel
shows the image in grey, the anomaly map on top and the ground-truth outline
in white. Run it from the folder `funad eval` ran in, because the report
stores image paths as given on its command line.

The maps are redrawn from the stored patch grids: bilinear upsampling to the
image size and a Gaussian blur of σ = 4 at the 224 px model input, scaled to
the image, as funad's own anomaly maps. The colour scale is shared within a
row (one method), from its lowest to its highest example patch score.
"""

import argparse
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


DEFAULT_KINDS = "best detection,missed defect,false alarm"


def main():
    parser = argparse.ArgumentParser(description="Montage of example anomaly maps.")
    parser.add_argument("--kinds", default=DEFAULT_KINDS,
                        help=f"comma-separated example kinds to draw (default: {DEFAULT_KINDS})")
    parser.add_argument("--dpi", type=int, default=60,
                        help="resolution of the PNG; each panel is 1.5 inches wide (default: 60)")
    parser.add_argument("paths", nargs="+", metavar="REPORT.json ... OUT.png")
    args = parser.parse_args()
    if len(args.paths) < 2:
        parser.error("give at least one REPORT.json and the OUT.png to write")
    *reports, out = args.paths
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    methods = []
    for path in reports:
        report = json.loads(pathlib.Path(path).read_text())
        if not any(m.get("examples") for m in report["methods"]):
            sys.exit(f"error: {path} stores no example maps; rerun funad eval with this version")
        for m in report["methods"]:
            picked = [e for k in kinds for e in m.get("examples", []) if e["kind"] == k]
            if picked:
                methods.append(({**m, "examples": picked}, report))
    if not methods:
        found = sorted({e["kind"] for p in reports
                        for m in json.loads(pathlib.Path(p).read_text())["methods"]
                        for e in m.get("examples", [])})
        sys.exit(f"error: no examples of kinds {kinds}; these reports hold: {', '.join(found)}")
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
    fig.savefig(out, dpi=args.dpi)
    plt.close(fig)
    # A 256-colour palette keeps the montage small enough for a repository.
    Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)


if __name__ == "__main__":
    main()
