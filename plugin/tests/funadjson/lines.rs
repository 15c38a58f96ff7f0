//! Parsing and checking of funadjson output: one JSON line per buffer,
//! validated against `plugin/results.schema.json`.

use std::sync::LazyLock;

use serde_json::Value;

use crate::common;

/// The validator of `plugin/results.schema.json`, with `format` checked too.
static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let path = common::repo_root().join("plugin/results.schema.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
});

/// Returns the schema errors of `line`, empty when it is valid.
pub fn schema_errors(line: &Value) -> Vec<String> {
    VALIDATOR
        .iter_errors(line)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Panics unless `line` validates against the schema.
pub fn assert_valid(line: &Value) {
    let errors = schema_errors(line);
    assert!(errors.is_empty(), "line {line} is invalid: {errors:?}");
}

/// Parses one NDJSON line: a single `\n`, at the end, after one JSON object.
pub fn parse_line(bytes: &[u8]) -> Value {
    let text = std::str::from_utf8(bytes).expect("line is UTF-8");
    assert!(
        text.ends_with('\n'),
        "line does not end in a newline: {text:?}"
    );
    assert_eq!(
        text.matches('\n').count(),
        1,
        "more than one newline in {text:?}"
    );
    let value: Value = serde_json::from_str(text).expect("line parses as JSON");
    assert!(value.is_object(), "line is not an object: {value}");
    value
}

/// Parses the line in an output buffer and validates it.
pub fn parse_buffer(buffer: &gst::BufferRef) -> Value {
    let map = buffer.map_readable().expect("buffer maps");
    let line = parse_line(&map);
    assert_valid(&line);
    line
}

/// Reads a JSON number as `f32`, the precision the element writes.
pub fn as_f32(value: &Value) -> f32 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number")) as f32
}

/// Reads the `map` array of a line.
pub fn map_values(line: &Value) -> Vec<f32> {
    line["map"]
        .as_array()
        .unwrap_or_else(|| panic!("no map array in {line}"))
        .iter()
        .map(as_f32)
        .collect()
}

/// Checks that a line carries the result of `result`, as the meta or the
/// message of the same frame contains it.
pub fn check_matches_result(line: &Value, result: &gstfunad::FunadResult) {
    assert_eq!(line["result_id"], result.result_id.hyphenated().to_string());
    assert_eq!(line["frame_sequence"], result.sequence);
    let created = time::OffsetDateTime::parse(
        line["created_utc"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("created_utc is RFC 3339");
    assert_eq!(
        created.unix_timestamp_nanos(),
        result.creation_time_ns as i128,
        "created_utc {} against creation time {} ns",
        line["created_utc"],
        result.creation_time_ns
    );
    assert_eq!(line["processing_time_ns"], result.processing_time_ns);
    assert_eq!(line["frame_width"], result.frame_width);
    assert_eq!(line["frame_height"], result.frame_height);
    assert_eq!(line["score"].as_f64().map(|v| v as f32), Some(result.score));
    assert_eq!(line["verdict"], result.verdict.as_str());
    let regions = line["regions"].as_array().expect("regions array");
    assert_eq!(regions.len(), result.regions.len(), "regions in {line}");
    for (json, region) in regions.iter().zip(&result.regions) {
        assert_eq!(json["x"], region.x);
        assert_eq!(json["y"], region.y);
        assert_eq!(json["width"], region.width);
        assert_eq!(json["height"], region.height);
        assert_eq!(as_f32(&json["peak_score"]), region.peak_score);
        assert_eq!(json["patch_count"], region.patch_count);
    }
    assert_eq!(line["regions_dropped"], result.regions_dropped);
}

/// Checks the fields of a scored line against the test model: verdict from
/// score and threshold, model id and version, map size, regions only for NG.
pub fn check_scored(line: &Value) {
    let model = common::model();
    let score = as_f32(&line["score"]);
    let threshold = as_f32(&line["threshold"]);
    assert_eq!(threshold, model.meta.threshold, "threshold in {line}");
    let expected = if score > threshold { "NG" } else { "OK" };
    assert_eq!(
        line["verdict"], expected,
        "score {score} vs threshold {threshold}"
    );
    assert_eq!(line["model_id"], model.meta.model_id.as_str());
    assert_eq!(line["model_version"], model.meta.version);
    assert_eq!(line["map_width"], model.meta.grid);
    assert_eq!(line["map_height"], model.meta.grid);
    assert!(line.get("reason").is_none(), "reason in scored line {line}");
    let regions = line["regions"].as_array().expect("regions array");
    assert_eq!(regions.is_empty(), expected == "OK", "regions in {line}");
    let (width, height) = (
        line["frame_width"].as_u64().expect("frame_width"),
        line["frame_height"].as_u64().expect("frame_height"),
    );
    for region in regions {
        let right = region["x"].as_u64().unwrap() + region["width"].as_u64().unwrap();
        let bottom = region["y"].as_u64().unwrap() + region["height"].as_u64().unwrap();
        assert!(right <= width, "{region} leaves a frame {width} wide");
        assert!(bottom <= height, "{region} leaves a frame {height} high");
        assert!(
            as_f32(&region["peak_score"]) > threshold,
            "{region} at or below {threshold}"
        );
    }
    if let Some(first) = regions.first() {
        assert_eq!(as_f32(&first["peak_score"]), score, "strongest region peak");
    }
}

/// Checks that `caps` are exactly `application/x-ndjson`, without fields.
pub fn assert_ndjson_caps(caps: &gst::CapsRef) {
    assert_eq!(caps.size(), 1, "caps {caps}");
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "application/x-ndjson");
    assert_eq!(s.n_fields(), 0, "caps {caps}");
}
