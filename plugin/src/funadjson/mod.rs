//! # funadjson
//!
//! Writes the FUN-AD result of each video frame as one line of JSON
//! ([NDJSON](https://github.com/ndjson/ndjson-spec)), for filesink,
//! tcpserversink or appsink. The element reads the
//! [`FunadMeta`](crate::FunadMeta) that `funadscore` attaches and never reads
//! the pixels, so it accepts `video/x-raw` in any format and with any caps
//! features. Each input frame gives exactly one output buffer: a single line
//! ending in `\n`, with the frame's PTS and duration and the caps
//! `application/x-ndjson`. A frame without a meta still gives a line, with
//! verdict `not-scored`.
//!
//! ## Line schema (version 2)
//!
//! Fields appear in this order. `plugin/results.schema.json` is the same
//! schema as a JSON Schema (draft 2020-12), and `plugin/SCHEMA.md` explains it.
//!
//! | field | JSON type | value |
//! | --- | --- | --- |
//! | `schema_version` | integer | `2`; raised when a field changes meaning or is removed |
//! | `result_id` | string | the meta's result id, a random UUID (version 4) that funadscore created; a new one for a frame without a meta |
//! | `sequence` | integer | line number, from 0 at each start (READY→PAUSED); a flush does not reset it |
//! | `frame_sequence` | integer or null | funadscore's frame number; null without a meta |
//! | `pts_ns` | integer or null | buffer PTS in ns; null when unset |
//! | `duration_ns` | integer or null | buffer duration in ns; null when unset |
//! | `created_utc` | string | RFC 3339 UTC time at which funadscore created the result, such as `2025-01-31T08:15:02.123456789Z`; the time of writing for a frame without a meta |
//! | `processing_time_ns` | integer or null | ns that funadscore spent on the frame; null without a meta |
//! | `verdict` | string | `OK`, `NG`, `no-model` (funadscore had no model) or `not-scored` (no meta) |
//! | `reason` | string | only with `no-model` and `not-scored`: `no model loaded`, `no funad meta`, or `gap buffer` for a buffer with the `GAP` flag and no meta |
//! | `score` | number or null | image score (the maximum patch score) in [0, 1]; null unless `OK` or `NG` |
//! | `threshold` | number or null | threshold the score was compared with: `NG` when the score is above it; null unless `OK` or `NG` |
//! | `model_id` | string or null | model id (content hash of the weights); null unless `OK` or `NG` |
//! | `model_version` | integer or null | model version, raised by each retraining; null unless `OK` or `NG` |
//! | `frame_width`, `frame_height` | integer or null | size in pixels of the frame that the region boxes refer to; null without a meta |
//! | `map_width` | integer | anomaly map width in patches; 0 unless `OK` or `NG` |
//! | `map_height` | integer | anomaly map height in patches; 0 unless `OK` or `NG` |
//! | `regions` | array of objects | defect regions, highest peak first, at most 16, each `{x, y, width, height, peak_score, patch_count}` in frame pixels; empty unless `NG` |
//! | `regions_dropped` | integer | regions found beyond the 16 |
//! | `map` | array of numbers | only with `include-map=true`: `map_width × map_height` patch scores in [0, 1], row-major; empty unless `OK` or `NG` |
//! | `source_id` | string | only when the `source-id` property is set: its value |
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 filesrc location=line.avi ! decodebin ! videoconvert ! \
//!     funadscore model=model.safetensors ! funadjson source-id=camera-1 ! \
//!     filesink location=results.jsonl
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
mod line;

glib::wrapper! {
    pub struct FunadJson(ObjectSubclass<imp::FunadJson>) @extends gst::Element, gst::Object;
}

/// Registers `funadjson` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "funadjson",
        gst::Rank::NONE,
        FunadJson::static_type(),
    )
}
