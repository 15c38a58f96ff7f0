//! The threads of `funadtrain`: the frame writer and the trainer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use gst::glib;
use gst::prelude::*;

use funad::fit::{self, FitEvent};
use funad::gate::{self, GateConfig, GateReport};
use funad::repo::ModelRepo;
use funad::store::{Frame, FrameStore, Offered};
use funad::train::Cancelled;
use funad::{Backbone, Detector, FeatureConfig, TrainConfig};

use crate::watch;

pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "funadtrain",
        gst::DebugColorFlags::empty(),
        Some("FUN-AD retraining on live frames"),
    )
});

pub const PROGRESS_STRUCTURE_NAME: &str = "funad-train-progress";
pub const RESULT_STRUCTURE_NAME: &str = "funad-train-result";
pub const SERVED_STRUCTURE_NAME: &str = "funad-train-served";

/// Seconds between two progress messages within one phase.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Images per forward pass when the gate scores held-out frames.
const GATE_BATCH: usize = 8;

/// Cause of a training run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Frames,
    Interval,
    Daily,
    Signal,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Frames => "frames",
            Trigger::Interval => "interval",
            Trigger::Daily => "daily",
            Trigger::Signal => "signal",
        }
    }
}

/// Settings that the threads read, fixed at start.
#[derive(Clone, Debug)]
pub struct Config {
    pub store_dir: PathBuf,
    pub holdout_every: u64,
    pub backbone: Option<PathBuf>,
    pub device: tch::Device,
    pub train_every_frames: u64,
    pub train_interval: Option<Duration>,
    /// Daily start time, hours and minutes of local time.
    pub train_at: Option<(u32, u32)>,
    pub min_frames: usize,
    pub train: TrainConfig,
    pub nice: i32,
    pub gate: GateConfig,
}

/// Counters that the properties show.
#[derive(Default)]
pub struct Counters {
    pub stored: AtomicU64,
    pub holdout: AtomicU64,
    pub failed: AtomicU64,
    pub since_training: AtomicU64,
    pub trainings: AtomicU64,
    pub rejected: AtomicU64,
}

/// State shared by the element and its threads between start and stop.
pub struct Shared {
    pub element: glib::WeakRef<super::FunadTrain>,
    pub config: Config,
    pub store: Mutex<FrameStore>,
    pub holdout: Mutex<FrameStore>,
    pub repo: ModelRepo,
    pub counters: Counters,
    /// Set by stop(): the threads end and a running training is cancelled.
    pub stop: AtomicBool,
    pub training: AtomicBool,
    /// Pending training request, and the condition the trainer waits on.
    pub trigger: Mutex<Option<Trigger>>,
    pub wake: Condvar,
    pub served_version: AtomicU64,
    /// Version pinned in service; 0 follows each accepted training.
    pub pinned: AtomicU64,
    /// Serialises writes of the served model file.
    pub serve_lock: Mutex<()>,
}

impl Shared {
    pub fn request(&self, trigger: Trigger) {
        let mut slot = self.trigger.lock().unwrap();
        if slot.is_none() {
            *slot = Some(trigger);
        }
        self.wake.notify_all();
    }

    pub fn post(&self, structure: gst::Structure) {
        if let Some(element) = self.element.upgrade() {
            let msg = gst::message::Element::builder(structure)
                .src(&element)
                .build();
            let _ = element.post_message(msg);
        }
    }

    pub fn warn(&self, kind: gst::ResourceError, text: &str) {
        if let Some(element) = self.element.upgrade() {
            gst::warning!(CAT, obj = element, "{text}");
            let msg = gst::message::Warning::builder(kind, text)
                .src(&element)
                .build();
            let _ = element.post_message(msg);
        }
    }

    /// Copies kept `version` over the served model file and wakes the scorers.
    pub fn serve(&self, version: u64, reason: &str) -> Result<()> {
        let _guard = self.serve_lock.lock().unwrap();
        self.repo.serve(version)?;
        self.served_version.store(version, Ordering::SeqCst);
        watch::notify_model_written();
        if let Some(element) = self.element.upgrade() {
            gst::info!(
                CAT,
                obj = element,
                "Serving model version {version} ({reason}) at {}",
                self.repo.served_path().display()
            );
        }
        self.post(
            gst::Structure::builder(SERVED_STRUCTURE_NAME)
                .field("version", version)
                .field("reason", reason)
                .build(),
        );
        Ok(())
    }

    /// Newest accepted version on disk, if any.
    pub fn newest_accepted(&self) -> Result<Option<u64>> {
        Ok(self
            .repo
            .versions()?
            .iter()
            .filter(|v| !v.rejected)
            .map(|v| v.version)
            .max())
    }
}

/// Stores the frames that the streaming thread queues, until the queue closes.
pub fn writer_loop(shared: Arc<Shared>, frames: Receiver<Frame>) {
    let mut offered: u64 = 0;
    for frame in frames {
        offered += 1;
        let to_holdout =
            shared.config.holdout_every > 0 && offered % shared.config.holdout_every == 0;
        let result = if to_holdout {
            shared.holdout.lock().unwrap().offer(&frame)
        } else {
            shared.store.lock().unwrap().offer(&frame)
        };
        match result {
            Ok(Offered::Stored { .. }) if to_holdout => {
                shared.counters.holdout.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Offered::Stored { .. }) => {
                shared.counters.stored.fetch_add(1, Ordering::Relaxed);
                let since = shared
                    .counters
                    .since_training
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                let every = shared.config.train_every_frames;
                if every > 0 && since >= every {
                    shared.request(Trigger::Frames);
                }
            }
            Ok(Offered::Skipped) => {}
            Err(err) => {
                let failed = shared.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                // The first failure and then every 100th, so a full disk does not flood the bus.
                if failed == 1 || failed % 100 == 0 {
                    let dir = if to_holdout {
                        shared.config.store_dir.join("holdout")
                    } else {
                        shared.config.store_dir.clone()
                    };
                    shared.warn(
                        gst::ResourceError::Write,
                        &format!(
                            "Failed to store a frame in {} ({failed} failed so far): {err:#}; \
                             frames are not stored until this is fixed (free disk space, or \
                             lower max-bytes), scoring goes on",
                            dir.display()
                        ),
                    );
                }
            }
        }
    }
    for store in [&shared.store, &shared.holdout] {
        if let Err(err) = store.lock().unwrap().save_state() {
            shared.warn(gst::ResourceError::Write, &format!("{err:#}"));
        }
    }
}

// NOTE: on a quiet 2-core machine, scoring still ran at about half its rate
// while a nice-10 training ran (docs/benchmarks.md); the nice value alone does
// not reserve the cores for scoring.
/// Lowers the scheduling priority of the calling thread (and of the
/// threads it starts, which inherit it) to `nice`.
fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: plain system calls on the calling thread's own id.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Next local time at `hour:minute` strictly after `now`.
pub fn next_daily(now: chrono::DateTime<chrono::Local>, hour: u32, minute: u32) -> Instant {
    use chrono::{Duration as ChronoDuration, TimeZone};
    let mut day = now.date_naive();
    loop {
        let naive = day.and_hms_opt(hour, minute, 0).expect("valid time of day");
        // A time skipped by a daylight-saving change has no local instant; try the next day.
        if let Some(at) = chrono::Local.from_local_datetime(&naive).earliest() {
            if at > now {
                let wait = (at - now).to_std().unwrap_or_default();
                return Instant::now() + wait;
            }
        }
        day += ChronoDuration::days(1);
    }
}

/// Waits for triggers and runs one training at a time, until stop.
pub fn trainer_loop(shared: Arc<Shared>) {
    let cfg = shared.config.clone();
    if let Err(err) = set_thread_nice(cfg.nice) {
        shared.warn(
            gst::ResourceError::Settings,
            &format!(
                "Cannot lower the trainer thread's priority to nice {}: {err}; training runs \
                 at normal priority",
                cfg.nice
            ),
        );
    }
    let mut vit: Option<Arc<Backbone>> = None;
    let mut next_interval = cfg.train_interval.map(|d| Instant::now() + d);
    let mut next_at = cfg
        .train_at
        .map(|(h, m)| next_daily(chrono::Local::now(), h, m));
    loop {
        let requested = {
            let slot = shared.trigger.lock().unwrap();
            let (mut slot, _) = shared
                .wake
                .wait_timeout_while(slot, Duration::from_millis(500), |t| {
                    t.is_none() && !shared.stop.load(Ordering::SeqCst)
                })
                .unwrap();
            slot.take()
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let now = Instant::now();
        let trigger = if let Some(t) = requested {
            Some(t)
        } else if next_interval.is_some_and(|at| now >= at) {
            Some(Trigger::Interval)
        } else if next_at.is_some_and(|at| now >= at) {
            Some(Trigger::Daily)
        } else {
            None
        };
        let Some(trigger) = trigger else { continue };
        match trigger {
            Trigger::Interval => next_interval = cfg.train_interval.map(|d| now + d),
            Trigger::Daily => {
                next_at = cfg
                    .train_at
                    .map(|(h, m)| next_daily(chrono::Local::now(), h, m))
            }
            _ => {}
        }
        let frames = shared.store.lock().unwrap().len();
        let element = shared.element.upgrade();
        if frames < cfg.min_frames {
            if let Some(element) = &element {
                gst::info!(
                    CAT,
                    obj = element,
                    "Not training on {} trigger: {frames} stored frames, min-frames is {}",
                    trigger.as_str(),
                    cfg.min_frames
                );
            }
            continue;
        }
        // A scheduled training waits for enough held-out frames, because the
        // gate would reject its model; an explicit request runs regardless.
        let held_out = shared.holdout.lock().unwrap().len();
        if trigger != Trigger::Signal && held_out < cfg.gate.min_frames {
            if let Some(element) = &element {
                gst::info!(
                    CAT,
                    obj = element,
                    "Not training on {} trigger yet: {held_out} held-out frames, the gate \
                     needs gate-min-frames {}",
                    trigger.as_str(),
                    cfg.gate.min_frames
                );
            }
            // Retry once more frames arrive.
            if trigger == Trigger::Frames {
                shared
                    .counters
                    .since_training
                    .store(cfg.train_every_frames.saturating_sub(1), Ordering::SeqCst);
            }
            continue;
        }
        drop(element);
        shared.training.store(true, Ordering::SeqCst);
        shared.counters.since_training.store(0, Ordering::SeqCst);
        // A libtorch panic fails this training only, so the loop goes on to
        // the next trigger.
        let outcome = funad::catch_torch_panic(|| run_training(&shared, trigger, &mut vit))
            .unwrap_or_else(|failure| Err(anyhow::anyhow!(failure)));
        shared.training.store(false, Ordering::SeqCst);
        if let Err(err) = outcome {
            if err.is::<Cancelled>() || shared.stop.load(Ordering::SeqCst) {
                if let Some(element) = shared.element.upgrade() {
                    gst::info!(CAT, obj = element, "Training cancelled");
                }
                post_failure(&shared, trigger, frames, "cancelled: the element stopped");
                break;
            }
            shared.warn(
                gst::ResourceError::Failed,
                &format!(
                    "Training failed: {err:#}; the model in service (version {}) is unchanged",
                    shared.served_version.load(Ordering::SeqCst)
                ),
            );
            post_failure(
                &shared,
                trigger,
                frames,
                &format!("training failed: {err:#}"),
            );
        }
    }
}

/// Posts the `funad-train-result` of a training that produced no model.
fn post_failure(shared: &Shared, trigger: Trigger, frames: usize, reason: &str) {
    shared.post(
        gst::Structure::builder(RESULT_STRUCTURE_NAME)
            .field("version", 0u64)
            .field("accepted", false)
            .field("served", false)
            .field("reason", reason)
            .field("path", "")
            .field("trigger", trigger.as_str())
            .field("frames", frames as u32)
            .field("holdout-frames", 0u32)
            .field("ng-share", -1.0f64)
            .field("ng-share-current", -1.0f64)
            .field("seconds", 0.0f64)
            .build(),
    );
}

/// Posts `funad-train-progress` messages, at phase changes and at most
/// every [`PROGRESS_EVERY`] within a phase.
struct ProgressReporter<'a> {
    shared: &'a Shared,
    version: u64,
    frames: usize,
    phase: &'static str,
    last: Instant,
}

impl ProgressReporter<'_> {
    fn report(
        &mut self,
        phase: &'static str,
        percent: f64,
        epoch: usize,
        epochs: usize,
        loss: f64,
    ) {
        let changed = phase != self.phase;
        if !changed && self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.phase = phase;
        self.last = Instant::now();
        if let Some(element) = self.shared.element.upgrade() {
            gst::debug!(
                CAT,
                obj = element,
                "Training version {}: {phase} {percent:.1}%, epoch {epoch}/{epochs}, loss {loss:.4}",
                self.version
            );
        }
        self.shared.post(
            gst::Structure::builder(PROGRESS_STRUCTURE_NAME)
                .field("phase", phase)
                .field("percent", percent)
                .field("epoch", epoch as u32)
                .field("epochs", epochs as u32)
                .field("loss", loss)
                .field("version", self.version)
                .field("frames", self.frames as u32)
                .build(),
        );
    }
}

fn load_backbone(shared: &Shared, cache: &mut Option<Arc<Backbone>>) -> Result<Arc<Backbone>> {
    let path = match &shared.config.backbone {
        Some(p) => p.clone(),
        None => match shared.repo.served_meta()? {
            Some(meta) => meta.backbone_path,
            None => bail!("no backbone: set the backbone property to a weights file"),
        },
    };
    if let Some(vit) = cache.as_ref().filter(|v| v.path() == path) {
        return Ok(vit.clone());
    }
    let vit = Arc::new(
        Backbone::load(&path, shared.config.device)
            .with_context(|| format!("cannot load backbone {}", path.display()))?,
    );
    *cache = Some(vit.clone());
    Ok(vit)
}

fn image_scores(
    detector: &Detector,
    images: &[tch::Tensor],
    stop: &AtomicBool,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(GATE_BATCH) {
        if stop.load(Ordering::SeqCst) {
            return Err(Cancelled.into());
        }
        out.extend(detector.score_images(chunk)?.iter().map(|s| s.image_score));
    }
    Ok(out)
}

/// Loads the model in service for the gate; `None` at cold start.
fn current_model(shared: &Shared, vit: &Arc<Backbone>) -> Option<Detector> {
    let served = shared.repo.served_path();
    if !served.exists() {
        return None;
    }
    let loaded = Detector::load_with_backbone(served, vit.clone())
        .or_else(|_| Detector::load(served, None, shared.config.device));
    match loaded {
        Ok(d) => Some(d),
        Err(err) => {
            shared.warn(
                gst::ResourceError::OpenRead,
                &format!(
                    "The acceptance gate cannot load the model in service {}: {err:#}; \
                     judging the new model alone",
                    served.display()
                ),
            );
            None
        }
    }
}

fn remove_dir(path: &Path) {
    if path.exists() {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Runs one training: snapshot, fit, gate, save and serve.
fn run_training(
    shared: &Shared,
    trigger: Trigger,
    vit_cache: &mut Option<Arc<Backbone>>,
) -> Result<()> {
    let started = Instant::now();
    let cfg = &shared.config;
    let version = shared.repo.next_version()?;
    let snapshot_dir = cfg.store_dir.join(".training");
    let (paths, holdout_paths) = {
        let store = shared.store.lock().unwrap();
        let holdout = shared.holdout.lock().unwrap();
        (
            store.snapshot(&snapshot_dir.join("train"))?,
            holdout.snapshot(&snapshot_dir.join("holdout"))?,
        )
    };
    let mut progress = ProgressReporter {
        shared,
        version,
        frames: paths.len(),
        phase: "",
        last: Instant::now(),
    };
    progress.report("snapshot", 0.0, 0, cfg.train.epochs, -1.0);
    if let Some(element) = shared.element.upgrade() {
        gst::info!(
            CAT,
            obj = element,
            "Training version {version} on {} frames ({} trigger), {} held out",
            paths.len(),
            trigger.as_str(),
            holdout_paths.len()
        );
    }
    let result = (|| -> Result<()> {
        let vit = load_backbone(shared, vit_cache)?;
        let fcfg = match shared.repo.served_meta() {
            Ok(Some(meta)) if meta.backbone.sha256 == vit.id().sha256 => meta.features,
            _ => FeatureConfig::for_backbone(&vit),
        };
        let epochs = cfg.train.epochs;
        let mut unreadable: Vec<PathBuf> = Vec::new();
        let fitted = fit::fit_skipping_unreadable(
            vit.clone(),
            &fcfg,
            &cfg.train,
            &paths,
            Some(&shared.stop),
            &mut |event| match event {
                FitEvent::Extract { done, total } => progress.report(
                    "extract",
                    30.0 * done as f64 / total as f64,
                    0,
                    epochs,
                    -1.0,
                ),
                FitEvent::Train(p) => {
                    let done = (p.epoch - 1) * p.iterations_per_epoch + p.iteration;
                    let total = (p.epochs * p.iterations_per_epoch).max(1);
                    progress.report(
                        "train",
                        30.0 + 60.0 * done as f64 / total as f64,
                        p.epoch,
                        p.epochs,
                        p.loss,
                    )
                }
            },
            &mut |path, err| {
                shared.warn(
                    gst::ResourceError::Read,
                    &format!(
                        "Stored frame {} is unreadable ({err:#}); it is left out of the \
                         training and deleted from the store",
                        path.display()
                    ),
                );
                unreadable.push(path.to_path_buf());
            },
        );
        {
            let mut store = shared.store.lock().unwrap();
            for path in &unreadable {
                if let Err(err) = store.discard(path) {
                    shared.warn(gst::ResourceError::Write, &format!("{err:#}"));
                }
            }
        }
        let mut detector = fitted?;
        detector.set_version(version);

        progress.report("gate", 90.0, epochs, epochs, -1.0);
        let holdout: Vec<tch::Tensor> = holdout_paths
            .iter()
            .map(|p| funad::data::load_image(p))
            .collect::<Result<_>>()?;
        let candidate = image_scores(&detector, &holdout, &shared.stop)?;
        let current = current_model(shared, &vit);
        let current_scores = match &current {
            Some(d) => Some((image_scores(d, &holdout, &shared.stop)?, d.meta().threshold)),
            None => None,
        };
        let report = gate::evaluate(
            &cfg.gate,
            &candidate,
            detector.meta().threshold,
            current_scores.as_ref().map(|(s, t)| (s.as_slice(), *t)),
        );

        progress.report("save", 95.0, epochs, epochs, -1.0);
        let path = shared
            .repo
            .archive(&detector, !report.accepted)
            .with_context(|| {
                format!(
                    "the model in service (version {}) is unchanged; free space in or fix \
                     the permissions of {}",
                    shared.served_version.load(Ordering::SeqCst),
                    shared
                        .repo
                        .served_path()
                        .parent()
                        .unwrap_or(Path::new("."))
                        .display()
                )
            })?;
        let mut served = false;
        if report.accepted {
            if shared.pinned.load(Ordering::SeqCst) == 0 {
                shared.serve(version, "trained")?;
                served = true;
            } else if let Some(element) = shared.element.upgrade() {
                gst::info!(
                    CAT,
                    obj = element,
                    "Version {version} accepted but not served: version {} is pinned",
                    shared.pinned.load(Ordering::SeqCst)
                );
            }
        } else {
            shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let protect = shared.served_version.load(Ordering::SeqCst);
        shared.repo.prune(protect)?;
        shared.counters.trainings.fetch_add(1, Ordering::Relaxed);
        post_result(
            shared,
            version,
            &report,
            served,
            &path,
            trigger,
            paths.len(),
            started,
        );
        Ok(())
    })();
    remove_dir(&snapshot_dir);
    result
}

#[allow(clippy::too_many_arguments)]
fn post_result(
    shared: &Shared,
    version: u64,
    report: &GateReport,
    served: bool,
    path: &Path,
    trigger: Trigger,
    frames: usize,
    started: Instant,
) {
    if let Some(element) = shared.element.upgrade() {
        gst::info!(
            CAT,
            obj = element,
            "Version {version} {}: {}",
            if report.accepted {
                "accepted"
            } else {
                "rejected"
            },
            report.reason
        );
    }
    shared.post(
        gst::Structure::builder(RESULT_STRUCTURE_NAME)
            .field("version", version)
            .field("accepted", report.accepted)
            .field("served", served)
            .field("reason", report.reason.as_str())
            .field("path", path.display().to_string())
            .field("trigger", trigger.as_str())
            .field("frames", frames as u32)
            .field("holdout-frames", report.candidate.frames as u32)
            .field("ng-share", report.candidate.ng_share)
            .field(
                "ng-share-current",
                report.current.as_ref().map_or(-1.0, |c| c.ng_share),
            )
            .field("seconds", started.elapsed().as_secs_f64())
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn next_daily_is_later_today_or_tomorrow() {
        let now = chrono::Local
            .with_ymd_and_hms(2026, 3, 10, 14, 0, 0)
            .unwrap();
        let wait = |h, m| {
            next_daily(now, h, m)
                .duration_since(Instant::now())
                .as_secs_f64()
        };
        // 15:30 is 1.5 h away; 13:00 was an hour ago, so tomorrow: 23 h away.
        assert!((wait(15, 30) - 5400.0).abs() < 5.0, "{}", wait(15, 30));
        assert!((wait(13, 0) - 82800.0).abs() < 3700.0, "{}", wait(13, 0));
        // Exactly now counts as tomorrow, so a training does not start twice.
        assert!(wait(14, 0) > 80000.0);
    }
}
