//! The `funad-result` element message that `funadscore` posts for each frame.
//!
//! | field | GType | value |
//! | --- | --- | --- |
//! | `score` | `gfloat` | image score in [0, 1]; -1 when not scored |
//! | `verdict` | `gchararray` | `OK`, `NG` or `no-model` |
//! | `threshold` | `gfloat` | threshold the score was compared with; -1 when not scored |
//! | `model-id` | `gchararray` | model id; empty when not scored |
//! | `model-version` | `guint64` | model version; 0 when not scored |
//! | `sequence` | `guint64` | frame number, from 0 at each start of the element |
//! | `pts` | `guint64` | buffer PTS in ns; `GST_CLOCK_TIME_NONE` (2^64 - 1) when unset |
//! | `duration` | `guint64` | buffer duration in ns; `GST_CLOCK_TIME_NONE` when unset |
//! | `running-time` | `guint64` | running time of the PTS in ns; `GST_CLOCK_TIME_NONE` when unknown |
//! | `map-width` | `guint` | anomaly map width in patches; 0 when not scored |
//! | `map-height` | `guint` | anomaly map height in patches; 0 when not scored |
//! | `map` | `GstBuffer` | `map-width × map-height` patch scores, row-major, 32-bit floats in host byte order (little-endian on x86-64 and ARM64); empty when not scored |
//!
//! In Python (PyGObject), with `map = s.get_value("map")` for a structure `s`,
//! `numpy.frombuffer(map.extract_dup(0, map.get_size()), dtype=numpy.float32)`
//! gives the values. NOTE: the tests read the fields from Rust only; the
//! Python lines are unchecked, because the test machine has no PyGObject.

use gst::glib;

/// Name of the message structure.
pub const RESULT_STRUCTURE_NAME: &str = "funad-result";

/// Buffer timing sent with a result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameTiming {
    pub pts: Option<gst::ClockTime>,
    pub duration: Option<gst::ClockTime>,
    pub running_time: Option<gst::ClockTime>,
}

/// Builds the `funad-result` structure of one frame.
pub fn result_structure(result: &crate::FunadResult, timing: &FrameTiming) -> gst::Structure {
    let bytes: Vec<u8> = result.map.iter().flat_map(|v| v.to_ne_bytes()).collect();
    gst::Structure::builder(RESULT_STRUCTURE_NAME)
        .field("score", result.score)
        .field("verdict", result.verdict.as_str())
        .field("threshold", result.threshold)
        .field("model-id", result.model_id.as_str())
        .field("model-version", result.model_version)
        .field("sequence", result.sequence)
        .field("pts", timing.pts)
        .field("duration", timing.duration)
        .field("running-time", timing.running_time)
        .field("map-width", result.map_width)
        .field("map-height", result.map_height)
        .field("map", gst::Buffer::from_mut_slice(bytes))
        .build()
}

/// Reads a `funad-result` structure back into a result and its timing.
pub fn parse_result_structure(
    s: &gst::StructureRef,
) -> Result<(crate::FunadResult, FrameTiming), glib::BoolError> {
    if s.name() != RESULT_STRUCTURE_NAME {
        return Err(glib::bool_error!(
            "structure `{}` is not a `{RESULT_STRUCTURE_NAME}` message",
            s.name()
        ));
    }
    macro_rules! field {
        ($name:literal) => {
            s.get($name).map_err(|e| glib::bool_error!("{e}"))?
        };
    }

    let verdict_name: &str = field!("verdict");
    let verdict = crate::FunadVerdict::from_str_name(verdict_name)
        .ok_or_else(|| glib::bool_error!("verdict `{verdict_name}` is invalid"))?;

    let map_buffer: gst::Buffer = field!("map");
    let map_bytes = map_buffer
        .map_readable()
        .map_err(|_| glib::bool_error!("map buffer is not readable"))?;
    let map: Vec<f32> = map_bytes
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();

    let result = crate::FunadResult {
        score: field!("score"),
        verdict,
        threshold: field!("threshold"),
        model_id: field!("model-id"),
        model_version: field!("model-version"),
        sequence: field!("sequence"),
        map_width: field!("map-width"),
        map_height: field!("map-height"),
        map,
    };
    let timing = FrameTiming {
        pts: field!("pts"),
        duration: field!("duration"),
        running_time: field!("running-time"),
    };
    Ok((result, timing))
}
