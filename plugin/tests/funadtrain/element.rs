//! `funadtrain` as an element: settings errors, the frame store across
//! restarts, the acceptance gate, the `train` and `rollback` signals and
//! `pin-version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gst::prelude::*;

use funad::repo::ModelRepo;
use funad::store::{FrameStore, Policy, StoreConfig};

use crate::common::{self, mtd_images, spread};
use crate::support::{fresh_dir, rgb_buffer, rgb_caps, wait_for, Seen};

/// Builds `appsrc ! funadtrain` with the given funadtrain properties.
pub fn trainer_pipeline(props: &str) -> (gst::Pipeline, gst_app::AppSrc, gst::Element) {
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time ! funadtrain name=train device=cpu queue-frames=256 {props}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_caps(Some(&rgb_caps()));
    let train = pipeline.by_name("train").unwrap();
    (pipeline, src, train)
}

/// Pushes `count` real MTD frames, normal ones with a crack every tenth.
pub fn push_frames(src: &gst_app::AppSrc, count: usize, first: u64) {
    let good = spread(&mtd_images("train/good"), count);
    let cracks = mtd_images("test/crack");
    for i in 0..count {
        let path = if i % 10 == 9 {
            &cracks[i / 10 % cracks.len()]
        } else {
            &good[i % good.len()]
        };
        src.push_buffer(rgb_buffer(path, first + i as u64)).unwrap();
    }
}

/// Waits until the writer has stored `stored` frames and held out `held`.
pub fn wait_stored(train: &gst::Element, stored: u32, held: u32) {
    for _ in 0..600 {
        if train.property::<u32>("stored-frames") >= stored
            && train.property::<u32>("held-out-frames") >= held
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "store holds {} frames and {} held out, expected {stored} and {held}",
        train.property::<u32>("stored-frames"),
        train.property::<u32>("held-out-frames")
    );
}

/// Sends EOS and waits until it reaches the sink.
pub fn play_to_eos(pipeline: &gst::Pipeline, src: &gst_app::AppSrc) {
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS within 120 s");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
}

/// Frames in a store folder.
fn store_len(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count()
}

/// Sets PAUSED, expects failure and returns the error text.
fn start_error(props: &str) -> String {
    let (pipeline, _src, _) = trainer_pipeline(props);
    let bus = pipeline.bus().unwrap();
    assert!(
        pipeline.set_state(gst::State::Paused).is_err(),
        "{props} started"
    );
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    pipeline.set_state(gst::State::Null).unwrap();
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    e.error().to_string()
}

/// Copies the test model to `dir/line.safetensors` as kept versions
/// `versions` and serves the last one.
pub fn seed_versions(dir: &Path, versions: &[u64]) -> PathBuf {
    let served = dir.join("line.safetensors");
    let repo = ModelRepo::new(&served, 5).unwrap();
    for &v in versions {
        let mut d = funad::Detector::load(&common::model().path, None, tch::Device::Cpu).unwrap();
        d.set_version(v);
        repo.archive(&d, false).unwrap();
    }
    repo.serve(*versions.last().unwrap()).unwrap();
    served
}

#[test]
fn settings_errors_name_the_property_and_the_fix() {
    let dir = fresh_dir("element-errors");
    let backbone = common::backbone_path().display().to_string();
    let model = dir.join("m.safetensors").display().to_string();
    let store = dir.join("store").display().to_string();

    let text = start_error(&format!("model={model} backbone={backbone}"));
    assert!(text.contains("store-location"), "{text}");
    let text = start_error(&format!("store-location={store} backbone={backbone}"));
    assert!(text.contains("set model"), "{text}");
    let text = start_error(&format!("store-location={store} model={model}"));
    assert!(text.contains("backbone property"), "{text}");
    let text = start_error(&format!(
        "store-location={store} model={model} backbone={backbone} train-at=25:00"
    ));
    assert!(
        text.contains("train-at \"25:00\"") && text.contains("HH:MM"),
        "{text}"
    );
    let text = start_error(&format!(
        "store-location={store} model={model} backbone={backbone} holdout-frames=5 gate-min-frames=8"
    ));
    assert!(
        text.contains("gate-min-frames 8") && text.contains("holdout-frames 5"),
        "{text}"
    );
    let text = start_error(&format!(
        "store-location={store} model={dir}/model backbone={backbone}",
        dir = dir.display()
    ));
    assert!(text.contains("no file extension"), "{text}");
    let text = start_error(&format!(
        "store-location={store} model={model} backbone={dir}/absent.safetensors",
        dir = dir.display()
    ));
    assert!(
        text.contains("absent.safetensors") && text.contains("not found"),
        "{text}"
    );
    let text = start_error(&format!(
        "store-location={store} model={model} backbone={backbone} max-frames=50 min-frames=60"
    ));
    assert!(
        text.contains("min-frames 60") && text.contains("max-frames 50"),
        "{text}"
    );
    let text = start_error(&format!(
        "store-location={store} model={model} backbone={backbone} pin-version=4"
    ));
    assert!(
        text.contains("pin-version 4") && text.contains("not kept"),
        "{text}"
    );
}

#[test]
fn store_survives_restart_within_bounds() {
    let dir = fresh_dir("element-store");
    let props = format!(
        "store-location={} model={} backbone={} train-every-frames=0 min-frames=30 max-frames=30 holdout-every=5 \
         holdout-frames=4 gate-min-frames=4 queue-frames=128",
        dir.join("store").display(),
        dir.join("m.safetensors").display(),
        common::backbone_path().display()
    );

    let (pipeline, src, train) = trainer_pipeline(&props);
    pipeline.set_state(gst::State::Playing).unwrap();
    push_frames(&src, 25, 0);
    play_to_eos(&pipeline, &src);
    wait_stored(&train, 20, 4);
    assert_eq!(train.property::<u32>("stored-frames"), 20);
    assert_eq!(train.property::<u64>("dropped-frames"), 0);
    pipeline.set_state(gst::State::Null).unwrap();

    // A new pipeline finds the 20 frames again and keeps sampling into 30 slots.
    let (pipeline, src, train) = trainer_pipeline(&props);
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(train.property::<u32>("stored-frames"), 20);
    push_frames(&src, 50, 100);
    play_to_eos(&pipeline, &src);
    // Stopping stores every frame still queued for the writer.
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(train.property::<u64>("dropped-frames"), 0);

    let store = FrameStore::open(
        &dir.join("store"),
        StoreConfig {
            max_frames: 30,
            max_bytes: u64::MAX,
            policy: Policy::Reservoir,
            seed: 0,
        },
    )
    .unwrap();
    assert_eq!(store.len(), 30);
    assert_eq!(store_len(&dir.join("store/holdout")), 4);
    // 20 + 40 frames offered to the training store over both runs.
    assert_eq!(store.seen(), 60);
    for path in store.paths() {
        let img = image::open(&path).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (224, 224),
            "{}",
            path.display()
        );
    }
}

#[test]
fn gate_rejects_unjudgeable_model() {
    let dir = fresh_dir("element-gate");
    let model = dir.join("line.safetensors");
    let (pipeline, src, train) = trainer_pipeline(&format!(
        "store-location={} model={} backbone={} min-frames=20 train-every-frames=0 epochs=1 \
         batch-size=8 holdout-every=5 holdout-frames=20 gate-min-frames=20",
        dir.join("store").display(),
        model.display(),
        common::backbone_path().display()
    ));
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    assert!(
        !train.emit_by_name::<bool>("train", &[]),
        "train must refuse with an empty store"
    );
    push_frames(&src, 25, 0);
    wait_stored(&train, 20, 5);
    assert!(train.emit_by_name::<bool>("train", &[]));
    let mut seen = Seen::default();
    let result = wait_for(
        &bus,
        "funad-train-result",
        Duration::from_secs(600),
        &mut seen,
        |_| true,
    );
    assert!(!result.get::<bool>("accepted").unwrap());
    assert!(!result.get::<bool>("served").unwrap());
    assert_eq!(result.get::<String>("trigger").unwrap(), "signal");
    let reason = result.get::<String>("reason").unwrap();
    assert!(reason.contains("only 5 held-out frames"), "{reason}");
    assert_eq!(train.property::<u64>("rejected-models"), 1);
    assert_eq!(train.property::<u64>("served-version"), 0);
    pipeline.set_state(gst::State::Null).unwrap();

    assert!(!model.exists(), "a rejected model must not be served");
    let kept = dir.join("line.v000001.rejected.safetensors");
    let meta = funad::Detector::read_meta(&kept).expect("the rejected model is kept and readable");
    assert_eq!(meta.version, 1);
    assert_eq!(meta.train_images, 20);
}

#[test]
fn rollback_and_pin_version_choose_the_served_model() {
    let dir = fresh_dir("element-pin");
    let served = seed_versions(&dir, &[1, 2, 3]);
    let (pipeline, _src, train) = trainer_pipeline(&format!(
        "store-location={} model={} min-frames=1000",
        dir.join("store").display(),
        served.display()
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    let served_version = || funad::Detector::read_meta(&served).unwrap().version;
    assert_eq!(train.property::<u64>("served-version"), 3);

    assert!(train.emit_by_name::<bool>("rollback", &[]));
    assert_eq!(served_version(), 2);
    assert_eq!(train.property::<u64>("pin-version"), 2);
    assert!(train.emit_by_name::<bool>("rollback", &[]));
    assert_eq!(served_version(), 1);
    assert!(
        !train.emit_by_name::<bool>("rollback", &[]),
        "no version before 1"
    );
    assert_eq!(served_version(), 1);

    train.set_property("pin-version", 3u64);
    assert_eq!(served_version(), 3);
    assert_eq!(train.property::<u64>("served-version"), 3);
    train.set_property("pin-version", 9u64);
    assert_eq!(
        served_version(),
        3,
        "a version that is not kept changes nothing"
    );
    train.set_property("pin-version", 1u64);
    train.set_property("pin-version", 0u64);
    assert_eq!(
        served_version(),
        3,
        "unpinning serves the newest accepted version"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn interval_schedule_starts_training() {
    let dir = fresh_dir("element-interval");
    let (pipeline, src, train) = trainer_pipeline(&format!(
        "store-location={} model={} backbone={} min-frames=20 train-every-frames=0 \
         train-interval=2 epochs=1 batch-size=8 holdout-every=5 holdout-frames=10 \
         gate-min-frames=5 search-precision=bfloat16 score-bank-ranking=distance \
         score-bank-radius=1 score-bank-features=3000",
        dir.join("store").display(),
        dir.join("line.safetensors").display(),
        common::backbone_path().display()
    ));
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    push_frames(&src, 30, 0);
    let mut seen = Seen::default();
    let result = wait_for(
        &bus,
        "funad-train-result",
        Duration::from_secs(600),
        &mut seen,
        |_| true,
    );
    assert_eq!(result.get::<String>("trigger").unwrap(), "interval");
    // The trained model, accepted or not, searches its bank in bfloat16,
    // and so did its training.
    let path: String = result.get("path").unwrap();
    let meta = funad::Detector::read_meta(Path::new(&path)).unwrap();
    assert_eq!(
        meta.train.score_bank_precision,
        funad::knn::Precision::Bfloat16
    );
    assert_eq!(
        meta.train.train_search_precision,
        funad::knn::Precision::Bfloat16
    );
    // The scoring-bank properties reach the model too.
    assert_eq!(
        meta.train.score_bank_ranking,
        funad::head::BankRanking::Distance
    );
    assert_eq!(meta.train.score_bank_radius, Some(1));
    assert_eq!(meta.train.score_bank_features, 3000);
    assert_eq!(
        train
            .property_value("score-bank-ranking")
            .get::<gstfunad::FunadBankRanking>()
            .unwrap(),
        gstfunad::FunadBankRanking::Distance
    );
    assert_eq!(
        train
            .property_value("search-precision")
            .get::<gstfunad::FunadSearchPrecision>()
            .unwrap(),
        gstfunad::FunadSearchPrecision::Bfloat16
    );

    let phases: Vec<String> = seen
        .messages
        .iter()
        .filter(|s| s.name() == "funad-train-progress")
        .map(|s| s.get::<String>("phase").unwrap())
        .collect();
    for phase in ["snapshot", "extract", "train", "gate", "save"] {
        assert!(
            phases.iter().any(|p| p == phase),
            "no {phase} progress in {phases:?}"
        );
    }
    let percents: Vec<f64> = seen
        .messages
        .iter()
        .filter(|s| s.name() == "funad-train-progress")
        .map(|s| s.get::<f64>("percent").unwrap())
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");

    assert_eq!(train.property::<u64>("trainings"), 1);
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn second_trainer_on_one_model_fails() {
    let dir = fresh_dir("element-lock");
    let props = |store: &str| {
        format!(
            "store-location={} model={} backbone={} min-frames=1000",
            dir.join(store).display(),
            dir.join("line.safetensors").display(),
            common::backbone_path().display()
        )
    };
    let (first, _src, _) = trainer_pipeline(&props("a"));
    first.set_state(gst::State::Playing).unwrap();
    let text = start_error(&props("b"));
    assert!(
        text.contains("already trained by another funadtrain"),
        "{text}"
    );
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    first.set_state(gst::State::Null).unwrap();

    // Stopping the first releases the lock.
    let (second, _src, _) = trainer_pipeline(&props("b"));
    second.set_state(gst::State::Playing).unwrap();
    second.set_state(gst::State::Null).unwrap();
}

#[test]
fn unreadable_frame_is_skipped_and_deleted() {
    let dir = fresh_dir("element-bad-frame");
    let store = dir.join("store");
    // Every fifth frame is held out, which puts all three cracks (frames 10,
    // 20 and 30) among the six held-out frames. This test is about the bad
    // frame, not the model's quality, so the gate's share limit is lifted:
    // one normal frame flagged beside the cracks would otherwise reject it.
    let props = format!(
        "store-location={} model={} backbone={} min-frames=20 train-every-frames=0 epochs=1 \
         batch-size=8 holdout-every=5 holdout-frames=10 gate-min-frames=5 gate-max-ng-share=1.0",
        store.display(),
        dir.join("line.safetensors").display(),
        common::backbone_path().display()
    );
    let (pipeline, src, train) = trainer_pipeline(&props);
    pipeline.set_state(gst::State::Playing).unwrap();
    push_frames(&src, 30, 0);
    play_to_eos(&pipeline, &src);
    wait_stored(&train, 24, 6);
    pipeline.set_state(gst::State::Null).unwrap();

    // Keep a frame's PNG header but cut its pixel data: opening the store
    // reads only headers, so the frame stays until a training decodes it.
    let victim = store.join("000000000003.png");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();

    let (pipeline, _src, train) = trainer_pipeline(&props);
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(train.property::<u32>("stored-frames"), 24);
    assert!(train.emit_by_name::<bool>("train", &[]));
    let mut seen = Seen::default();
    let result = wait_for(
        &bus,
        "funad-train-result",
        Duration::from_secs(600),
        &mut seen,
        |_| true,
    );
    assert!(result.get::<bool>("accepted").unwrap(), "{result}");
    assert!(
        seen.warnings
            .iter()
            .any(|w| w.contains("000000000003.png") && w.contains("unreadable")),
        "{seen:?}"
    );
    assert_eq!(train.property::<u32>("stored-frames"), 23);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(!victim.exists(), "the unreadable frame is deleted");
    let meta = funad::Detector::read_meta(&dir.join("line.safetensors")).unwrap();
    assert_eq!(meta.train_images, 23);
}

#[test]
fn corrupt_served_file_is_restored() {
    let dir = fresh_dir("element-restore");
    let served = seed_versions(&dir, &[1, 2]);
    std::fs::write(&served, b"not a model").unwrap();
    let (pipeline, _src, train) = trainer_pipeline(&format!(
        "store-location={} model={} min-frames=1000",
        dir.join("store").display(),
        served.display()
    ));
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(train.property::<u64>("served-version"), 2);
    let warning = bus
        .pop_filtered(&[gst::MessageType::Warning])
        .expect("a warning about the corrupt file");
    let gst::MessageView::Warning(w) = warning.view() else {
        unreachable!()
    };
    assert!(
        w.error().to_string().contains("kept version 2 is served"),
        "{}",
        w.error()
    );
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(funad::Detector::read_meta(&served).unwrap().version, 2);
}
