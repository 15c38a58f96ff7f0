//! Frame rate of the scoring branch while funadtrain trains, against the same
//! pipeline without training, in one run.
//!
//! ```text
//! cargo run --release --example bench_train -- MODEL IMAGES_DIR [FRAMES] [ROUNDS]
//! ```
//!
//! Both pipelines are `appsrc ! tee ! queue ! funadscore ! appsink`; the
//! training one adds `tee. ! queue ! funadtrain`, whose `train` signal starts
//! a long training once 30 frames are stored, at the element's default nice
//! value 10 and, for comparison, at 0. The rate counts only frames scored
//! while that training runs. Rounds alternate the two pipelines, and
//! the ratio of their median rates is printed.
//!
//! A last run lets funadtrain write over the scorer's own model file with a
//! short training. It prints the gap between the last frame of the old
//! version and the first of the new one, against the median gap between frames.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gst::prelude::*;

const SIDE: u32 = 224;

fn frames(dir: &Path, count: usize) -> Result<Vec<gst::Buffer>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("png" | "jpg" | "jpeg")
            )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} has no PNG or JPEG images", dir.display());
    }
    let mut out = Vec::new();
    for i in 0..count {
        let img = image::open(&files[i % files.len()])?
            .resize_exact(SIDE, SIDE, image::imageops::FilterType::Triangle)
            .to_rgb8();
        let mut buffer = gst::Buffer::from_mut_slice(img.into_raw());
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(100 * i as u64));
        out.push(buffer);
    }
    Ok(out)
}

/// Caps of the `SIDE`×`SIDE` RGB frames at 10 frames/s.
fn rgb_caps() -> Result<gst::Caps> {
    Ok(
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, SIDE, SIDE)
            .fps(gst::Fraction::new(10, 1))
            .build()?
            .to_caps()?,
    )
}

/// Waits up to 10 minutes for EOS, failing on a pipeline error.
fn wait_for_eos(pipeline: &gst::Pipeline) -> Result<()> {
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(600)) {
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => bail!("pipeline error: {}", e.error()),
            _ => {}
        }
    }
    bail!("no EOS within 10 minutes")
}

/// Scoring rate in frames/s; with `train`, over the frames scored while a training ran.
fn run(model: &Path, frames: &[gst::Buffer], train: Option<i32>) -> Result<f64> {
    let store = tempfile::tempdir()?;
    let branch = if let Some(nice) = train {
        format!(
            "t. ! queue ! funadtrain name=train store-location={} model={}/new.safetensors \
             backbone={} device=cpu min-frames=30 train-every-frames=0 epochs=1000 batch-size=8 \
             holdout-every=4 holdout-frames=10 gate-min-frames=5 nice={nice}",
            store.path().display(),
            store.path().display(),
            funad::Detector::read_meta(model)?.backbone_path.display()
        )
    } else {
        String::new()
    };
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time block=true max-buffers=4 ! tee name=t \
         t. ! queue ! funadscore model={} device=cpu post-messages=false ! \
         appsink name=out sync=false emit-signals=true {branch}",
        model.display()
    ))?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_caps(Some(&rgb_caps()?));
    let trainer = pipeline.by_name("train");
    let training = Arc::new(AtomicBool::new(train.is_none()));
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    {
        let times = times.clone();
        let training = training.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let _ = s.pull_sample();
                    if training.load(Ordering::SeqCst) {
                        times.lock().unwrap().push(Instant::now());
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    pipeline.set_state(gst::State::Playing)?;
    let mut started = false;
    for (i, buffer) in frames.iter().enumerate() {
        src.push_buffer(buffer.clone())?;
        if let Some(t) = trainer.as_ref().filter(|_| !started && i >= 40) {
            if t.emit_by_name::<bool>("train", &[]) {
                // Count from the moment the training thread reports it runs.
                for _ in 0..200 {
                    if t.property::<bool>("training") {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                training.store(true, Ordering::SeqCst);
                started = true;
            }
        }
    }
    src.end_of_stream()?;
    wait_for_eos(&pipeline)?;
    if let Some(t) = &trainer {
        if !t.property::<bool>("training") {
            bail!("the training ended before the scoring run; raise epochs");
        }
    }
    pipeline.set_state(gst::State::Null)?;
    let times = times.lock().unwrap();
    // Skip the first frames, scored while the pipeline and the training warm up.
    let skip = 5.min(times.len() / 4);
    let times = &times[skip..];
    if times.len() < 10 {
        bail!("only {} frames were timed; use more frames", times.len());
    }
    let span = times[times.len() - 1]
        .duration_since(times[0])
        .as_secs_f64();
    Ok((times.len() - 1) as f64 / span)
}

/// Largest gap between frames at a model swap, and the median gap, in seconds.
fn swap_gap(model: &Path, frames: &[gst::Buffer]) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let served = dir.path().join("line.safetensors");
    std::fs::copy(model, &served)?;
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time block=true max-buffers=4 ! tee name=t \
         t. ! queue ! funadscore name=score model={served} device=cpu post-messages=false ! \
         appsink name=out sync=false emit-signals=true \
         t. ! queue ! funadtrain name=train store-location={store} model={served} device=cpu \
         min-frames=30 train-every-frames=0 epochs=2 batch-size=8 holdout-every=4 nice=0 \
         holdout-frames=10 gate-min-frames=5",
        served = served.display(),
        store = dir.path().join("store").display(),
    ))?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    src.set_caps(Some(&rgb_caps()?));
    let trainer = pipeline.by_name("train").unwrap();
    let seen: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    {
        let seen = seen.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let version = sample
                        .buffer()
                        .and_then(|b| b.meta::<gstfunad::FunadMeta>().map(|m| m.model_version()))
                        .unwrap_or(0);
                    seen.lock().unwrap().push((Instant::now(), version));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    pipeline.set_state(gst::State::Playing)?;
    let mut requested = false;
    for (i, buffer) in frames.iter().enumerate() {
        src.push_buffer(buffer.clone())?;
        if !requested && i >= 40 {
            requested = trainer.emit_by_name::<bool>("train", &[]);
        }
    }
    src.end_of_stream()?;
    wait_for_eos(&pipeline)?;
    pipeline.set_state(gst::State::Null)?;
    let seen = seen.lock().unwrap();
    let first_version = seen.first().map_or(0, |s| s.1);
    let Some(at) = seen.iter().position(|s| s.1 != first_version) else {
        bail!("no model swap happened during the run; use more frames");
    };
    let mut gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0).as_secs_f64())
        .collect();
    let at_swap = gaps[at - 1];
    gaps.sort_by(f64::total_cmp);
    Ok((at_swap, gaps[gaps.len() / 2]))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        bail!("usage: bench_train MODEL IMAGES_DIR [FRAMES] [ROUNDS]");
    }
    let model = PathBuf::from(&args[1]);
    let count: usize = args.get(3).map_or(Ok(160), |s| s.parse())?;
    let rounds: usize = args.get(4).map_or(Ok(2), |s| s.parse())?;
    gst::init()?;
    gstfunad::plugin_register_static()?;
    let frames = frames(Path::new(&args[2]), count)?;
    let (mut plain, mut low, mut normal) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let a = run(&model, &frames, None)?;
        let b = run(&model, &frames, Some(10))?;
        let c = run(&model, &frames, Some(0))?;
        println!(
            "round {round}: scoring alone {a:.2} frames/s, while training at nice 10 {b:.2}, \
             at nice 0 {c:.2}"
        );
        plain.push(a);
        low.push(b);
        normal.push(c);
    }
    let (a, b, c) = (median(plain), median(low), median(normal));
    println!(
        "median: alone {a:.2} frames/s; while training at nice 10 {b:.2} (ratio {:.3}), \
         at nice 0 {c:.2} (ratio {:.3})",
        b / a,
        c / a
    );
    // The swap run needs time for a whole training: play the frames three times.
    let long: Vec<gst::Buffer> = (0..3 * frames.len())
        .map(|i| {
            let mut b = frames[i % frames.len()].copy();
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(100 * i as u64));
            b
        })
        .collect();
    let (gap, typical) = swap_gap(&model, &long)?;
    println!(
        "model swap: {:.0} ms between the last frame of the old version and the first of \
         the new one, median gap {:.0} ms, ratio {:.2}",
        1000.0 * gap,
        1000.0 * typical,
        gap / typical
    );
    Ok(())
}
