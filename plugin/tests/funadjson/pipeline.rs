//! `funadjson` in whole pipelines on real MTD frames: in-process with appsink,
//! and through gst-inspect-1.0 loading the built plugin file.

use std::path::Path;

use gst::prelude::*;
use serde_json::Value;

use crate::common::{self, gst_tool, model, mtd_images, spread};
use crate::lines::{
    as_f32, assert_ndjson_caps, check_matches_result, check_scored, map_values, parse_buffer,
};

/// Creates a folder of links `000.jpg`, `001.jpg`, … to MTD images of
/// different sizes, half good and half defective, for multifilesrc.
fn numbered_images(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut files = spread(&mtd_images("test/good"), count / 2);
    files.extend(spread(&mtd_images("test/fray"), count - count / 2));
    for (i, file) in files.iter().enumerate() {
        std::os::unix::fs::symlink(file, dir.path().join(format!("{i:03}.jpg"))).unwrap();
    }
    dir
}

/// Output of a pipeline run: the lines from appsink with the caps of their
/// samples, and the `funad-result` messages of funadscore.
struct Run {
    lines: Vec<(gst::Buffer, Value)>,
    caps: Vec<gst::Caps>,
    results: Vec<gst::Structure>,
}

/// Runs `description`, whose last element is `appsink name=sink`, to EOS.
fn run_to_eos(description: &str) -> Run {
    common::init();
    let pipeline = gst::parse::launch(description).unwrap();
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let appsink = bin
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .expect("pipeline starts");

    let mut run = Run {
        lines: Vec::new(),
        caps: Vec::new(),
        results: Vec::new(),
    };
    while let Ok(sample) = appsink.pull_sample() {
        let buffer = sample.buffer_owned().expect("sample has a buffer");
        run.caps.push(sample.caps_owned().expect("sample has caps"));
        let line = parse_buffer(&buffer);
        run.lines.push((buffer, line));
    }

    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(60))
            .expect("no message for 60 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("pipeline error: {} ({:?})", e.error(), e.debug());
            }
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == gstfunad::message::RESULT_STRUCTURE_NAME {
                    run.results.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    run
}

fn multifilesrc(dir: &Path, count: usize) -> String {
    format!(
        "multifilesrc location={}/%03d.jpg index=0 stop-index={} caps=image/jpeg,framerate=5/1",
        dir.display(),
        count - 1
    )
}

#[test]
fn pipeline_writes_one_line_per_frame() {
    const FRAMES: usize = 6;
    let images = numbered_images(FRAMES);
    let run = run_to_eos(&format!(
        "{} ! jpegdec ! videoconvert ! funadscore model={} ! funadjson include-map=true \
         source-id=mtd ! appsink name=sink sync=false",
        multifilesrc(images.path(), FRAMES),
        model().path.display()
    ));

    assert_eq!(run.lines.len(), FRAMES, "one line per frame");
    assert_eq!(
        run.results.len(),
        FRAMES,
        "one funad-result message per frame"
    );
    for caps in &run.caps {
        assert_ndjson_caps(caps);
    }
    for (i, ((buffer, line), message)) in run.lines.iter().zip(&run.results).enumerate() {
        let pts = i as u64 * 200_000_000;
        assert_eq!(line["sequence"], i as u64, "sequence of line {i}");
        assert_eq!(buffer.pts().map(gst::ClockTime::nseconds), Some(pts));
        assert_eq!(line["pts_ns"], pts, "5 frames/s");
        assert_eq!(line["duration_ns"], 200_000_000);
        assert_eq!(line["source_id"], "mtd");
        check_scored(line);

        // The line carries what funadscore computed for the same frame.
        let (result, _) = gstfunad::message::parse_result_structure(message).unwrap();
        assert_eq!(result.sequence, i as u64);
        check_matches_result(line, &result);
        assert_eq!(as_f32(&line["score"]), result.score, "score of line {i}");
        assert_eq!(line["verdict"], result.verdict.as_str());
        let map = map_values(line);
        assert_eq!(map.len(), (result.map_width * result.map_height) as usize);
        assert_eq!(map, result.map, "map of line {i}");
    }
}

#[test]
fn gst_inspect_documents_funadjson() {
    let output = gst_tool("gst-inspect-1.0")
        .arg("funadjson")
        .output()
        .expect("gst-inspect-1.0 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "gst-inspect-1.0 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for property in ["include-map ", "source-id "] {
        assert!(
            stdout.contains(&format!("  {property}")),
            "property {property}missing in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("application/x-ndjson"),
        "src caps missing in:\n{stdout}"
    );
    assert!(
        stdout.contains("video/x-raw(ANY)"),
        "sink caps missing in:\n{stdout}"
    );
}
