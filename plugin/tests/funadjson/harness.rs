//! `funadjson` in a gst_check harness: lines of real scored MTD frames, frames
//! without a meta, properties, events and restarts.

use gst::prelude::*;
use gst_video::VideoFormat;
use gstfunad::FunadMeta;
use serde_json::Value;

use crate::common::{self, frame, harness, load, model, mtd_images, scorer, spread};
use crate::lines::{
    as_f32, assert_ndjson_caps, assert_valid, check_matches_result, check_scored, map_values,
    parse_buffer, schema_errors,
};

/// Creates a `funadjson` element with the given properties.
fn json_element(properties: &[(&str, &dyn ToValue)]) -> gst::Element {
    common::init();
    let mut builder = gst::ElementFactory::make("funadjson");
    for (name, value) in properties {
        builder = builder.property(name, value.to_value());
    }
    builder.build().expect("funadjson is registered")
}

/// Builds a Gray8 frame of an MTD image with the given PTS and duration.
fn timed_frame(
    path: &std::path::Path,
    pts: Option<gst::ClockTime>,
    duration: Option<gst::ClockTime>,
) -> (gst::Buffer, gst_video::VideoInfo) {
    let (mut buffer, info) = frame(&load(path), VideoFormat::Gray8, None);
    {
        let buffer = buffer.get_mut().unwrap();
        buffer.set_pts(pts);
        buffer.set_duration(duration);
    }
    (buffer, info)
}

/// Pushes `buffer` with the caps of `info` and parses the line that comes out.
fn push_line(
    h: &mut gst_check::Harness,
    buffer: gst::Buffer,
    info: &gst_video::VideoInfo,
) -> (gst::Buffer, Value) {
    h.set_src_caps(info.to_caps().unwrap());
    h.push(buffer).expect("buffer flows");
    let out = h.pull().expect("a line comes out");
    let line = parse_buffer(&out);
    (out, line)
}

/// Scores `buffer` with `scorer` and returns the scored buffer, which carries the meta.
fn score(
    scorer: &mut gst_check::Harness,
    buffer: gst::Buffer,
    info: &gst_video::VideoInfo,
) -> gst::Buffer {
    scorer.set_src_caps(info.to_caps().unwrap());
    scorer.push(buffer).expect("frame is scored");
    scorer.pull().expect("scored frame comes out")
}

#[test]
fn scored_frames_give_valid_lines() {
    common::init();
    let mut h = gst_check::Harness::new_parse(&format!(
        "funadscore model={} ! funadjson",
        model().path.display()
    ));
    let mut files = spread(&mtd_images("test/good"), 3);
    files.extend(spread(&mtd_images("test/blowhole"), 3));
    let mut ids = std::collections::HashSet::new();
    let mut verdicts = Vec::new();

    for (i, path) in files.iter().enumerate() {
        let pts = gst::ClockTime::from_mseconds(40 * i as u64 + 1000);
        let duration = gst::ClockTime::from_mseconds(40);
        let (buffer, info) = timed_frame(path, Some(pts), Some(duration));
        let (out, line) = push_line(&mut h, buffer, &info);

        assert_eq!(out.pts(), Some(pts), "output PTS of frame {i}");
        assert_eq!(
            out.duration(),
            Some(duration),
            "output duration of frame {i}"
        );
        assert_eq!(line["schema_version"], 2);
        assert_eq!(line["sequence"], i as u64);
        assert_eq!(line["frame_sequence"], i as u64);
        assert_eq!(line["pts_ns"], pts.nseconds());
        assert_eq!(line["duration_ns"], duration.nseconds());
        check_scored(&line);
        assert!(line.get("map").is_none(), "map without include-map");
        assert!(
            line.get("source_id").is_none(),
            "source_id without source-id"
        );
        assert!(
            ids.insert(line["result_id"].as_str().unwrap().to_string()),
            "result_id {} repeats",
            line["result_id"]
        );
        verdicts.push(line["verdict"].as_str().unwrap().to_string());
    }

    let caps = h.sinkpad().unwrap().current_caps().expect("output caps");
    assert_ndjson_caps(&caps);
    assert!(
        verdicts.iter().any(|v| v == "OK"),
        "no OK among {verdicts:?}; the test cannot tell OK from NG"
    );
}

#[test]
fn include_map_copies_meta_map() {
    let scorer_element = scorer(&[]);
    let (mut scorer, _bus) = harness(&scorer_element);
    let json = json_element(&[("include-map", &true)]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));

    for path in spread(&mtd_images("test/crack"), 2) {
        let (buffer, info) = timed_frame(&path, Some(gst::ClockTime::ZERO), None);
        let scored = score(&mut scorer, buffer, &info);
        let meta = scored.meta::<FunadMeta>().expect("meta").result();
        let (_, line) = push_line(&mut h, scored, &info);

        check_scored(&line);
        check_matches_result(&line, &meta);
        let map = map_values(&line);
        assert_eq!(map.len(), (meta.map_width * meta.map_height) as usize);
        assert_eq!(map, meta.map, "map values of {}", path.display());
        assert_eq!(as_f32(&line["score"]), meta.score);
        let max = map.iter().copied().fold(f32::MIN, f32::max);
        assert_eq!(max, as_f32(&line["score"]), "score is the map maximum");
        assert_eq!(line["verdict"], meta.verdict.as_str());
    }
}

#[test]
fn frame_without_meta_is_not_scored() {
    let json = json_element(&[("include-map", &true)]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let pts = gst::ClockTime::from_seconds(3);
    let (buffer, info) = timed_frame(&mtd_images("test/good")[0], Some(pts), None);
    let (out, line) = push_line(&mut h, buffer, &info);

    assert_eq!(out.pts(), Some(pts));
    assert_eq!(out.duration(), None);
    assert_eq!(line["verdict"], "not-scored");
    assert_eq!(line["reason"], "no funad meta");
    assert_eq!(line["sequence"], 0);
    assert_eq!(line["pts_ns"], pts.nseconds());
    assert_eq!(line["duration_ns"], Value::Null);
    assert_eq!(line["score"], Value::Null);
    assert_eq!(line["threshold"], Value::Null);
    assert_eq!(line["model_id"], Value::Null);
    assert_eq!(line["model_version"], Value::Null);
    assert_eq!(line["map_width"], 0);
    assert_eq!(line["map_height"], 0);
    assert_eq!(line["map"], Value::Array(Vec::new()));
    assert_eq!(line["frame_sequence"], Value::Null);
    assert_eq!(line["processing_time_ns"], Value::Null);
    assert_eq!(line["frame_width"], Value::Null);
    assert_eq!(line["frame_height"], Value::Null);
    assert_eq!(line["regions"], Value::Array(Vec::new()));
    assert_eq!(line["regions_dropped"], 0);
}

#[test]
fn gap_buffer_is_not_scored() {
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (_, info) = timed_frame(&mtd_images("test/good")[1], None, None);
    h.set_src_caps(info.to_caps().unwrap());
    let mut gap = gst::Buffer::new();
    {
        let gap = gap.get_mut().unwrap();
        gap.set_flags(gst::BufferFlags::GAP);
        gap.set_pts(gst::ClockTime::from_mseconds(500));
    }
    h.push(gap).expect("gap buffer flows");
    let line = parse_buffer(&h.pull().unwrap());

    assert_eq!(line["verdict"], "not-scored");
    assert_eq!(line["reason"], "gap buffer");
    assert_eq!(line["pts_ns"], 500_000_000);
}

#[test]
fn scorer_without_model_gives_no_model() {
    let element = common::element(&[]);
    let (mut scorer, _bus) = harness(&element);
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (buffer, info) = timed_frame(&mtd_images("test/good")[2], None, None);
    let scored = score(&mut scorer, buffer, &info);
    let meta = scored.meta::<FunadMeta>().expect("meta").result();
    let (_, line) = push_line(&mut h, scored, &info);

    assert_eq!(line["verdict"], "no-model");
    assert_eq!(line["reason"], "no model loaded");
    assert_eq!(line["result_id"], meta.result_id.hyphenated().to_string());
    assert_eq!(line["frame_sequence"], 0);
    assert_eq!(line["frame_width"], info.width());
    assert_eq!(line["regions"], Value::Array(Vec::new()));
    assert_eq!(line["score"], Value::Null);
    assert_eq!(line["model_id"], Value::Null);
    assert_eq!(line["pts_ns"], Value::Null);
}

#[test]
fn source_id_is_copied() {
    let json = json_element(&[("source-id", &"line 3 \"left\"\ncamera")]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (buffer, info) = timed_frame(&mtd_images("test/good")[3], None, None);
    let (_, line) = push_line(&mut h, buffer.clone(), &info);
    assert_eq!(line["source_id"], "line 3 \"left\"\ncamera");

    json.set_property("source-id", "");
    assert_eq!(json.property::<Option<String>>("source-id"), None);
    h.push(buffer).unwrap();
    let line = parse_buffer(&h.pull().unwrap());
    assert!(line.get("source_id").is_none(), "empty source-id in {line}");
}

#[test]
fn created_utc_is_write_time() {
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (buffer, info) = timed_frame(&mtd_images("test/good")[4], None, None);
    let before = time::OffsetDateTime::now_utc();
    let (_, line) = push_line(&mut h, buffer, &info);
    let after = time::OffsetDateTime::now_utc();

    let text = line["created_utc"].as_str().unwrap();
    assert!(text.ends_with('Z'), "{text} is not UTC");
    let created = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
    assert!(
        created >= before,
        "{created} is before the push at {before}"
    );
    assert!(created <= after, "{created} is after the pull at {after}");
}

#[test]
fn caps_go_out_once_and_eos_follows() {
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let files = spread(&mtd_images("test/good"), 2);
    let (buffer, first) = timed_frame(&files[0], Some(gst::ClockTime::ZERO), None);
    let (_, line) = push_line(&mut h, buffer, &first);
    assert_eq!(line["sequence"], 0);

    // The second image has another size, so the input caps change.
    let (buffer, info) = timed_frame(&files[1], Some(gst::ClockTime::SECOND), None);
    assert_ne!(
        (first.width(), first.height()),
        (info.width(), info.height())
    );
    assert!(h.push_event(gst::event::Caps::new(&info.to_caps().unwrap())));
    h.push(buffer).unwrap();
    let line = parse_buffer(&h.pull().unwrap());
    assert_eq!(line["sequence"], 1);
    assert!(h.push_event(gst::event::Eos::new()));

    let mut events = Vec::new();
    while let Some(event) = h.try_pull_event() {
        events.push(event);
    }
    let kinds: Vec<gst::EventType> = events.iter().map(|e| e.type_()).collect();
    assert_eq!(
        kinds,
        [
            gst::EventType::StreamStart,
            gst::EventType::Caps,
            gst::EventType::Segment,
            gst::EventType::Eos
        ]
    );
    let gst::EventView::Caps(caps) = events[1].view() else {
        unreachable!()
    };
    assert_ndjson_caps(caps.caps());
}

#[test]
fn buffer_without_caps_gives_line() {
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (buffer, _) = timed_frame(&mtd_images("test/good")[8], None, None);
    h.push(buffer).expect("a buffer without caps flows");
    let line = parse_buffer(&h.pull().unwrap());

    assert_eq!(line["verdict"], "not-scored");
    let caps = h.sinkpad().unwrap().current_caps().expect("output caps");
    assert_ndjson_caps(&caps);
}

#[test]
fn non_video_caps_are_rejected() {
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    assert!(h.push_event(gst::event::StreamStart::new("audio")));
    let audio = gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("rate", 48000i32)
        .field("channels", 1i32)
        .field("layout", "interleaved")
        .build();
    let sinkpad = json.static_pad("sink").unwrap();
    assert!(
        !sinkpad.query_accept_caps(&audio),
        "sink pad accepts {audio}"
    );
    h.push_event(gst::event::Caps::new(&audio));
    assert!(sinkpad.current_caps().is_none(), "sink pad took {audio}");
    assert!(
        json.static_pad("src").unwrap().current_caps().is_none(),
        "output caps were set for {audio}"
    );
}

#[test]
fn sequence_survives_flush_and_resets_on_restart() {
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (buffer, info) = timed_frame(&mtd_images("test/good")[5], None, None);
    let sequence = |b: &gst::Buffer| parse_buffer(b)["sequence"].as_u64().unwrap();

    let (out, _) = push_line(&mut h, buffer.clone(), &info);
    assert_eq!(sequence(&out), 0);
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    h.push(buffer.clone()).unwrap();
    assert_eq!(sequence(&h.pull().unwrap()), 1, "flush keeps counting");

    json.set_state(gst::State::Null).unwrap();
    json.set_state(gst::State::Playing).unwrap();
    assert!(h.push_event(gst::event::StreamStart::new("restarted")));
    let (out, _) = push_line(&mut h, buffer, &info);
    assert_eq!(sequence(&out), 0, "a restart counts from 0");
}

/// A change to a valid line that must make it invalid.
type Mutation = (&'static str, fn(&mut Value));

/// Asserts that each mutation of `valid` fails the schema.
fn assert_mutations_rejected(valid: &Value, mutations: &[Mutation]) {
    assert_valid(valid);
    for (name, mutate) in mutations {
        let mut line = valid.clone();
        mutate(&mut line);
        assert!(
            !schema_errors(&line).is_empty(),
            "schema accepts a line with {name}: {line}"
        );
    }
}

#[test]
fn schema_rejects_inconsistent_lines() {
    let json = json_element(&[]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (buffer, info) = timed_frame(&mtd_images("test/good")[6], None, None);
    let (_, not_scored) = push_line(&mut h, buffer, &info);
    assert_mutations_rejected(
        &not_scored,
        &[
            ("not-scored with a score", |l| l["score"] = 0.5.into()),
            ("OK without a score", |l| l["verdict"] = "OK".into()),
            ("unknown verdict", |l| l["verdict"] = "maybe".into()),
            ("unknown field", |l| l["extra"] = 1.into()),
            ("local time", |l| {
                l["created_utc"] = "2025-01-31T08:15:02+01:00".into()
            }),
            ("missing result_id", |l| {
                l.as_object_mut().unwrap().remove("result_id");
            }),
            ("no reason", |l| {
                l.as_object_mut().unwrap().remove("reason");
            }),
        ],
    );

    let scorer_element = scorer(&[]);
    let (mut scorer, _bus) = harness(&scorer_element);
    let json = json_element(&[("include-map", &true)]);
    let mut h = gst_check::Harness::with_element(&json, Some("sink"), Some("src"));
    let (buffer, info) = timed_frame(&mtd_images("test/good")[7], None, None);
    let scored = score(&mut scorer, buffer, &info);
    let (_, scored) = push_line(&mut h, scored, &info);
    assert_mutations_rejected(
        &scored,
        &[
            ("OK with a reason", |l| l["reason"] = "no funad meta".into()),
            ("OK with a null score", |l| l["score"] = Value::Null),
            ("OK with a null model id", |l| l["model_id"] = Value::Null),
            ("score above 1", |l| l["score"] = 1.5.into()),
            ("empty map size", |l| l["map_width"] = 0.into()),
            ("map value above 1", |l| l["map"][0] = 2.into()),
            ("result_id not a UUID", |l| {
                l["result_id"] = "frame-1".into()
            }),
            ("negative sequence", |l| l["sequence"] = (-1).into()),
            ("null frame size", |l| l["frame_width"] = Value::Null),
            ("missing regions", |l| {
                l.as_object_mut().unwrap().remove("regions");
            }),
            ("region without peak", |l| {
                l["regions"] = serde_json::json!([{"x": 0, "y": 0, "width": 1, "height": 1,
                    "patch_count": 1}])
            }),
            ("empty region box", |l| {
                l["regions"] = serde_json::json!([{"x": 0, "y": 0, "width": 0, "height": 1,
                    "peak_score": 0.99, "patch_count": 1}])
            }),
            ("NG without regions", |l| {
                l["verdict"] = "NG".into();
                l["regions"] = serde_json::json!([]);
            }),
            ("OK with a region", |l| {
                l["verdict"] = "OK".into();
                l["regions"] = serde_json::json!([{"x": 0, "y": 0, "width": 1, "height": 1,
                    "peak_score": 0.99, "patch_count": 1}]);
            }),
        ],
    );
}
