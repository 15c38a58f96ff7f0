//! The `GstFunadMeta` API on its own: adding, reading, copying.

use gstfunad::{FunadMeta, FunadResult, FunadVerdict};

use crate::common;

fn sample_result() -> FunadResult {
    FunadResult {
        score: 0.75,
        verdict: FunadVerdict::Ng,
        threshold: 0.5,
        model_id: "0123456789ab".to_string(),
        model_version: 3,
        sequence: 17,
        map_width: 3,
        map_height: 2,
        map: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.75],
    }
}

#[test]
fn meta_round_trips_fields() {
    common::init();
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    let result = sample_result();
    FunadMeta::add(buffer.get_mut().unwrap(), &result);
    let meta = buffer.meta::<FunadMeta>().expect("meta added");
    assert_eq!(meta.score(), 0.75);
    assert_eq!(meta.verdict(), FunadVerdict::Ng);
    assert_eq!(meta.threshold(), 0.5);
    assert_eq!(meta.model_id(), "0123456789ab");
    assert_eq!(meta.model_version(), 3);
    assert_eq!(meta.sequence(), 17);
    assert_eq!((meta.map_width(), meta.map_height()), (3, 2));
    assert_eq!(meta.map(), result.map.as_slice());
    assert_eq!(meta.result(), result);
}

#[test]
fn meta_survives_buffer_copy() {
    common::init();
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    FunadMeta::add(buffer.get_mut().unwrap(), &sample_result());
    let copy = buffer.copy();
    drop(buffer);
    let meta = copy
        .meta::<FunadMeta>()
        .expect("a full copy keeps the meta");
    assert_eq!(meta.result(), sample_result());
}

#[test]
fn region_copy_drops_meta() {
    common::init();
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    FunadMeta::add(buffer.get_mut().unwrap(), &sample_result());
    let part = buffer
        .copy_region(gst::BufferCopyFlags::all(), 4..8)
        .unwrap();
    assert!(
        part.meta::<FunadMeta>().is_none(),
        "a part of a frame does not carry its result"
    );
}

#[test]
fn mismatched_map_is_stored_empty() {
    common::init();
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    let mut result = sample_result();
    result.map.pop();
    FunadMeta::add(buffer.get_mut().unwrap(), &result);
    let meta = buffer.meta::<FunadMeta>().unwrap();
    assert_eq!((meta.map_width(), meta.map_height()), (0, 0));
    assert!(meta.map().is_empty());
}

#[test]
fn meta_api_type_is_registered_by_name() {
    common::init();
    let api = gstfunad::meta::meta_api_type();
    assert_eq!(api.name(), "GstFunadMetaAPI");
    assert_eq!(gst::glib::Type::from_name("GstFunadMetaAPI"), Some(api));
}

#[test]
fn verdict_strings_round_trip() {
    for verdict in [FunadVerdict::Ok, FunadVerdict::Ng, FunadVerdict::NoModel] {
        assert_eq!(FunadVerdict::from_str_name(verdict.as_str()), Some(verdict));
        assert_eq!(FunadVerdict::from_raw(verdict as i32), verdict);
    }
    assert_eq!(FunadVerdict::from_str_name("ok"), None);
    assert_eq!(FunadVerdict::from_raw(99), FunadVerdict::NoModel);
}

#[test]
fn message_structure_round_trips() {
    common::init();
    let timing = gstfunad::message::FrameTiming {
        pts: Some(gst::ClockTime::from_mseconds(40)),
        duration: None,
        running_time: Some(gst::ClockTime::from_mseconds(40)),
    };
    let s = gstfunad::message::result_structure(&sample_result(), &timing);
    assert_eq!(s.name(), "funad-result");
    assert_eq!(s.get::<u64>("duration").unwrap(), u64::MAX);
    let (result, parsed_timing) = gstfunad::message::parse_result_structure(&s).unwrap();
    assert_eq!(result, sample_result());
    assert_eq!(parsed_timing, timing);
}
