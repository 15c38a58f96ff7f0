//! The JSON line of one frame. The module docs of `funadjson` list its fields.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::{FunadMeta, FunadRegion, FunadVerdict};

/// Value of `schema_version`, raised when a field changes meaning or is removed.
/// Version 2 takes `result_id` and `created_utc` from the meta.
pub const SCHEMA_VERSION: u32 = 2;

/// Verdict of a line: the meta's verdict, or `not-scored` for a frame without a meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LineVerdict {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "NG")]
    Ng,
    #[serde(rename = "no-model")]
    NoModel,
    #[serde(rename = "not-scored")]
    NotScored,
}

impl From<FunadVerdict> for LineVerdict {
    fn from(verdict: FunadVerdict) -> Self {
        match verdict {
            FunadVerdict::Ok => LineVerdict::Ok,
            FunadVerdict::Ng => LineVerdict::Ng,
            FunadVerdict::NoModel => LineVerdict::NoModel,
        }
    }
}

/// Values of `reason`, which explains a line without a score.
pub const REASON_NO_MODEL: &str = "no model loaded";
pub const REASON_NO_META: &str = "no funad meta";
pub const REASON_GAP: &str = "gap buffer";

/// One defect region of a line.
#[derive(Debug, Serialize)]
pub struct LineRegion {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub peak_score: f32,
    pub patch_count: u32,
}

impl From<&FunadRegion> for LineRegion {
    fn from(r: &FunadRegion) -> Self {
        LineRegion {
            x: r.x,
            y: r.y,
            width: r.width,
            height: r.height,
            peak_score: r.peak_score,
            patch_count: r.patch_count,
        }
    }
}

/// One result line. Field order is the order of the JSON object.
#[derive(Debug, Serialize)]
pub struct ResultLine {
    pub schema_version: u32,
    pub result_id: String,
    pub sequence: u64,
    pub frame_sequence: Option<u64>,
    pub pts_ns: Option<u64>,
    pub duration_ns: Option<u64>,
    pub created_utc: String,
    pub processing_time_ns: Option<u64>,
    pub verdict: LineVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub score: Option<f32>,
    pub threshold: Option<f32>,
    pub model_id: Option<String>,
    pub model_version: Option<u64>,
    pub frame_width: Option<u32>,
    pub frame_height: Option<u32>,
    pub map_width: u32,
    pub map_height: u32,
    pub regions: Vec<LineRegion>,
    pub regions_dropped: u32,
    /// Patch scores, row-major. `None` leaves the field out (`include-map=false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

/// Line contents set by the element properties.
#[derive(Clone, Debug, Default)]
pub struct LineOptions {
    pub include_map: bool,
    pub source_id: Option<String>,
}

impl ResultLine {
    /// Builds the line of `buffer` from its `FunadMeta`, or a `not-scored`
    /// line with a new result id and the current time when it has none.
    pub fn from_buffer(
        buffer: &gst::BufferRef,
        sequence: u64,
        options: &LineOptions,
    ) -> Result<Self, time::error::Format> {
        let mut line = ResultLine {
            schema_version: SCHEMA_VERSION,
            result_id: uuid::Uuid::new_v4().to_string(),
            sequence,
            frame_sequence: None,
            pts_ns: buffer.pts().map(gst::ClockTime::nseconds),
            duration_ns: buffer.duration().map(gst::ClockTime::nseconds),
            created_utc: time::OffsetDateTime::now_utc().format(&Rfc3339)?,
            processing_time_ns: None,
            verdict: LineVerdict::NotScored,
            reason: None,
            score: None,
            threshold: None,
            model_id: None,
            model_version: None,
            frame_width: None,
            frame_height: None,
            map_width: 0,
            map_height: 0,
            regions: Vec::new(),
            regions_dropped: 0,
            map: options.include_map.then(Vec::new),
            source_id: options.source_id.clone(),
        };

        let Some(meta) = buffer.meta::<FunadMeta>() else {
            line.reason = Some(if buffer.flags().contains(gst::BufferFlags::GAP) {
                REASON_GAP
            } else {
                REASON_NO_META
            });
            return Ok(line);
        };

        line.result_id = meta.result_id().hyphenated().to_string();
        line.frame_sequence = Some(meta.sequence());
        line.created_utc = format_unix_ns(meta.creation_time_ns())?;
        line.processing_time_ns = Some(meta.processing_time_ns());
        line.frame_width = Some(meta.frame_width());
        line.frame_height = Some(meta.frame_height());
        line.verdict = meta.verdict().into();
        if line.verdict == LineVerdict::NoModel {
            line.reason = Some(REASON_NO_MODEL);
            return Ok(line);
        }
        line.score = Some(meta.score());
        line.threshold = Some(meta.threshold());
        line.model_id = Some(meta.model_id().to_string());
        line.model_version = Some(meta.model_version());
        line.map_width = meta.map_width();
        line.map_height = meta.map_height();
        line.regions = meta.regions().iter().map(LineRegion::from).collect();
        line.regions_dropped = meta.regions_dropped();
        if options.include_map {
            line.map = Some(meta.map().to_vec());
        }
        Ok(line)
    }

    /// Serializes the line as compact JSON followed by `\n`.
    pub fn to_ndjson(&self) -> serde_json::Result<Vec<u8>> {
        // serde_json escapes control characters in strings, so the only
        // newline in the output is the one added here.
        let mut bytes = serde_json::to_vec(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 in UTC.
fn format_unix_ns(ns: u64) -> Result<String, time::error::Format> {
    // Every u64 of nanoseconds lies before the year 2555, inside the range of
    // OffsetDateTime, so the conversion cannot fail.
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    time.format(&Rfc3339)
}
