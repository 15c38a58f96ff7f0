#!/usr/bin/python3
"""Check the funad-result bus messages of funadscore through PyGObject.

Usage: bus_messages.py MODEL JPEG...

Runs one pipeline that scores each JPEG file twice, as two frames, and reads
every funad-result message with the Python bindings of GStreamer (Debian's
python3-gst-1.0). It checks each field: types, the anomaly map read with
numpy as the message documentation shows, score against map, verdict
against threshold, result ids, times, frame size, and the defect regions
recomputed here from the map. The first frame of each file cycles through
the thresholds in FIRST_THRESHOLDS. The second uses the midpoint of the
first frame's lowest and highest patch score, so that it has patches on
both sides of the threshold whatever the model decides. funadscore must be
on GST_PLUGIN_PATH. Exits 1 when a check fails.
"""

import sys
import time
import uuid

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

import numpy  # noqa: E402

# Thresholds that the first frame of each file cycles through; negative
# selects the model's own.
FIRST_THRESHOLDS = (-1.0, 0.0, 1.0)
MAX_REGIONS = 16


class Checker:
    def __init__(self):
        self.failures = 0

    def check(self, ok, frame, what):
        if not ok:
            print(f"frame {frame}: check failed: {what}", file=sys.stderr)
            self.failures += 1


def expected_regions(values, map_width, map_height, threshold, frame_width, frame_height):
    """Return the boxes (x, y, width, height, peak, patch count) of the
    8-connected components of the patches above threshold, strongest first,
    and the number beyond MAX_REGIONS."""
    above = values > threshold
    seen = numpy.zeros(above.shape, dtype=bool)
    components = []
    for start in range(values.size):
        if not above[start] or seen[start]:
            continue
        seen[start] = True
        queue = [start]
        cells = []
        while queue:
            cell = queue.pop()
            cells.append(cell)
            row, column = divmod(cell, map_width)
            for r in range(max(row - 1, 0), min(row + 2, map_height)):
                for c in range(max(column - 1, 0), min(column + 2, map_width)):
                    neighbour = r * map_width + c
                    if above[neighbour] and not seen[neighbour]:
                        seen[neighbour] = True
                        queue.append(neighbour)
        rows = [cell // map_width for cell in cells]
        columns = [cell % map_width for cell in cells]
        peak = max(float(values[cell]) for cell in cells)
        components.append((min(rows), max(rows), min(columns), max(columns), peak, len(cells)))

    components.sort(key=lambda c: (-c[4], -c[5], c[0], c[2]))
    boxes = []
    for first_row, last_row, first_column, last_column, peak, count in components[:MAX_REGIONS]:
        x = first_column * frame_width // map_width
        right = min(-(-(last_column + 1) * frame_width // map_width), frame_width)
        y = first_row * frame_height // map_height
        bottom = min(-(-(last_row + 1) * frame_height // map_height), frame_height)
        boxes.append((x, y, max(right - x, 1), max(bottom - y, 1), peak, count))
    return boxes, max(len(components) - MAX_REGIONS, 0)


def pipeline_description(images):
    parts = [
        "concat name=join ! videoconvert ! video/x-raw,format=RGB "
        "! funadscore name=score ! fakesink name=sink"
    ]
    for image in images:
        escaped = image.replace("\\", "\\\\").replace('"', '\\"')
        for _ in range(2):
            parts.append(f'filesrc location="{escaped}" ! jpegdec ! join.')
    return " ".join(parts)


def map_values(s):
    """Return the anomaly map of a funad-result structure, read as the
    message documentation shows."""
    map_buffer = s.get_value("map")
    return numpy.frombuffer(map_buffer.extract_dup(0, map_buffer.get_size()),
                            dtype=numpy.float32)


def run(model, images):
    """Run the pipeline and return the messages, the caps size of each
    scored frame, the threshold set for each frame and the wall-clock bounds
    of the run in ns."""
    pipeline = Gst.parse_launch(pipeline_description(images))
    score = pipeline.get_by_name("score")
    score.set_property("model", model)
    thresholds = []
    sizes = []
    messages = []

    def on_input(pad, info):
        frame = len(thresholds)
        if frame % 2 == 0:
            threshold = FIRST_THRESHOLDS[(frame // 2) % len(FIRST_THRESHOLDS)]
        elif len(messages) == frame:
            values = map_values(messages[-1])
            threshold = float(values.min() + values.max()) / 2
        else:
            sys.exit(f"error: frame {frame - 1} posted no message before frame {frame}")
        thresholds.append(threshold)
        score.set_property("threshold", threshold)
        return Gst.PadProbeReturn.OK

    def on_output(pad, info):
        structure = pad.get_current_caps().get_structure(0)
        sizes.append((structure.get_value("width"), structure.get_value("height")))
        return Gst.PadProbeReturn.OK

    # funadscore posts the message of a frame from its streaming thread before
    # it takes the next frame, so a synchronous handler has it in time to set
    # the next frame's threshold.
    def on_element_message(bus, message):
        structure = message.get_structure()
        if structure is not None and structure.get_name() == "funad-result":
            messages.append(structure.copy())

    score.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_input)
    score.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_output)
    bus = pipeline.get_bus()
    bus.enable_sync_message_emission()
    bus.connect("sync-message::element", on_element_message)

    start_ns = time.time_ns()
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        sys.exit("error: the pipeline failed to start; is funadscore on GST_PLUGIN_PATH?")
    message = bus.timed_pop_filtered(120 * Gst.SECOND,
                                     Gst.MessageType.EOS | Gst.MessageType.ERROR)
    end_ns = time.time_ns()
    pipeline.set_state(Gst.State.NULL)
    if message is None:
        sys.exit("error: no EOS within 120 s")
    if message.type == Gst.MessageType.ERROR:
        error, debug = message.parse_error()
        sys.exit(f"error: pipeline error: {error.message} ({debug})")
    return messages, sizes, thresholds, (start_ns, end_ns)


def check_message(checker, frame, s, size, requested, bounds):
    """Check one funad-result structure and return its result id and regions."""
    c = lambda ok, what: checker.check(ok, frame, what)  # noqa: E731

    ok, sequence = s.get_uint64("sequence")
    c(ok and sequence == frame, f"sequence {sequence} is the frame number")
    for name in ("pts", "duration", "running-time", "model-version", "creation-time",
                 "processing-time"):
        c(s.get_uint64(name)[0], f"{name} is a guint64")
    for name in ("map-width", "map-height", "frame-width", "frame-height", "regions-dropped"):
        c(s.get_uint(name)[0], f"{name} is a guint")

    values = map_values(s)
    map_width, map_height = s.get_value("map-width"), s.get_value("map-height")
    c(map_width > 0 and map_height > 0, f"map size {map_width} x {map_height} is positive")
    c(values.size == map_width * map_height,
      f"map has {values.size} values for {map_width} x {map_height}")
    c(bool(numpy.all((values >= 0) & (values <= 1))), "map values are in [0, 1]")

    score, threshold, verdict = s.get_value("score"), s.get_value("threshold"), s.get_value("verdict")
    c(values.size > 0 and numpy.float32(score) == values.max(),
      f"score {score} is the map maximum {values.max() if values.size else None}")
    if requested >= 0:
        c(numpy.float32(threshold) == numpy.float32(requested),
          f"threshold {threshold} is the one set, {requested}")
    c(0 <= threshold <= 1, f"threshold {threshold} is in [0, 1]")
    c(verdict == ("NG" if score > threshold else "OK"),
      f"verdict {verdict} for score {score} and threshold {threshold}")
    c(s.get_value("model-id") != "", "model-id is set")
    c(s.get_value("model-version") >= 1, "model-version is at least 1")

    result_id = s.get_value("result-id")
    try:
        c(uuid.UUID(result_id).version == 4 and str(uuid.UUID(result_id)) == result_id,
          f"result-id {result_id} is a version 4 UUID in canonical form")
    except ValueError:
        c(False, f"result-id {result_id!r} is a UUID")
    creation = s.get_value("creation-time")
    c(bounds[0] <= creation <= bounds[1], f"creation-time {creation} lies within the run")
    processing = s.get_value("processing-time")
    c(0 < processing <= bounds[1] - bounds[0],
      f"processing-time {processing} ns is positive and within the run")

    frame_width, frame_height = s.get_value("frame-width"), s.get_value("frame-height")
    c((frame_width, frame_height) == size,
      f"frame size {frame_width} x {frame_height} is the caps size {size}")

    regions = s.get_value("regions")
    c(isinstance(regions, Gst.ValueArray), f"regions is a Gst.ValueArray, not {type(regions)}")
    got = []
    for region in regions:
        c(region.get_name() == "funad-region", f"region structure {region.get_name()}")
        got.append(tuple(region.get_value(name) for name in
                         ("x", "y", "width", "height", "peak-score", "patch-count")))
    for x, y, width, height, peak, _ in got:
        c(x + width <= frame_width and y + height <= frame_height,
          f"region {x},{y} {width}x{height} lies inside {frame_width}x{frame_height}")
        c(peak > threshold, f"region peak {peak} is above threshold {threshold}")
    c(bool(got) == (verdict == "NG"), f"{len(got)} regions with verdict {verdict}")

    boxes, dropped = expected_regions(values, map_width, map_height, threshold,
                                      frame_width, frame_height)
    c(got == boxes, f"regions {got} are the components of the map {boxes}")
    c(s.get_value("regions-dropped") == dropped,
      f"regions-dropped {s.get_value('regions-dropped')} is {dropped}")
    return result_id, got


def main():
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} MODEL JPEG...")
    Gst.init(None)
    if Gst.ElementFactory.find("funadscore") is None:
        sys.exit("error: funadscore not found; set GST_PLUGIN_PATH to the folder of libgstfunad.so")
    model, images = sys.argv[1], sys.argv[2:]
    messages, sizes, thresholds, bounds = run(model, images)

    checker = Checker()
    if len(messages) != 2 * len(images) or len(sizes) != 2 * len(images):
        sys.exit(f"error: {len(messages)} messages and {len(sizes)} frames for "
                 f"{len(images)} images, expected {2 * len(images)}")
    ids = set()
    for frame, (s, size, requested) in enumerate(zip(messages, sizes, thresholds)):
        result_id, regions = check_message(checker, frame, s, size, requested, bounds)
        checker.check(result_id not in ids, frame, f"result-id {result_id} is unique")
        ids.add(result_id)
        print(f"frame {frame}: {s.get_value('verdict')} score {s.get_value('score'):.4f} "
              f"threshold {s.get_value('threshold'):.4f} regions {len(regions)}")
        if frame % 2 == 1:
            # The second frame of a file: the same map, cut at its midpoint.
            values = map_values(s)
            checker.check(numpy.array_equal(values, map_values(messages[frame - 1])), frame,
                          "the same image gives the same map")
            covered = sum(region[5] for region in regions)
            checker.check(0 < covered < values.size, frame,
                          f"regions hold {covered} of {values.size} patches at the midpoint")
    if checker.failures:
        sys.exit(f"{checker.failures} checks failed")
    print(f"all checks passed on {len(messages)} frames")


if __name__ == "__main__":
    main()
