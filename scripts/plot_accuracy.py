"""Aggregate `funad eval --json` reports and draw the accuracy plots.

    .venv/bin/python scripts/plot_accuracy.py REPORT_DIR OUT_DIR

Reads every *.json and *.json.gz report in REPORT_DIR, groups the methods by kind and
contamination ratio, and writes to OUT_DIR:

- auroc_vs_ratio.png: image AUROC, pixel AUROC and AUPRO against the ratio,
  No overlap and Overlap, mean over seeds with error bars of one standard
  deviation (sample, n - 1) where there are two seeds or more;
- roc_at_10pct.png: image-level ROC curves of each method at ratio 0.1,
  No overlap, the first seed found;
- it also prints a Markdown table of the same means and spreads.

The image and pixel AUROC panels of the No-overlap row also mark the values
that the FUN-AD paper reports on MTD at 10% (black star and plus).

Needs matplotlib (scripts/setup.sh installs a pinned version into .venv).
"""

import collections
import gzip
import json
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METRICS = [
    ("image_auroc", "image AUROC"),
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "AUPRO (FPR ≤ 0.3)"),
]
LABELS = {
    "knn": "kNN, 40k random patches",
    "patchcore": "PatchCore-style coreset",
    "patchcore, reweighted": "PatchCore-style coreset, reweighted image score",
    "softpatch": "SoftPatch-style LOF + coreset",
    "funad": "FUN-AD",
}


# Reported in the FUN-AD paper (Im, Son and Hong, 2025, supplementary Table 1)
# for MTD at 10%, No overlap, as (image AUROC, pixel AUROC). Its other MTD
# columns are at ratios that its extracted text does not name, so only 10% is drawn.
PAPER_AT_10PCT = {
    "paper: FUN-AD (ViT-B/8, 1500 epochs, test-label checkpoint)": (0.8512, 0.9352),
    "paper: SoftPatch": (0.8361, 0.8752),
}


def load_reports(folder):
    """Return (ratio, seed, method kind, epochs, method result, report) rows."""
    rows = []
    folder = pathlib.Path(folder)
    paths = sorted([*folder.glob("*.json"), *folder.glob("*.json.gz")])
    names = {p.name for p in paths}
    for path in paths:
        if path.name + ".gz" in names:
            sys.exit(f"error: {path} and {path}.gz are one run twice; remove one of them")
    for path in paths:
        try:
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            report = json.loads(data)
        except (OSError, EOFError, ValueError) as e:
            sys.exit(f"error: cannot read the report {path} ({e}); remove or rewrite it")
        cfg = report["config"]
        for m in report["methods"]:
            epochs = cfg["train"]["epochs"] if m["kind"] == "funad" else None
            kind = m["kind"]
            if kind == "patchcore" and "reweighted" in m["method"]:
                kind = "patchcore, reweighted"
            elif "100% of images" in m["method"]:
                # Every training image in the bank, on the same random draw:
                # the bank head without its ranking.
                kind = "funad:bank, no ranking, same draw"
            elif "% of images" in m["method"]:
                # Other bank-share comparison rows exist at one ratio only.
                continue
            elif kind == "funad":
                kind = f"funad:{funad_head(m, cfg)}"
                if "Bank head" in m["method"] or kind == "funad:bank":
                    ranking = cfg["train"].get("score_bank_ranking", "localnet")
                    kind += f", {ranking} ranking"
            rows.append((cfg["ratio"], cfg["seed"], kind, epochs, m, report))
    if not rows:
        sys.exit(f"error: no funad eval JSON reports in {folder}")
    return rows


def funad_head(method, cfg):
    """Return the score head of a FUN-AD row: named in the row, else the run's default."""
    for head in ("Discriminator", "Blend", "Bank"):
        if f"{head} head" in method["method"]:
            return head.lower()
    # Reports written before score heads existed scored with the discriminator.
    return cfg["train"].get("score_head", "discriminator")


def series_name(kind, epochs):
    if kind.startswith("funad:"):
        head, _, extra = kind.split(":", 1)[1].partition(", ")
        extra = f", {extra}" if extra else ""
        return f"FUN-AD, {head} head{extra} ({epochs} epochs)"
    return LABELS.get(kind, kind)


def mean_and_spread(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan, 0
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return float(np.mean(values)), spread, len(values)


def aggregate(rows):
    """{series: {ratio: {field: [values over seeds]}}}."""
    table = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
    for ratio, _seed, kind, epochs, m, _report in rows:
        cell = table[series_name(kind, epochs)][ratio]
        for field in ("image_auroc", "pixel_auroc", "aupro"):
            cell[field].append(m[field])
            cell["overlap_" + field].append(m["overlap_" + field])
        cell["fit_seconds"].append(m["fit_seconds"])
    return table


def plot_vs_ratio(table, out):
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), sharex=True)
    for row, prefix, setting in ((0, "", "No overlap"), (1, "overlap_", "Overlap")):
        for col, (field, title) in enumerate(METRICS):
            ax = axes[row][col]
            for name, by_ratio in sorted(table.items()):
                ratios = sorted(by_ratio)
                stats = [mean_and_spread(by_ratio[r][prefix + field]) for r in ratios]
                x = [100 * r for r in ratios]
                means = [s[0] for s in stats]
                spreads = [0 if math.isnan(s[1]) else s[1] for s in stats]
                ax.errorbar(x, means, yerr=spreads, marker="o", ms=3, capsize=3, label=name)
            if row == 0 and col < 2:
                for (name, values), marker in zip(PAPER_AT_10PCT.items(), "*P"):
                    ax.plot([10], [values[col]], marker=marker, ms=9, ls="none", color="black",
                            label=name)
            ax.set_title(f"{title}, {setting}", fontsize=10)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("anomaly-to-normal ratio (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "auroc_vs_ratio.png", dpi=80)
    plt.close(fig)


def roc_curve(scores, labels):
    """FPR and TPR at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s = np.asarray(scores, dtype=np.float64)[order]
    y = np.asarray(labels, dtype=bool)[order]
    tps = np.cumsum(y)
    fps = np.cumsum(~y)
    last_of_group = np.r_[np.diff(s) != 0, True]
    tpr = np.r_[0, tps[last_of_group] / max(y.sum(), 1)]
    fpr = np.r_[0, fps[last_of_group] / max((~y).sum(), 1)]
    return fpr, tpr


def plot_roc(rows, out, ratio=0.1):
    at = [r for r in rows if abs(r[0] - ratio) < 1e-9]
    if not at:
        print(f"no reports at ratio {ratio}; ROC plot skipped", file=sys.stderr)
        return
    seed = min(r[1] for r in at)
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for _ratio, _seed, kind, epochs, m, report in (r for r in at if r[1] == seed):
        labels = [t["defect"] != "good" for t in report["test"]]
        fpr, tpr = roc_curve(m["image_scores"], labels)
        ax.plot(fpr, tpr, label=f"{series_name(kind, epochs)} ({m['image_auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"image ROC, ratio {100 * ratio:g}%, No overlap, seed {seed}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "roc_at_10pct.png", dpi=80)
    plt.close(fig)


def format_cell(values):
    mean, spread, n = mean_and_spread(values)
    if n == 0:
        return "–"
    if n == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {spread:.3f}"


def print_table(table):
    header = ["method", "ratio", "seeds", "image AUROC", "pixel AUROC", "AUPRO",
              "image AUROC, overlap", "pixel AUROC, overlap", "AUPRO, overlap", "fit s"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for name, by_ratio in sorted(table.items()):
        for ratio in sorted(by_ratio):
            cell = by_ratio[ratio]
            fields = ["image_auroc", "pixel_auroc", "aupro",
                      "overlap_image_auroc", "overlap_pixel_auroc", "overlap_aupro"]
            fit = mean_and_spread(cell["fit_seconds"])[0]
            line = [name, f"{100 * ratio:g}%", str(len(cell["image_auroc"]))]
            line += [format_cell(cell[f]) for f in fields]
            line.append(f"{fit:.0f}")
            print("| " + " | ".join(line) + " |")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_accuracy.py REPORT_DIR OUT_DIR")
    rows = load_reports(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate(rows)
    plot_vs_ratio(table, out)
    plot_roc(rows, out)
    print_table(table)


if __name__ == "__main__":
    main()
