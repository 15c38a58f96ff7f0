use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use funad::gate::GateConfig;
use funad::repo::ModelRepo;
use funad::store::{Frame, FrameStore, Policy, StoreConfig};
use funad::TrainConfig;

use super::worker::{self, Config, Counters, Shared, Trigger, CAT};
use super::{FunadBankRanking, FunadSearchPrecision};
use crate::funadscore::pixels::{self, FORMATS};
use crate::FunadDevice;

const DEFAULT_MAX_FRAMES: u32 = 2000;
const DEFAULT_MAX_BYTES: u64 = 2 << 30;
const DEFAULT_HOLDOUT_FRAMES: u32 = 50;
const DEFAULT_HOLDOUT_EVERY: u32 = 5;
const DEFAULT_QUEUE_FRAMES: u32 = 16;
const DEFAULT_KEEP_VERSIONS: u32 = 5;
const DEFAULT_TRAIN_EVERY_FRAMES: u32 = 1000;
const DEFAULT_TRAIN_INTERVAL: u32 = 0;
const DEFAULT_MIN_FRAMES: u32 = 200;
const DEFAULT_EPOCHS: u32 = 5;
const DEFAULT_BATCH_SIZE: u32 = 32;
const DEFAULT_NICE: i32 = 10;
/// The scoring-bank defaults follow the library's.
static TRAIN_DEFAULTS: LazyLock<TrainConfig> = LazyLock::new(TrainConfig::default);

#[derive(Debug, Clone)]
struct Settings {
    store_location: Option<PathBuf>,
    max_frames: u32,
    max_bytes: u64,
    holdout_frames: u32,
    holdout_every: u32,
    queue_frames: u32,
    model: Option<PathBuf>,
    backbone: Option<PathBuf>,
    device: FunadDevice,
    search_precision: FunadSearchPrecision,
    bank_ranking: FunadBankRanking,
    bank_radius: i32,
    bank_features: u32,
    keep_versions: u32,
    train_every_frames: u32,
    train_interval: u32,
    train_at: String,
    min_frames: u32,
    epochs: u32,
    batch_size: u32,
    seed: u64,
    nice: i32,
    gate: GateConfig,
    pin_version: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            store_location: None,
            max_frames: DEFAULT_MAX_FRAMES,
            max_bytes: DEFAULT_MAX_BYTES,
            holdout_frames: DEFAULT_HOLDOUT_FRAMES,
            holdout_every: DEFAULT_HOLDOUT_EVERY,
            queue_frames: DEFAULT_QUEUE_FRAMES,
            model: None,
            backbone: None,
            device: FunadDevice::Auto,
            search_precision: FunadSearchPrecision::Float32,
            bank_ranking: TRAIN_DEFAULTS.score_bank_ranking.into(),
            bank_radius: TRAIN_DEFAULTS.score_bank_radius.map_or(-1, |r| r as i32),
            bank_features: TRAIN_DEFAULTS.score_bank_features as u32,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            train_every_frames: DEFAULT_TRAIN_EVERY_FRAMES,
            train_interval: DEFAULT_TRAIN_INTERVAL,
            train_at: String::new(),
            min_frames: DEFAULT_MIN_FRAMES,
            epochs: DEFAULT_EPOCHS,
            batch_size: DEFAULT_BATCH_SIZE,
            seed: 0,
            nice: DEFAULT_NICE,
            gate: GateConfig::default(),
            pin_version: 0,
        }
    }
}

/// Element state between `start()` and `stop()`.
struct State {
    /// Exclusive lock on the model lineage, released when the state is dropped.
    _lock: std::fs::File,
    shared: Arc<Shared>,
    /// Queue to the writer thread; `None` once closed by stop().
    frames: Option<SyncSender<Frame>>,
    writer: Option<JoinHandle<()>>,
    trainer: Option<JoinHandle<()>>,
    info: Option<gst_video::VideoInfo>,
}

#[derive(Default)]
pub struct FunadTrain {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Frames dropped because the writer queue was full; kept across restarts of the state.
    dropped: AtomicU64,
}

/// Parses `HH:MM` (24-hour clock).
fn parse_time_of_day(text: &str) -> Option<(u32, u32)> {
    let (h, m) = text.trim().split_once(':')?;
    let digits = h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit());
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !digits {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

/// Takes the exclusive lock `MODEL.lock` beside the model file, so that no
/// two funadtrain elements, in this process or another, write one lineage.
fn lock_model(model: &std::path::Path) -> Result<std::fs::File, gst::ErrorMessage> {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let mut name = model.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let path = model.with_file_name(name);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::OpenWrite,
                (
                    "Cannot create lock file {} ({err}); the model folder must be writable",
                    path.display()
                )
            )
        })?;
    // SAFETY: flock on a descriptor that `file` owns for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(gst::error_msg!(
            gst::ResourceError::Busy,
            (
                "Model {} is already trained by another funadtrain (process {}, lock file {}); \
                 give each funadtrain its own model file",
                model.display(),
                holder.trim(),
                path.display()
            )
        ));
    }
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

impl FunadTrain {
    /// Serves the newest accepted kept version in place of an unreadable
    /// served file, and returns its version (0 when none is kept).
    fn restore_served(&self, repo: &ModelRepo, err: &anyhow::Error) -> u64 {
        let newest = repo
            .versions()
            .ok()
            .and_then(|v| v.iter().filter(|v| !v.rejected).map(|v| v.version).max());
        match newest.map(|v| repo.serve(v).map(|_| v)) {
            Some(Ok(version)) => {
                crate::watch::notify_model_written();
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::OpenRead,
                    (
                        "The model in service {} cannot be read ({err:#}); kept version \
                         {version} is served in its place",
                        repo.served_path().display()
                    )
                );
                version
            }
            other => {
                let why = match other {
                    Some(Err(e)) => format!("restoring the newest kept version failed: {e:#}"),
                    _ => "no accepted version is kept".to_string(),
                };
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::OpenRead,
                    (
                        "The model in service {} cannot be read ({err:#}) and {why}; the next \
                         accepted training replaces it",
                        repo.served_path().display()
                    )
                );
                0
            }
        }
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.state
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.shared.clone())
    }

    /// Handles the `train` action signal: starts a training now when none runs and
    /// the store contains enough frames.
    fn request_training(&self) -> bool {
        let Some(shared) = self.shared() else {
            gst::warning!(CAT, imp = self, "train: the element is not started");
            return false;
        };
        if shared.training.load(Ordering::SeqCst) {
            gst::info!(CAT, imp = self, "train: a training is already running");
            return false;
        }
        let frames = shared.store.lock().unwrap().len();
        if frames < shared.config.min_frames {
            gst::info!(
                CAT,
                imp = self,
                "train: {frames} stored frames, min-frames is {}",
                shared.config.min_frames
            );
            return false;
        }
        shared.request(Trigger::Signal);
        true
    }

    /// The `rollback` action signal: serves the newest kept version older
    /// than the one in service, and pins it.
    fn rollback(&self) -> bool {
        let Some(shared) = self.shared() else {
            gst::warning!(CAT, imp = self, "rollback: the element is not started");
            return false;
        };
        let served = shared.served_version.load(Ordering::SeqCst);
        let target = shared.repo.versions().map(|v| {
            v.iter()
                .filter(|v| !v.rejected && v.version < served)
                .map(|v| v.version)
                .max()
        });
        match target {
            Ok(Some(version)) => match shared.serve(version, "rollback") {
                Ok(()) => {
                    shared.pinned.store(version, Ordering::SeqCst);
                    self.settings.lock().unwrap().pin_version = version;
                    true
                }
                Err(err) => {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Write,
                        ("Rollback to version {version} failed: {err:#}")
                    );
                    false
                }
            },
            Ok(None) => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::NotFound,
                    ("Rollback: no kept version older than version {served} in service; \
                         raise keep-versions to keep more")
                );
                false
            }
            Err(err) => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Read,
                    ("Rollback failed: {err:#}")
                );
                false
            }
        }
    }

    /// Applies `pin-version` while running.
    fn apply_pin(&self, shared: &Shared, version: u64) {
        let outcome = if version > 0 {
            shared.serve(version, "pinned").map(|()| {
                shared.pinned.store(version, Ordering::SeqCst);
            })
        } else {
            shared.pinned.store(0, Ordering::SeqCst);
            match shared.newest_accepted() {
                Ok(Some(newest)) if newest != shared.served_version.load(Ordering::SeqCst) => {
                    shared.serve(newest, "unpinned")
                }
                Ok(_) => Ok(()),
                Err(err) => Err(err),
            }
        };
        if let Err(err) = outcome {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("pin-version {version}: {err:#}")
            );
        }
    }

    fn config(&self, settings: &Settings, store_dir: PathBuf) -> Result<Config, gst::ErrorMessage> {
        let device = funad::select_device(settings.device.as_str()).map_err(|err| {
            gst::error_msg!(gst::ResourceError::Settings, ("Invalid device: {err:#}"))
        })?;
        let train_at = if settings.train_at.trim().is_empty() {
            None
        } else {
            Some(parse_time_of_day(&settings.train_at).ok_or_else(|| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    (
                        "train-at \"{}\" is not a time of day: use HH:MM on the 24-hour \
                         clock in local time, for example 02:30, or leave it empty",
                        settings.train_at
                    )
                )
            })?)
        };
        let train = TrainConfig {
            epochs: settings.epochs as usize,
            batch_size: settings.batch_size as usize,
            seed: settings.seed,
            score_bank_precision: settings.search_precision.into(),
            train_search_precision: settings.search_precision.into(),
            score_bank_ranking: settings.bank_ranking.into(),
            score_bank_radius: (settings.bank_radius >= 0).then_some(settings.bank_radius as i64),
            score_bank_features: settings.bank_features as usize,
            ..TrainConfig::default()
        };
        train.validate().map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ("Invalid training settings: {err:#}")
            )
        })?;
        if settings.min_frames > settings.max_frames {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "min-frames {} is above max-frames {}, so the store never holds enough \
                     frames to train; lower min-frames or raise max-frames",
                    settings.min_frames,
                    settings.max_frames
                )
            ));
        }
        if settings.gate.min_frames > settings.holdout_frames as usize {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "gate-min-frames {} is above holdout-frames {}, so no model could pass \
                     the gate; lower gate-min-frames or raise holdout-frames",
                    settings.gate.min_frames,
                    settings.holdout_frames
                )
            ));
        }
        Ok(Config {
            store_dir,
            holdout_every: settings.holdout_every as u64,
            backbone: settings.backbone.clone(),
            device,
            train_every_frames: settings.train_every_frames as u64,
            train_interval: (settings.train_interval > 0)
                .then(|| Duration::from_secs(settings.train_interval as u64)),
            train_at,
            min_frames: settings.min_frames as usize,
            train,
            nice: settings.nice,
            gate: settings.gate.clone(),
        })
    }

    fn open_store(
        &self,
        dir: &std::path::Path,
        cfg: StoreConfig,
    ) -> Result<FrameStore, gst::ErrorMessage> {
        let store = FrameStore::open(dir, cfg)
            .and_then(|s| s.save_state().map(|()| s))
            .map_err(|err| {
                gst::error_msg!(
                    gst::ResourceError::OpenWrite,
                    (
                        "Cannot use frame store {}: {err:#}; set store-location to a \
                         writable folder",
                        dir.display()
                    )
                )
            })?;
        let r = store.recovery();
        if r.partial_removed > 0 || r.unreadable_removed > 0 {
            gst::warning!(
                CAT,
                imp = self,
                "Frame store {}: deleted {} half-written and {} unreadable frames",
                dir.display(),
                r.partial_removed,
                r.unreadable_removed
            );
        }
        gst::info!(
            CAT,
            imp = self,
            "Frame store {}: {} frames, {} bytes, {} seen",
            dir.display(),
            store.len(),
            store.bytes(),
            store.seen()
        );
        Ok(store)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for FunadTrain {
    const NAME: &'static str = "GstFunadTrain";
    type Type = super::FunadTrain;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for FunadTrain {
    fn constructed(&self) {
        self.parent_constructed();
        // A training sink has no reason to wait for the clock.
        self.obj().set_sync(false);
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                glib::subclass::Signal::builder("train")
                    .action()
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let element = args[0].get::<super::FunadTrain>().expect("signal arg");
                        Some(element.imp().request_training().to_value())
                    })
                    .build(),
                glib::subclass::Signal::builder("rollback")
                    .action()
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let element = args[0].get::<super::FunadTrain>().expect("signal arg");
                        Some(element.imp().rollback().to_value())
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let d = GateConfig::default();
            vec![
                glib::ParamSpecString::builder("store-location")
                    .nick("Frame store")
                    .blurb(
                        "Folder of the frame store (created when missing). Frames stored \
                         there earlier are used again. Read at start",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-frames")
                    .nick("Maximum frames")
                    .blurb("Maximum number of frames in the training store. Read at start")
                    .minimum(2)
                    .default_value(DEFAULT_MAX_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-bytes")
                    .nick("Maximum bytes")
                    .blurb("Maximum size in bytes of the PNG files in the training store. Read at start")
                    .minimum(1 << 20)
                    .default_value(DEFAULT_MAX_BYTES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("holdout-frames")
                    .nick("Held-out frames")
                    .blurb(
                        "Newest frames kept out of training for the acceptance gate. Read \
                         at start",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_HOLDOUT_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("holdout-every")
                    .nick("Hold out every")
                    .blurb("Every n-th frame goes to the held-out set. Read at start")
                    .minimum(2)
                    .default_value(DEFAULT_HOLDOUT_EVERY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("queue-frames")
                    .nick("Queue frames")
                    .blurb(
                        "Frames waiting to be written before new ones are dropped from the \
                         store (the stream itself never waits). Read at start",
                    )
                    .minimum(1)
                    .maximum(1024)
                    .default_value(DEFAULT_QUEUE_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model")
                    .nick("Model file")
                    .blurb(
                        "Model file (.safetensors) in service, which funadscore loads; new \
                         versions are written beside it. It need not exist yet. Read at start",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("backbone")
                    .nick("Backbone weights")
                    .blurb(
                        "Backbone weights file (.safetensors) to train on: a DINO or DINOv2 ViT, \
                         or EfficientNet-Lite0. Empty: the one recorded in the model in \
                         service, which must then exist. Read at start",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("device", FunadDevice::Auto)
                    .nick("Device")
                    .blurb("Compute device for training. Read at start")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default(
                    "search-precision",
                    FunadSearchPrecision::Float32,
                )
                .nick("Search precision")
                .blurb(
                    "Number format of the memory-bank searches: training's pseudo-label \
                     search, and the scoring search of the models this element trains \
                     (funadscore scores each model in the format it was trained with). \
                     Read at start",
                )
                .mutable_ready()
                .build(),
                glib::ParamSpecEnum::builder_with_default(
                    "score-bank-ranking",
                    FunadBankRanking::from(TRAIN_DEFAULTS.score_bank_ranking),
                )
                .nick("Scoring bank ranking")
                .blurb(
                    "How a trained model picks the training images whose patches form its \
                     scoring bank: the lowest-ranked share of images enters it. Read at start",
                )
                .mutable_ready()
                .build(),
                glib::ParamSpecInt::builder("score-bank-radius")
                    .nick("Scoring bank radius")
                    .blurb(
                        "Compare each patch only with bank patches at most this many patch \
                         rows and columns away, for a camera that sees each part in the same \
                         place; -1 searches the whole bank. Read at start",
                    )
                    .minimum(-1)
                    .maximum(255)
                    .default_value(TRAIN_DEFAULTS.score_bank_radius.map_or(-1, |r| r as i32))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("score-bank-features")
                    .nick("Scoring bank features")
                    .blurb(
                        "Largest number of patch features in a trained model's scoring bank, drawn at \
                         random from the chosen images; the model file grows by 1.5 kB a \
                         feature with the default backbone. Read at start",
                    )
                    .minimum(1)
                    .default_value(TRAIN_DEFAULTS.score_bank_features as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("keep-versions")
                    .nick("Kept versions")
                    .blurb(
                        "Accepted model versions kept beside the model file (and as many \
                         rejected ones); the version in service is always kept",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_KEEP_VERSIONS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("train-every-frames")
                    .nick("Train every n frames")
                    .blurb("Train after this many newly stored frames; 0 turns this off")
                    .default_value(DEFAULT_TRAIN_EVERY_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("train-interval")
                    .nick("Train interval")
                    .blurb("Train every this many seconds; 0 turns this off")
                    .default_value(DEFAULT_TRAIN_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("train-at")
                    .nick("Train at")
                    .blurb("Train daily at this local time, HH:MM (24-hour); empty turns this off")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("min-frames")
                    .nick("Minimum frames")
                    .blurb("No training before the store holds this many frames")
                    .minimum(2)
                    .default_value(DEFAULT_MIN_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("epochs")
                    .nick("Epochs")
                    .blurb("Training epochs of each run")
                    .minimum(1)
                    .default_value(DEFAULT_EPOCHS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("Images per training batch")
                    .minimum(2)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb("Seed of the training's random numbers")
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("nice")
                    .nick("Nice")
                    .blurb(
                        "Nice value (scheduling priority) of the training thread, from 0 \
                         (normal) to 19 (lowest)",
                    )
                    .minimum(0)
                    .maximum(19)
                    .default_value(DEFAULT_NICE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("gate-min-frames")
                    .nick("Gate minimum frames")
                    .blurb("Held-out frames needed to judge a new model; fewer reject it")
                    .default_value(d.min_frames as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("gate-max-ng-share")
                    .nick("Gate maximum NG share")
                    .blurb("A new model that calls more than this share of held-out frames NG is rejected")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.max_ng_share)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("gate-max-ng-increase")
                    .nick("Gate maximum NG increase")
                    .blurb(
                        "A new model whose NG share on held-out frames exceeds that of the \
                         model in service by more than this is rejected",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(d.max_ng_increase)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("pin-version")
                    .nick("Pinned version")
                    .blurb(
                        "Serve this kept model version and stop serving new ones; 0 (the \
                         default) serves each accepted training and, when set, the newest \
                         accepted version",
                    )
                    .default_value(0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("served-version")
                    .nick("Served version")
                    .blurb("Version of the model in service; 0 when none")
                    .read_only()
                    .build(),
                glib::ParamSpecBoolean::builder("training")
                    .nick("Training")
                    .blurb("Whether a training runs now")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("stored-frames")
                    .nick("Stored frames")
                    .blurb("Frames in the training store")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("held-out-frames")
                    .nick("Held-out frames now")
                    .blurb("Frames in the held-out set")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("dropped-frames")
                    .nick("Dropped frames")
                    .blurb("Frames left out of the store because the writer queue was full")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("failed-writes")
                    .nick("Failed writes")
                    .blurb("Frames that could not be written (full disk, unwritable folder)")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("trainings")
                    .nick("Trainings")
                    .blurb("Trainings finished since start, accepted or rejected")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("rejected-models")
                    .nick("Rejected models")
                    .blurb("Trained models that the acceptance gate rejected since start")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let path = |value: &glib::Value| {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        let u32v = |value: &glib::Value| value.get::<u32>().expect("type checked upstream");
        match pspec.name() {
            "store-location" => s.store_location = path(value),
            "max-frames" => s.max_frames = u32v(value),
            "max-bytes" => s.max_bytes = value.get().expect("type checked upstream"),
            "holdout-frames" => s.holdout_frames = u32v(value),
            "holdout-every" => s.holdout_every = u32v(value),
            "queue-frames" => s.queue_frames = u32v(value),
            "model" => s.model = path(value),
            "backbone" => s.backbone = path(value),
            "device" => s.device = value.get().expect("type checked upstream"),
            "search-precision" => s.search_precision = value.get().expect("type checked upstream"),
            "score-bank-ranking" => s.bank_ranking = value.get().expect("type checked upstream"),
            "score-bank-radius" => s.bank_radius = value.get().expect("type checked upstream"),
            "score-bank-features" => s.bank_features = u32v(value),
            "keep-versions" => s.keep_versions = u32v(value),
            "train-every-frames" => s.train_every_frames = u32v(value),
            "train-interval" => s.train_interval = u32v(value),
            "train-at" => {
                s.train_at = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default()
            }
            "min-frames" => s.min_frames = u32v(value),
            "epochs" => s.epochs = u32v(value),
            "batch-size" => s.batch_size = u32v(value),
            "seed" => s.seed = value.get().expect("type checked upstream"),
            "nice" => s.nice = value.get().expect("type checked upstream"),
            "gate-min-frames" => s.gate.min_frames = u32v(value) as usize,
            "gate-max-ng-share" => {
                s.gate.max_ng_share = value.get().expect("type checked upstream")
            }
            "gate-max-ng-increase" => {
                s.gate.max_ng_increase = value.get().expect("type checked upstream")
            }
            "pin-version" => {
                let version: u64 = value.get().expect("type checked upstream");
                s.pin_version = version;
                drop(s);
                gst::info!(CAT, imp = self, "Setting pin-version to {version}");
                if let Some(shared) = self.shared() {
                    self.apply_pin(&shared, version);
                }
                return;
            }
            other => unimplemented!("property {other} is read-only or unknown"),
        }
        gst::info!(CAT, imp = self, "Set {} to {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap().clone();
        let path_value =
            |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string()).to_value();
        let shared = self.shared();
        let counter = |f: fn(&Counters) -> &AtomicU64| {
            shared
                .as_ref()
                .map_or(0, |sh| f(&sh.counters).load(Ordering::Relaxed))
        };
        match pspec.name() {
            "store-location" => path_value(&s.store_location),
            "max-frames" => s.max_frames.to_value(),
            "max-bytes" => s.max_bytes.to_value(),
            "holdout-frames" => s.holdout_frames.to_value(),
            "holdout-every" => s.holdout_every.to_value(),
            "queue-frames" => s.queue_frames.to_value(),
            "model" => path_value(&s.model),
            "backbone" => path_value(&s.backbone),
            "device" => s.device.to_value(),
            "search-precision" => s.search_precision.to_value(),
            "score-bank-ranking" => s.bank_ranking.to_value(),
            "score-bank-radius" => s.bank_radius.to_value(),
            "score-bank-features" => s.bank_features.to_value(),
            "keep-versions" => s.keep_versions.to_value(),
            "train-every-frames" => s.train_every_frames.to_value(),
            "train-interval" => s.train_interval.to_value(),
            "train-at" => s.train_at.to_value(),
            "min-frames" => s.min_frames.to_value(),
            "epochs" => s.epochs.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "seed" => s.seed.to_value(),
            "nice" => s.nice.to_value(),
            "gate-min-frames" => (s.gate.min_frames as u32).to_value(),
            "gate-max-ng-share" => s.gate.max_ng_share.to_value(),
            "gate-max-ng-increase" => s.gate.max_ng_increase.to_value(),
            "pin-version" => s.pin_version.to_value(),
            "served-version" => shared
                .as_ref()
                .map_or(0, |sh| sh.served_version.load(Ordering::SeqCst))
                .to_value(),
            "training" => shared
                .as_ref()
                .is_some_and(|sh| sh.training.load(Ordering::SeqCst))
                .to_value(),
            "stored-frames" => shared
                .as_ref()
                .map_or(0, |sh| sh.store.lock().unwrap().len() as u32)
                .to_value(),
            "held-out-frames" => shared
                .as_ref()
                .map_or(0, |sh| sh.holdout.lock().unwrap().len() as u32)
                .to_value(),
            "dropped-frames" => self.dropped.load(Ordering::Relaxed).to_value(),
            "failed-writes" => counter(|c| &c.failed).to_value(),
            "trainings" => counter(|c| &c.trainings).to_value(),
            "rejected-models" => counter(|c| &c.rejected).to_value(),
            other => unimplemented!("property {other} is unknown"),
        }
    }
}

impl GstObjectImpl for FunadTrain {}

impl ElementImpl for FunadTrain {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "FUN-AD live trainer",
                "Sink/Analyzer/Video",
                "Stores unlabeled frames on disk, retrains a FUN-AD model on them on a \
                 schedule in the background, checks it on held-out frames and swaps it \
                 into the funadscore elements that use the model file",
                "funad developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS)
                .build();
            vec![gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &caps,
            )
            .expect("valid sink pad template")]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSinkImpl for FunadTrain {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let Some(store_dir) = settings.store_location.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("No frame store: set store-location to a folder for the stored frames")
            ));
        };
        let Some(model) = settings.model.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("No model file: set model to the .safetensors path that funadscore loads")
            ));
        };
        let config = self.config(&settings, store_dir.clone())?;

        let repo = ModelRepo::new(&model, settings.keep_versions as usize).map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ("Invalid model path: {err:#}")
            )
        })?;
        let model_dir = model
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        tempfile::tempfile_in(&model_dir).map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::OpenWrite,
                (
                    "Model folder {} is not writable ({err}); new model versions could not \
                     be saved. Make it writable or choose another model path",
                    model_dir.display()
                )
            )
        })?;
        // Only the lock holder may clear half-written files or add versions.
        let lock = lock_model(&model)?;
        match repo.remove_partial_writes() {
            Ok(0) => {}
            Ok(n) => gst::warning!(
                CAT,
                imp = self,
                "Deleted {n} half-written model files in {}",
                model_dir.display()
            ),
            Err(err) => gst::warning!(CAT, imp = self, "{err:#}"),
        }
        let served_version = match repo.served_meta() {
            Ok(meta) => meta.map_or(0, |m| m.version),
            Err(err) => self.restore_served(&repo, &err),
        };
        let backbone = match &config.backbone {
            Some(path) => Some(path.clone()),
            None => repo.served_meta().ok().flatten().map(|m| m.backbone_path),
        };
        if let Some(path) = backbone.as_ref().filter(|p| !p.is_file()) {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                (
                    "Backbone weights {} not found; set the backbone property to the weights \
                     file to train on",
                    path.display()
                )
            ));
        }
        if backbone.is_none() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "No backbone: model {} does not exist yet, so set the backbone property \
                     to the weights file to train on",
                    model.display()
                )
            ));
        }

        let store = self.open_store(
            &store_dir,
            StoreConfig {
                max_frames: settings.max_frames as usize,
                max_bytes: settings.max_bytes,
                policy: Policy::Reservoir,
                seed: settings.seed,
            },
        )?;
        let holdout = self.open_store(
            &store_dir.join("holdout"),
            StoreConfig {
                max_frames: settings.holdout_frames as usize,
                max_bytes: settings.max_bytes,
                policy: Policy::Recent,
                seed: settings.seed,
            },
        )?;

        let shared = Arc::new(Shared {
            element: self.obj().downgrade(),
            config,
            store: Mutex::new(store),
            holdout: Mutex::new(holdout),
            repo,
            counters: Counters::default(),
            stop: AtomicBool::new(false),
            training: AtomicBool::new(false),
            trigger: Mutex::new(None),
            wake: Condvar::new(),
            served_version: AtomicU64::new(served_version),
            pinned: AtomicU64::new(0),
            serve_lock: Mutex::new(()),
        });
        if settings.pin_version > 0 {
            shared
                .serve(settings.pin_version, "pinned")
                .map_err(|err| {
                    gst::error_msg!(
                        gst::ResourceError::Settings,
                        ("pin-version {}: {err:#}", settings.pin_version)
                    )
                })?;
            shared.pinned.store(settings.pin_version, Ordering::SeqCst);
        }

        let (tx, rx) = mpsc::sync_channel(settings.queue_frames as usize);
        let thread_error = |err: std::io::Error| {
            gst::error_msg!(
                gst::CoreError::Thread,
                ("Failed to start a funadtrain thread: {err}")
            )
        };
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("funadtrain-store".into())
            .spawn(move || worker::writer_loop(writer_shared, rx))
            .map_err(thread_error)?;
        let trainer_shared = shared.clone();
        let trainer = std::thread::Builder::new()
            .name("funadtrain-train".into())
            .spawn(move || worker::trainer_loop(trainer_shared))
            .map_err(thread_error)?;
        gst::info!(
            CAT,
            imp = self,
            "Started: model {} (version {served_version} in service), store {}",
            model.display(),
            store_dir.display()
        );
        *self.state.lock().unwrap() = Some(State {
            _lock: lock,
            shared,
            frames: Some(tx),
            writer: Some(writer),
            trainer: Some(trainer),
            info: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = self.state.lock().unwrap().take();
        let Some(mut state) = state else {
            return Ok(());
        };
        state.shared.stop.store(true, Ordering::SeqCst);
        state.shared.wake.notify_all();
        // Closing the queue ends the writer once the queued frames are stored.
        drop(state.frames.take());
        for thread in [state.writer.take(), state.trainer.take()]
            .into_iter()
            .flatten()
        {
            if thread.join().is_err() {
                gst::error!(CAT, imp = self, "A funadtrain thread panicked");
            }
        }
        gst::info!(
            CAT,
            imp = self,
            "Stopped: {} frames stored, {} dropped, {} trainings",
            state.shared.counters.stored.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            state.shared.counters.trainings.load(Ordering::Relaxed)
        );
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|_| gst::loggable_error!(CAT, "Invalid caps {caps}"))?;
        pixels::check_format(info.format())
            .map_err(|err| gst::loggable_error!(CAT, "Unsupported caps {caps}: {err}"))?;
        let mut state = self.state.lock().unwrap();
        let state = state
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "Caps {caps} arrived before start"))?;
        gst::debug!(CAT, imp = self, "Configured for {caps}");
        state.info = Some(info);
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        if buffer.flags().contains(gst::BufferFlags::GAP) {
            return Ok(gst::FlowSuccess::Ok);
        }
        let (info, sender) = {
            let state = self.state.lock().unwrap();
            let Some(state) = state.as_ref() else {
                return Err(gst::FlowError::Flushing);
            };
            let Some(info) = state.info.clone() else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ["Received a buffer before caps"]
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            let Some(sender) = state.frames.clone() else {
                return Err(gst::FlowError::Flushing);
            };
            (info, sender)
        };
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), &info)
            .map_err(|err| anyhow::anyhow!("cannot map the frame: {err}"))
            .and_then(|frame| pixels::frame_to_pixels(&frame))
            .and_then(|pixels| {
                let (h, w, c) = pixels.size3()?;
                Ok(Frame {
                    width: w as u32,
                    height: h as u32,
                    channels: c as u8,
                    data: Vec::<u8>::try_from(pixels.view([-1]))?,
                })
            });
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Failed to read a frame: {err:#}")
                );
                return Err(gst::FlowError::Error);
            }
        };
        match sender.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == 1 || dropped % 100 == 0 {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Busy,
                        ("The frame store cannot keep up: {dropped} frames left out of it \
                             so far (the stream is not affected); raise queue-frames or use \
                             faster storage")
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Flushing),
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time_of_day;

    #[test]
    fn time_of_day_parses_24_hour_clock() {
        assert_eq!(parse_time_of_day("02:30"), Some((2, 30)));
        assert_eq!(parse_time_of_day(" 2:05 "), Some((2, 5)));
        assert_eq!(parse_time_of_day("23:59"), Some((23, 59)));
        for bad in [
            "24:00", "12:60", "12:5", "1230", "", "ab:cd", "-1:30", "123:00", "+1:05",
        ] {
            assert_eq!(parse_time_of_day(bad), None, "{bad:?}");
        }
    }
}
