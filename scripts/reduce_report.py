"""Shrink `funad eval --json` reports for keeping in the repository.

    python3 scripts/reduce_report.py OUT_DIR REPORT.json [REPORT.json ...]

Writes OUT_DIR/NAME.json.gz for each report, without the example maps,
which take most of a report's size. The metrics, the per-image scores
that the ROC curves need, the per-epoch history and the test-image list stay,
so scripts/plot_accuracy.py reads the reduced reports like the full ones.
scripts/plot_examples.py needs the full reports.
"""

import gzip
import json
import pathlib
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: reduce_report.py OUT_DIR REPORT.json [REPORT.json ...]")
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:]:
        path = pathlib.Path(name)
        try:
            text = path.read_text()
        except OSError as e:
            sys.exit(f"error: cannot read {path}: {e.strerror}; check the path")
        try:
            report = json.loads(text)
            methods = report["methods"]
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"error: {path} is not a funad eval JSON report ({e}); pass the file that --json wrote")
        for m in methods:
            m.pop("examples", None)
        target = out / (path.name + ".gz")
        # A fixed mtime makes the same report give the same bytes.
        target.write_bytes(gzip.compress(json.dumps(report, separators=(",", ":")).encode(), mtime=0))
        print(f"{target}: {target.stat().st_size} bytes")


if __name__ == "__main__":
    main()
