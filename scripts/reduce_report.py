"""Shrink `funad eval --json` reports for keeping in the repository.

    python3 scripts/reduce_report.py OUT_DIR REPORT.json [REPORT.json ...]

Writes OUT_DIR/NAME.json.gz for each report, without the example maps,
which take most of a report's size. The metrics, the per-image scores
that the ROC curves need, the per-epoch history and the test-image list stay,
so scripts/plot_accuracy.py reads the reduced reports like the full ones.
scripts/plot_examples.py needs the full reports. A report that is already
gzipped is read as well.
"""

import gzip
import json
import pathlib
import sys
import zlib


def fail(message):
    sys.exit(f"error: {message}")


def read_report(path):
    """Return the report at `path`, or exit with an error that names it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}; check the path")
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        report = json.loads(data.decode("utf-8"))
    except (OSError, EOFError, zlib.error, ValueError) as e:
        fail(f"{path} is not a funad eval JSON report ({e}); pass the file that --json wrote")
    methods = report.get("methods") if isinstance(report, dict) else None
    if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods):
        fail(f"{path} has no list of method results under \"methods\"; pass the file that --json wrote")
    return report


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: reduce_report.py OUT_DIR REPORT.json [REPORT.json ...]")
    out = pathlib.Path(sys.argv[1])
    paths = [pathlib.Path(name) for name in sys.argv[2:]]

    # Reports of different folders may share a name, and one would overwrite the other.
    targets = {}
    for path in paths:
        name = path.name if path.name.endswith(".gz") else path.name + ".gz"
        if name in targets:
            fail(f"{targets[name]} and {path} would both be written as {out / name}; rename one")
        targets[name] = path

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot create the output folder {out}: {e.strerror}; pass a writable folder")
    for name, path in targets.items():
        report = read_report(path)
        for m in report["methods"]:
            m.pop("examples", None)
        target = out / name
        # A fixed mtime makes the same report give the same bytes.
        data = gzip.compress(json.dumps(report, separators=(",", ":")).encode(), mtime=0)
        try:
            target.write_bytes(data)
        except OSError as e:
            fail(f"cannot write {target}: {e.strerror}; pass a writable folder")
        print(f"{target}: {target.stat().st_size} bytes")


if __name__ == "__main__":
    main()
