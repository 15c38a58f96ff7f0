//! `funadscore` in whole pipelines: in-process, and through gst-launch-1.0 and
//! gst-inspect-1.0 loading the built plugin file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstfunad::FunadMeta;

use crate::common::{self, gst_tool, model, mtd_images, spread};

/// Creates a folder of links `000.jpg`, `001.jpg`, … to MTD images of different
/// sizes, for multifilesrc.
fn numbered_images(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut files = spread(&mtd_images("test/good"), count / 2);
    files.extend(spread(&mtd_images("test/crack"), count - count / 2));
    for (i, file) in files.iter().enumerate() {
        std::os::unix::fs::symlink(file, dir.path().join(format!("{i:03}.jpg"))).unwrap();
    }
    dir
}

fn multifilesrc(dir: &Path, count: usize) -> String {
    format!(
        "multifilesrc location={}/%03d.jpg index=0 stop-index={} caps=image/jpeg,framerate=5/1",
        dir.display(),
        count - 1
    )
}

struct Run {
    results: Vec<gst::Structure>,
    warnings: Vec<String>,
}

/// Runs `pipeline` to EOS, collecting `funad-result` messages and warnings.
fn run_to_eos(pipeline: &gst::Element) -> Run {
    let bus = pipeline.bus().unwrap();
    pipeline
        .set_state(gst::State::Playing)
        .expect("pipeline starts");
    let mut run = Run {
        results: Vec::new(),
        warnings: Vec::new(),
    };
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(120))
            .expect("no message for 120 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("pipeline error: {} ({:?})", e.error(), e.debug());
            }
            gst::MessageView::Warning(w) => run.warnings.push(w.error().to_string()),
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

#[test]
fn launch_pipeline_posts_one_result_per_frame() {
    common::init();
    const FRAMES: usize = 6;
    let images = numbered_images(FRAMES);
    let description = format!(
        "{} ! jpegdec ! videoconvert ! funadscore name=scorer model={} ! \
         videoconvert ! videoscale ! video/x-raw,format=RGB,width=64,height=48 ! \
         fakesink name=sink signal-handoffs=true",
        multifilesrc(images.path(), FRAMES),
        model().path.display()
    );
    let pipeline = gst::parse::launch(&description).unwrap();
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();

    // The meta must survive videoconvert and videoscale downstream.
    let metas: Arc<Mutex<Vec<Option<gstfunad::FunadResult>>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = metas.clone();
    bin.by_name("sink")
        .unwrap()
        .connect("handoff", false, move |args| {
            let buffer = args[1].get::<gst::Buffer>().unwrap();
            let meta = buffer.meta::<FunadMeta>().map(|m| m.result());
            seen.lock().unwrap().push(meta);
            None
        });

    let run = run_to_eos(&pipeline);
    assert!(run.warnings.is_empty(), "warnings: {:?}", run.warnings);
    assert_eq!(
        run.results.len(),
        FRAMES,
        "one funad-result message per frame"
    );
    for (i, s) in run.results.iter().enumerate() {
        assert_eq!(s.get::<u64>("sequence").unwrap(), i as u64);
        assert_eq!(
            s.get::<u64>("pts").unwrap(),
            i as u64 * 200_000_000,
            "5 frames/s"
        );
        assert!(["OK", "NG"].contains(&s.get::<&str>("verdict").unwrap()));
    }
    let metas = metas.lock().unwrap();
    assert_eq!(metas.len(), FRAMES, "buffers at fakesink");
    for (i, (meta, message)) in metas.iter().zip(&run.results).enumerate() {
        let meta = meta
            .as_ref()
            .unwrap_or_else(|| panic!("no meta on buffer {i} after videoconvert and videoscale"));
        assert_eq!(meta.sequence, i as u64);

        // videoscale copies the meta unchanged, so the boxes still refer
        // to the scored frame, whose size the meta keeps.
        let (original, _) = gstfunad::message::parse_result_structure(message).unwrap();
        assert_eq!(*meta, original, "meta of frame {i} after videoscale");
        assert!(original.frame_width > 64, "frames were not scaled down");
    }
}

#[test]
fn gst_launch_loads_plugin_file() {
    const FRAMES: usize = 3;
    let images = numbered_images(FRAMES);
    let description = format!(
        "{} ! jpegdec ! videoconvert ! funadscore model={} overlay=both ! fakesink",
        multifilesrc(images.path(), FRAMES),
        model().path.display()
    );
    let output = gst_tool("gst-launch-1.0")
        .arg("-m")
        .args(description.split_whitespace())
        .output()
        .expect("gst-launch-1.0 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "gst-launch-1.0 failed:\n{stdout}\n{stderr}"
    );
    let results = stdout
        .lines()
        .filter(|l| l.contains("funad-result,"))
        .count();
    assert_eq!(results, FRAMES, "funad-result messages in:\n{stdout}");
    assert!(
        stdout.contains("model-id=(string)"),
        "no model-id field in:\n{stdout}"
    );
}

#[test]
fn gst_inspect_documents_properties() {
    let output = gst_tool("gst-inspect-1.0")
        .arg("funadscore")
        .output()
        .expect("gst-inspect-1.0 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "gst-inspect-1.0 failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for property in [
        "model ",
        "backbone ",
        "device ",
        "threshold ",
        "overlay ",
        "overlay-opacity ",
        "post-messages ",
        "model-id ",
        "model-version ",
    ] {
        assert!(
            stdout.contains(&format!("  {property}")),
            "property {property}missing in:\n{stdout}"
        );
    }
    assert!(stdout.contains("GRAY8"), "sink caps missing in:\n{stdout}");
    assert!(stdout.contains("Filter/Analyzer/Video"));
}
