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
//! | `result-id` | `gchararray` | result id: a random UUID (version 4), also in the meta and the JSON line |
//! | `creation-time` | `guint64` | UTC time at which funadscore created the result, in ns since the Unix epoch |
//! | `processing-time` | `guint64` | ns that funadscore spent on the frame, from entering its transform to the result |
//! | `frame-width` | `guint` | width in pixels of the frame that the region boxes refer to |
//! | `frame-height` | `guint` | height in pixels of the frame that the region boxes refer to |
//! | `regions` | `GstValueArray` of `GstStructure` | defect regions, strongest first, each a `funad-region` structure with `x`, `y`, `width`, `height` (`guint`, pixels), `peak-score` (`gfloat`) and `patch-count` (`guint`); empty unless NG |
//! | `regions-dropped` | `guint` | regions found beyond the maximum of 16 and left out |
//!
//! In Python (PyGObject), with `map = s.get_value("map")` for a structure `s`,
//! `numpy.frombuffer(map.extract_dup(0, map.get_size()), dtype=numpy.float32)`
//! gives the values, and `s.get_value("regions")` is a `Gst.ValueArray` of
//! `Gst.Structure`. `plugin/tests/python/bus_messages.py` reads every field
//! this way.

use gst::glib;
use gst::prelude::*;

use crate::regions::FunadRegion;

/// Name of the message structure.
pub const RESULT_STRUCTURE_NAME: &str = "funad-result";

/// Name of the structure of one region in the `regions` array.
pub const REGION_STRUCTURE_NAME: &str = "funad-region";

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
        .field("result-id", result.result_id.hyphenated().to_string())
        .field("creation-time", result.creation_time_ns)
        .field("processing-time", result.processing_time_ns)
        .field("frame-width", result.frame_width)
        .field("frame-height", result.frame_height)
        .field("regions", regions_array(&result.regions))
        .field("regions-dropped", result.regions_dropped)
        .build()
}

fn regions_array(regions: &[FunadRegion]) -> gst::Array {
    gst::Array::from_values(regions.iter().map(|r| {
        gst::Structure::builder(REGION_STRUCTURE_NAME)
            .field("x", r.x)
            .field("y", r.y)
            .field("width", r.width)
            .field("height", r.height)
            .field("peak-score", r.peak_score)
            .field("patch-count", r.patch_count)
            .build()
            .to_send_value()
    }))
}

fn parse_region(value: &glib::SendValue) -> Result<FunadRegion, glib::BoolError> {
    let s = value
        .get::<gst::Structure>()
        .map_err(|e| glib::bool_error!("region is not a structure: {e}"))?;
    if s.name() != REGION_STRUCTURE_NAME {
        return Err(glib::bool_error!(
            "region structure `{}` is not a `{REGION_STRUCTURE_NAME}`",
            s.name()
        ));
    }
    let field = |name: &str| -> Result<u32, glib::BoolError> {
        s.get(name).map_err(|e| glib::bool_error!("region: {e}"))
    };
    Ok(FunadRegion {
        x: field("x")?,
        y: field("y")?,
        width: field("width")?,
        height: field("height")?,
        peak_score: s
            .get("peak-score")
            .map_err(|e| glib::bool_error!("region: {e}"))?,
        patch_count: field("patch-count")?,
    })
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

    let result_id_text: &str = field!("result-id");
    let result_id = uuid::Uuid::parse_str(result_id_text)
        .map_err(|e| glib::bool_error!("result-id `{result_id_text}` is not a UUID: {e}"))?;
    let regions_array: gst::Array = field!("regions");
    let regions = regions_array
        .iter()
        .map(parse_region)
        .collect::<Result<Vec<_>, _>>()?;

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
        result_id,
        creation_time_ns: field!("creation-time"),
        processing_time_ns: field!("processing-time"),
        frame_width: field!("frame-width"),
        frame_height: field!("frame-height"),
        regions,
        regions_dropped: field!("regions-dropped"),
    };
    let timing = FrameTiming {
        pts: field!("pts"),
        duration: field!("duration"),
        running_time: field!("running-time"),
    };
    Ok((result, timing))
}
