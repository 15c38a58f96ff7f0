//! Bad models, bad settings and unsupported caps: each gives an element error
//! or warning that names the problem, and nothing crashes.

use std::path::Path;

use gst::glib;
use gst::prelude::*;

use crate::common::{self, backbone_path, model};

/// An error message read off the bus.
#[derive(Debug)]
struct ErrorReport {
    error: glib::Error,
    source: String,
    warnings: Vec<String>,
}

/// Sets `pipeline` to PLAYING and returns the first error on the bus, with the
/// warnings before it, and checks that the pipeline did not reach PLAYING.
fn first_error(pipeline: &gst::Element) -> ErrorReport {
    let bus = pipeline.bus().unwrap();
    let _ = pipeline.set_state(gst::State::Playing);
    let mut warnings = Vec::new();
    let report = loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(60))
            .expect("an error within 60 s");
        match msg.view() {
            gst::MessageView::Error(e) => {
                break ErrorReport {
                    error: e.error(),
                    source: msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    warnings,
                };
            }
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            gst::MessageView::Eos(_) => panic!("pipeline reached EOS without an error"),
            _ => {}
        }
    };
    let (_, current, _) = pipeline.state(gst::ClockTime::from_seconds(5));
    assert_ne!(
        current,
        gst::State::Playing,
        "pipeline reached PLAYING despite: {}",
        report.error
    );
    pipeline.set_state(gst::State::Null).unwrap();
    report
}

/// Starts a pipeline whose scorer has `properties` and returns its error.
fn start_error(properties: &[(&str, &dyn ToValue)]) -> ErrorReport {
    common::init();
    let pipeline =
        gst::parse::launch("videotestsrc num-buffers=1 ! funadscore name=scorer ! fakesink")
            .unwrap();
    let scorer = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("scorer")
        .unwrap();
    for (name, value) in properties {
        scorer.set_property_from_value(name, &value.to_value());
    }
    let report = first_error(&pipeline);
    assert_eq!(
        report.source, "scorer",
        "error from {} instead: {}",
        report.source, report.error
    );
    report
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn missing_model_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.safetensors");
    let report = start_error(&[("model", &path_text(&path))]);
    assert!(
        report.error.matches(gst::ResourceError::NotFound),
        "{:?}",
        report.error
    );
    let text = report.error.to_string();
    assert!(
        text.contains(&path_text(&path)),
        "message does not name the file: {text}"
    );
    assert!(text.contains("not found"), "{text}");
}

#[test]
fn truncated_model_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&model().path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let report = start_error(&[("model", &path_text(&path))]);
    assert!(
        report.error.matches(gst::ResourceError::OpenRead),
        "{:?}",
        report.error
    );
    let text = report.error.to_string();
    assert!(
        text.contains(&path_text(&path)),
        "message does not name the file: {text}"
    );
    assert!(text.contains("corrupt or truncated"), "{text}");
}

#[test]
fn text_file_as_model_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "this is not a model\n").unwrap();
    let report = start_error(&[("model", &path_text(&path))]);
    assert!(
        report.error.matches(gst::ResourceError::OpenRead),
        "{:?}",
        report.error
    );
    let text = report.error.to_string();
    assert!(
        text.contains(&path_text(&path)),
        "message does not name the file: {text}"
    );
    assert!(text.contains("corrupt"), "{text}");
}

#[test]
fn backbone_file_as_model_is_rejected() {
    // A valid safetensors file, but backbone weights rather than a funad model.
    let path = backbone_path();
    let report = start_error(&[("model", &path_text(&path))]);
    assert!(
        report.error.matches(gst::ResourceError::OpenRead),
        "{:?}",
        report.error
    );
    let text = report.error.to_string();
    assert!(text.contains("not a funad model"), "{text}");
}

#[test]
fn missing_backbone_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = dir.path().join("no-backbone.safetensors");
    let report = start_error(&[
        ("model", &path_text(&model().path)),
        ("backbone", &path_text(&backbone)),
    ]);
    assert!(
        report.error.matches(gst::ResourceError::NotFound),
        "{:?}",
        report.error
    );
    let text = report.error.to_string();
    assert!(
        text.contains(&path_text(&backbone)),
        "message does not name the backbone: {text}"
    );
    assert!(text.contains("backbone property"), "{text}");
}

#[test]
fn wrong_backbone_is_rejected() {
    // A file that exists but is not the backbone the model was trained with.
    let report = start_error(&[
        ("model", &path_text(&model().path)),
        ("backbone", &path_text(&model().path)),
    ]);
    assert!(
        report.error.matches(gst::ResourceError::OpenRead),
        "{:?}",
        report.error
    );
    assert!(
        report.error.to_string().contains(&path_text(&model().path)),
        "{}",
        report.error
    );
}

#[test]
fn cuda_without_gpu_is_error() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: a CUDA device is present");
        return;
    }
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=1 ! funadscore name=scorer device=cuda model={} ! fakesink",
        model().path.display()
    ))
    .unwrap();
    let report = first_error(&pipeline);
    assert_eq!(report.source, "scorer");
    assert!(
        report.error.matches(gst::ResourceError::Settings),
        "{:?}",
        report.error
    );
    assert!(
        report.error.to_string().contains("no CUDA device"),
        "{}",
        report.error
    );
}

#[test]
fn i420_link_is_rejected_at_parse() {
    common::init();
    let err = gst::parse::launch(
        "videotestsrc num-buffers=1 ! video/x-raw,format=I420,width=64,height=48 ! funadscore ! fakesink",
    )
    .expect_err("I420 links to funadscore");
    let text = err.to_string();
    assert!(text.contains("can't handle caps"), "{text}");
    assert!(text.contains("I420"), "{text}");
}

#[test]
fn i420_input_is_rejected_at_runtime() {
    common::init();
    // appsrc's pad template is ANY, so the link succeeds and the caps are
    // only refused when the caps event arrives.
    let pipeline = gst::parse::launch(
        "appsrc name=src format=time caps=video/x-raw,format=I420,width=64,height=48,framerate=10/1 \
         ! funadscore ! fakesink",
    )
    .unwrap();
    let src = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("src")
        .unwrap();
    let buffer = gst::Buffer::with_size(64 * 48 * 3 / 2).unwrap();
    let _ = src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&buffer]);
    let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);

    let report = first_error(&pipeline);
    assert_eq!(report.source, "src");
    assert!(
        report.error.matches(gst::StreamError::Failed),
        "{:?}",
        report.error
    );
    let warning = report.warnings.iter().find(|w| w.contains("I420"));
    let warning = warning.unwrap_or_else(|| panic!("no warning names I420: {:?}", report.warnings));
    assert!(warning.contains("videoconvert"), "{warning}");
}

#[test]
fn bayer_input_is_rejected() {
    let element = common::element(&[]);
    let (mut h, bus) = common::harness(&element);
    let caps = gst::Caps::builder("video/x-bayer")
        .field("format", "rggb")
        .field("width", 64)
        .field("height", 48)
        .field("framerate", gst::Fraction::new(10, 1))
        .build();
    h.push_event(gst::event::StreamStart::new("bayer"));
    // A refused sticky event still counts as pushed; the buffer after it fails.
    h.push_event(gst::event::Caps::new(&caps));
    let buffer = gst::Buffer::with_size(64 * 48).unwrap();
    assert_eq!(h.push(buffer), Err(gst::FlowError::NotNegotiated));

    let warning = bus
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("a warning about the caps");
    let gst::MessageView::Warning(w) = warning.view() else {
        unreachable!()
    };
    let text = w.error().to_string();
    assert!(text.contains("video/x-bayer"), "{text}");
    assert!(text.contains("GRAY8"), "{text}");
}
