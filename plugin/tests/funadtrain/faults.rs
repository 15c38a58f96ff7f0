//! Faults: the process killed during training and during the model write,
//! a full disk, read-only folders, and stopping during a training. Each
//! must leave the model in service and the frame store intact.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gst::prelude::*;

use funad::store::{FrameStore, Policy, StoreConfig};

use crate::common::{self, gst_tool, mtd_images, spread};
use crate::element::{push_frames, trainer_pipeline, wait_stored};
use crate::support::{free_bytes, fresh_dir, png_sequence, wait_for, Seen, Tmpfs};

/// Copies the test model to `dir/line.safetensors`, the model in service.
fn serve_test_model(dir: &Path) -> PathBuf {
    let served = dir.join("line.safetensors");
    std::fs::copy(&common::model().path, &served).unwrap();
    served
}

/// Checks that the served model is still the test model, byte for byte, and loads.
fn assert_model_intact(served: &Path) {
    assert_eq!(
        std::fs::read(served).unwrap(),
        std::fs::read(&common::model().path).unwrap(),
        "the model in service changed"
    );
    funad::Detector::load(served, None, tch::Device::Cpu).expect("the model in service loads");
}

/// Opens the frame store as the element would and checks that every frame decodes.
fn assert_store_readable(dir: &Path) -> usize {
    let store = FrameStore::open(
        dir,
        StoreConfig {
            max_frames: 10_000,
            max_bytes: u64::MAX,
            policy: Policy::Reservoir,
            seed: 0,
        },
    )
    .expect("the frame store opens");
    for path in store.paths() {
        image::open(&path).unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
    }
    store.len()
}

fn partial_writes(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

/// Starts gst-launch-1.0 with an endless stream of real frames into funadtrain.
fn launch_trainer(dir: &Path, served: &Path, extra: &str, env: &[(&str, &str)]) -> Child {
    let frames = png_sequence(dir, "frames", &spread(&mtd_images("train/good"), 40));
    let mut command = gst_tool("gst-launch-1.0");
    command
        .arg("-m")
        .args(
            format!(
                "multifilesrc location={}/%05d.png index=0 loop=true caps=image/png,framerate=30/1 \
                 ! pngdec ! videoconvert ! video/x-raw,format=RGB ! funadtrain device=cpu \
                 store-location={} model={} max-frames=200 min-frames=30 train-every-frames=30 \
                 batch-size=8 holdout-every=3 holdout-frames=20 gate-min-frames=5 {extra}",
                frames.display(),
                dir.join("store").display(),
                served.display()
            )
            .split_whitespace(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("gst-launch-1.0 starts")
}

/// Lines of `child`'s standard output, read on another thread.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains(needle) {
            return;
        }
    }
    panic!("no line with {needle:?} within {timeout:?}");
}

#[test]
fn kill_during_training_keeps_model_and_store() {
    let dir = fresh_dir("fault-kill-train");
    let served = serve_test_model(&dir);
    let mut child = launch_trainer(&dir, &served, "epochs=200", &[]);
    let lines = stdout_lines(&mut child);
    wait_line(&lines, "phase=(string)train", Duration::from_secs(300));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));

    assert_model_intact(&served);
    assert!(assert_store_readable(&dir.join("store")) >= 30);
    assert!(
        !dir.join("line.v000002.safetensors").exists(),
        "no version may appear from a killed training"
    );
}

#[test]
fn kill_during_model_write_keeps_model() {
    let dir = fresh_dir("fault-kill-write");
    let served = serve_test_model(&dir);
    let mut child = launch_trainer(
        &dir,
        &served,
        "epochs=1",
        &[(funad::model::FAILPOINT_ENV, "abort-in-model-write")],
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the process did not abort in the model write");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.signal(), Some(6), "expected SIGABRT, got {status:?}");

    // The crash left half a file beside the model; the model in service is whole.
    let parts = partial_writes(&dir);
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_model_intact(&served);
    assert!(assert_store_readable(&dir.join("store")) >= 30);

    // The next start clears the half-written file.
    let (pipeline, _src, _) = trainer_pipeline(&format!(
        "store-location={} model={} min-frames=1000",
        dir.join("store").display(),
        served.display()
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(partial_writes(&dir).is_empty());
    assert_model_intact(&served);
}

#[test]
fn full_model_disk_keeps_model() {
    let model_len = std::fs::metadata(&common::model().path).unwrap().len();
    let disk = Tmpfs::mount("fault-full-model", model_len + 256 * 1024);
    let served = serve_test_model(&disk.path);
    assert!(
        free_bytes(&disk.path) < model_len,
        "the tmpfs must be too small for a second model"
    );
    let dir = fresh_dir("fault-full-model-store");

    let (pipeline, src, train) = trainer_pipeline(&format!(
        "store-location={} model={} min-frames=30 train-every-frames=30 epochs=1 batch-size=8 \
         holdout-every=4 holdout-frames=10 gate-min-frames=5",
        dir.join("store").display(),
        served.display()
    ));
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    push_frames(&src, 44, 0);
    let mut seen = Seen::default();
    let result = wait_for(
        &bus,
        "funad-train-result",
        Duration::from_secs(600),
        &mut seen,
        |_| true,
    );
    let reason = result.get::<String>("reason").unwrap();
    assert!(!result.get::<bool>("accepted").unwrap(), "{result}");
    assert!(
        reason.contains("No space left") && reason.contains("unchanged"),
        "{reason}"
    );
    assert!(
        seen.warnings.iter().any(|w| w.contains("No space left")),
        "a warning reports the full disk: {seen:?}"
    );
    assert_eq!(train.property::<u64>("served-version"), 1);
    pipeline.set_state(gst::State::Null).unwrap();
    assert_model_intact(&served);
    assert!(partial_writes(&disk.path).is_empty());
}

#[test]
fn full_store_disk_keeps_stream() {
    let disk = Tmpfs::mount("fault-full-store", 700 * 1024);
    let dir = fresh_dir("fault-full-store-model");
    let served = serve_test_model(&dir);
    let (pipeline, src, train) = trainer_pipeline(&format!(
        "store-location={} model={} min-frames=1000",
        disk.path.join("store").display(),
        served.display()
    ));
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    push_frames(&src, 30, 0);
    src.end_of_stream().unwrap();

    let mut seen = Seen::default();
    loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(60))
            .expect("EOS within 60 s");
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                panic!("a full store must not stop the stream: {}", e.error())
            }
            gst::MessageView::Warning(w) => seen.warnings.push(w.error().to_string()),
            _ => {}
        }
    }
    // EOS reaches the sink before the writer has caught up; wait for it.
    for _ in 0..100 {
        let stored =
            train.property::<u32>("stored-frames") + train.property::<u32>("held-out-frames");
        if stored as u64 + train.property::<u64>("failed-writes") >= 30 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let failed = train.property::<u64>("failed-writes");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(failed > 0, "a 700 KiB store must fail to take 30 frames");
    assert!(
        seen.warnings
            .iter()
            .any(|w| w.contains("Failed to store a frame") && w.contains("No space left")),
        "{seen:?}"
    );
    let kept = assert_store_readable(&disk.path.join("store"));
    assert!(kept > 0);
    assert_model_intact(&served);
}

#[test]
fn read_only_folders_fail_start() {
    common::init();
    let model_len = std::fs::metadata(&common::model().path).unwrap().len();
    let disk = Tmpfs::mount("fault-read-only", model_len + (4 << 20));
    let served = serve_test_model(&disk.path);
    std::fs::create_dir_all(disk.path.join("store")).unwrap();
    disk.remount_read_only();
    let writable = fresh_dir("fault-read-only-rw");

    for (store, model, expected) in [
        (writable.join("store"), served.clone(), "is not writable"),
        (
            disk.path.join("store"),
            writable.join("m.safetensors"),
            "Cannot use frame store",
        ),
    ] {
        let (pipeline, _src, _) = trainer_pipeline(&format!(
            "store-location={} model={} backbone={}",
            store.display(),
            model.display(),
            common::backbone_path().display()
        ));
        let bus = pipeline.bus().unwrap();
        assert!(pipeline.set_state(gst::State::Paused).is_err());
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .expect("an error message");
        let gst::MessageView::Error(e) = msg.view() else {
            unreachable!()
        };
        let text = e.error().to_string();
        assert!(text.contains(expected), "{text}");
        pipeline.set_state(gst::State::Null).unwrap();
    }
    assert_model_intact(&served);
}

#[test]
fn stop_cancels_training_promptly() {
    let dir = fresh_dir("fault-stop");
    let served = serve_test_model(&dir);
    let (pipeline, src, train) = trainer_pipeline(&format!(
        "store-location={} model={} min-frames=30 train-every-frames=30 epochs=500 batch-size=8 \
         holdout-every=4",
        dir.join("store").display(),
        served.display()
    ));
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    push_frames(&src, 44, 0);
    wait_stored(&train, 30, 1);
    let mut seen = Seen::default();
    wait_for(
        &bus,
        "funad-train-progress",
        Duration::from_secs(300),
        &mut seen,
        |s| s.get::<String>("phase").unwrap() == "train",
    );
    assert!(train.property::<bool>("training"));

    let started = Instant::now();
    pipeline.set_state(gst::State::Null).unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert!(!dir.join("line.v000002.safetensors").exists());
    assert!(
        !dir.join("store/.training").exists(),
        "the training snapshot is removed"
    );
    assert_model_intact(&served);
    assert!(assert_store_readable(&dir.join("store")) >= 30);
}
