"""Image AUROC of funadjson result lines against held-out labels.

Usage: results_auroc.py RESULTS.jsonl LABELS.csv

LABELS.csv has columns frame, source, defective (0 or 1); frame is the
sequence number of the result line. Prints the AUROC and the verdict counts.
"""

import csv
import json
import sys


def auroc(scores, labels):
    """Mann-Whitney AUROC; tied scores count one half."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    if not pos or not neg:
        raise SystemExit("error: AUROC needs both normal and defective frames")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main(results_path: str, labels_path: str) -> None:
    with open(labels_path) as f:
        labels = {int(r["frame"]): int(r["defective"]) for r in csv.DictReader(f)}
    lines = [json.loads(line) for line in open(results_path) if line.strip()]
    if len(lines) != len(labels):
        raise SystemExit(f"error: {results_path} has {len(lines)} results for {len(labels)} labelled frames")
    scores = [line["score"] for line in lines]
    y = [labels[line["sequence"]] for line in lines]
    ng = [line["verdict"] == "NG" for line in lines]
    tp = sum(1 for a, b in zip(ng, y) if a and b)
    fp = sum(1 for a, b in zip(ng, y) if a and not b)
    print(f"image AUROC {auroc(scores, y):.4f} on {len(y)} frames ({sum(y)} defective)")
    print(f"NG verdicts at the model's label-free threshold: {tp} of {sum(y)} defective, {fp} of {len(y) - sum(y)} normal")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
