//! `funadscore` noticing a replaced model file, as it would when a trainer in
//! another process writes one: nothing in this process announces the write.

use std::path::Path;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstfunad::{FunadMeta, FunadVerdict};

use crate::common::{self, mtd_images};
use crate::support::{fresh_dir, rgb_buffer, rgb_caps};

/// Writes the test model as `version` to `path`, atomically.
fn write_version(path: &Path, version: u64) {
    let mut detector =
        funad::Detector::load(&common::model().path, None, tch::Device::Cpu).unwrap();
    detector.set_version(version);
    detector.save(path).unwrap();
}

struct Scorer {
    harness: gst_check::Harness,
    bus: gst::Bus,
    pushed: u64,
}

impl Scorer {
    fn new(model: &Path, extra: &[(&str, &dyn ToValue)]) -> Scorer {
        let model = model.display().to_string();
        let interval = 100u32;
        let mut props: Vec<(&str, &dyn ToValue)> = vec![
            ("model", &model),
            ("model-check-interval", &interval),
            ("post-messages", &false),
        ];
        props.extend_from_slice(extra);
        let element = common::element(&props);
        let (mut harness, bus) = common::harness(&element);
        harness.set_src_caps(rgb_caps());
        Scorer {
            harness,
            bus,
            pushed: 0,
        }
    }

    /// Pushes one frame and returns the version and verdict in its meta.
    fn frame(&mut self) -> (u64, FunadVerdict) {
        let images = mtd_images("test/good");
        let path = &images[self.pushed as usize % images.len()];
        self.harness
            .push(rgb_buffer(path, self.pushed))
            .expect("frame passes");
        self.pushed += 1;
        let out = self.harness.pull().expect("frame comes out");
        let meta = out.meta::<FunadMeta>().expect("frame has a meta");
        (meta.model_version(), meta.verdict())
    }

    /// Pushes frames until one is scored by `version`, for at most 10 s;
    /// returns the versions seen on the way.
    fn until_version(&mut self, version: u64) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            let (v, _) = self.frame();
            seen.push(v);
            if v == version {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "version {version} not in service after 10 s: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn messages(&self, name: &str) -> Vec<gst::Structure> {
        let mut out = Vec::new();
        while let Some(msg) = self.bus.pop() {
            match msg.view() {
                gst::MessageView::Element(e) if e.structure().unwrap().name() == name => {
                    out.push(e.structure().unwrap().to_owned())
                }
                gst::MessageView::Warning(w) if name == "warning" => {
                    out.push(
                        gst::Structure::builder("warning")
                            .field("text", w.error().to_string())
                            .build(),
                    );
                }
                _ => {}
            }
        }
        out
    }
}

#[test]
fn replaced_file_swaps_between_frames() {
    let dir = fresh_dir("reload-replace");
    let model = dir.join("m.safetensors");
    write_version(&model, 3);
    let mut scorer = Scorer::new(&model, &[]);
    let (version, verdict) = scorer.frame();
    assert_eq!(version, 3);
    assert_ne!(verdict, FunadVerdict::NoModel);

    write_version(&model, 4);
    let seen = scorer.until_version(4);
    assert!(seen[..seen.len() - 1].iter().all(|&v| v == 3), "{seen:?}");
    let changes = scorer.messages("funad-model-changed");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].get::<u64>("old-version").unwrap(), 3);
    assert_eq!(changes[0].get::<u64>("model-version").unwrap(), 4);
    assert_eq!(
        changes[0].get::<u64>("sequence").unwrap(),
        scorer.pushed - 1,
        "the swap message names the first frame of the new version"
    );
    // Every frame pushed came out.
    assert_eq!(scorer.harness.buffers_received(), scorer.pushed as u32);
}

#[test]
fn broken_replacement_keeps_model() {
    let dir = fresh_dir("reload-broken");
    let model = dir.join("m.safetensors");
    write_version(&model, 5);
    let mut scorer = Scorer::new(&model, &[]);
    assert_eq!(scorer.frame().0, 5);

    // A truncated replacement, moved into place in one rename. A writer that
    // writes in place can show the watcher several partial states instead,
    // each of which gets its own warning.
    let bytes = std::fs::read(&model).unwrap();
    let partial = dir.join("m.safetensors.new");
    std::fs::write(&partial, &bytes[..bytes.len() / 3]).unwrap();
    std::fs::rename(&partial, &model).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..3 {
        assert_eq!(
            scorer.frame().0,
            5,
            "the broken file must not replace version 5"
        );
    }
    let warnings = scorer.messages("warning");
    assert_eq!(
        warnings.len(),
        1,
        "one warning per broken file: {warnings:?}"
    );
    let text = warnings[0].get::<String>("text").unwrap();
    assert!(
        text.contains("m.safetensors") && text.contains("stays"),
        "warning names the file and says the model stays: {text}"
    );

    write_version(&model, 6);
    scorer.until_version(6);
}

#[test]
fn cold_start_waits_for_file() {
    let dir = fresh_dir("reload-cold");
    let model = dir.join("m.safetensors");
    let mut scorer = Scorer::new(&model, &[("wait-for-model", &true)]);
    for _ in 0..3 {
        assert_eq!(scorer.frame(), (0, FunadVerdict::NoModel));
    }
    write_version(&model, 1);
    let seen = scorer.until_version(1);
    assert!(seen[..seen.len() - 1].iter().all(|&v| v == 0), "{seen:?}");
}

#[test]
fn missing_model_error_names_fix() {
    common::init();
    let dir = fresh_dir("reload-missing");
    let element = common::element(&[(
        "model",
        &dir.join("absent.safetensors").display().to_string(),
    )]);
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(element.set_state(gst::State::Paused).is_err());
    let msg = bus
        .pop_filtered(&[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = e.error().to_string();
    assert!(
        text.contains("absent.safetensors") && text.contains("wait-for-model"),
        "{text}"
    );
    element.set_state(gst::State::Null).unwrap();
}
