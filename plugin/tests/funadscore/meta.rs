//! The `GstFunadMeta` API on its own: adding, reading, copying.

use gstfunad::{FunadMeta, FunadRegion, FunadResult, FunadVerdict};

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
        result_id: uuid::Uuid::parse_str("0f8e2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b").unwrap(),
        creation_time_ns: 1_764_842_400_123_456_789,
        processing_time_ns: 41_000_000,
        frame_width: 300,
        frame_height: 200,
        regions: vec![
            FunadRegion {
                x: 200,
                y: 100,
                width: 100,
                height: 100,
                peak_score: 0.75,
                patch_count: 1,
            },
            FunadRegion {
                x: 0,
                y: 0,
                width: 101,
                height: 100,
                peak_score: 0.6,
                patch_count: 2,
            },
        ],
        regions_dropped: 3,
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
    assert_eq!(meta.result_id(), result.result_id);
    assert_eq!(meta.creation_time_ns(), result.creation_time_ns);
    assert_eq!(meta.processing_time_ns(), result.processing_time_ns);
    assert_eq!((meta.frame_width(), meta.frame_height()), (300, 200));
    assert_eq!(meta.regions(), result.regions.as_slice());
    assert_eq!(meta.regions_dropped(), 3);
    assert_eq!(meta.result(), result);
}

#[test]
fn meta_without_regions_stores_none() {
    common::init();
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    let mut result = sample_result();
    result.regions.clear();
    result.regions_dropped = 0;
    FunadMeta::add(buffer.get_mut().unwrap(), &result);
    let meta = buffer.meta::<FunadMeta>().unwrap();
    assert!(meta.regions().is_empty());
    assert_eq!(meta.result(), result);
}

#[test]
fn meta_size_matches_layout_2() {
    common::init();
    let info = unsafe { &*gstfunad::meta::meta_info() };
    assert_eq!(info.size, std::mem::size_of::<FunadMeta>());
    assert_eq!(gstfunad::meta::META_LAYOUT_VERSION, 2);
    // The C header declares the same layout; meson-compat's C reader checks
    // its sizeof against the registered size.
    let header =
        std::fs::read_to_string(common::repo_root().join("plugin/include/gst/funad/funadmeta.h"))
            .unwrap();
    assert!(
        header.contains("#define FUNAD_META_LAYOUT_VERSION 2"),
        "funadmeta.h declares another layout version"
    );
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

#[test]
fn scale_transform_moves_regions() {
    common::init();
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    FunadMeta::add(buffer.get_mut().unwrap(), &sample_result());
    let video_info = |width, height| {
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, width, height)
            .build()
            .unwrap()
    };
    // The transform keeps pointers to both infos, so they must outlive it.
    let (in_info, out_info) = (video_info(300, 200), video_info(150, 100));
    let scale = gst_video::video_meta::VideoMetaTransformScale::new(&in_info, &out_info);
    let mut scaled = gst::Buffer::with_size(16).unwrap();
    buffer
        .meta::<FunadMeta>()
        .unwrap()
        .transform(scaled.get_mut().unwrap(), &scale)
        .expect("scale transform copies the meta");

    let result = scaled.meta::<FunadMeta>().unwrap().result();
    let original = sample_result();
    assert_eq!((result.frame_width, result.frame_height), (150, 100));
    let boxes: Vec<(u32, u32, u32, u32)> = result
        .regions
        .iter()
        .map(|r| (r.x, r.y, r.width, r.height))
        .collect();
    // 101 pixels at half size round outward to 51.
    assert_eq!(boxes, [(100, 50, 50, 50), (0, 0, 51, 50)]);
    assert_eq!(result.map, original.map, "the patch map does not scale");
    assert_eq!(result.result_id, original.result_id);
    assert_eq!(result.regions[0].peak_score, original.regions[0].peak_score);
}
