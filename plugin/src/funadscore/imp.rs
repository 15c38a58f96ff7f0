use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use funad::{Backbone, Detector};

use super::finish::finish_result;
use super::overlay::{self, OverlayStyle};
use super::pixels::{self, FORMATS};
use super::{FunadDevice, FunadOverlay};
use crate::message::{self, FrameTiming};
use crate::watch::{self, FileStamp};
use crate::{FunadMeta, FunadResult};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "funadscore",
        gst::DebugColorFlags::empty(),
        Some("FUN-AD anomaly scoring of video frames"),
    )
});

const DEFAULT_DEVICE: FunadDevice = FunadDevice::Auto;
/// A negative threshold selects the one stored in the model file.
const DEFAULT_THRESHOLD: f32 = -1.0;
const DEFAULT_OVERLAY: FunadOverlay = FunadOverlay::None;
const DEFAULT_OVERLAY_OPACITY: f64 = 0.5;
const DEFAULT_POST_MESSAGES: bool = true;
const DEFAULT_WAIT_FOR_MODEL: bool = false;
const DEFAULT_MODEL_CHECK_INTERVAL_MS: u32 = 1000;

/// Name of the message posted when a new model version takes over.
pub const MODEL_CHANGED_STRUCTURE_NAME: &str = "funad-model-changed";

#[derive(Debug, Clone)]
struct Settings {
    /// Model file; `None` runs without a model.
    model: Option<PathBuf>,
    /// Backbone weights that replace the path recorded in the model file.
    backbone: Option<PathBuf>,
    device: FunadDevice,
    threshold: f32,
    overlay: FunadOverlay,
    overlay_opacity: f64,
    post_messages: bool,
    /// A missing model file is not an error: frames pass unscored until it appears.
    wait_for_model: bool,
    /// Milliseconds between two checks of the model file; 0 never reloads.
    model_check_interval_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: None,
            backbone: None,
            device: DEFAULT_DEVICE,
            threshold: DEFAULT_THRESHOLD,
            overlay: DEFAULT_OVERLAY,
            overlay_opacity: DEFAULT_OVERLAY_OPACITY,
            post_messages: DEFAULT_POST_MESSAGES,
            wait_for_model: DEFAULT_WAIT_FOR_MODEL,
            model_check_interval_ms: DEFAULT_MODEL_CHECK_INTERVAL_MS,
        }
    }
}

/// Element state between `start()` and `stop()`.
struct State {
    /// `None` when the `model` property is empty.
    detector: Option<Arc<Detector>>,
    /// Negotiated input format; `None` until the first caps.
    info: Option<gst_video::VideoInfo>,
    /// Sequence number of the next frame.
    next_sequence: u64,
    /// Thread that reloads the model file when it changes.
    watcher: Option<Watcher>,
}

/// The model file watcher thread; dropping it stops the thread.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        watch::notify_model_written();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Default)]
pub struct FunadScore {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Last caps rejected on the sink pad, so each is reported once.
    rejected_caps: Mutex<Option<gst::Caps>>,
}

/// A scored frame, before it becomes a meta and a message.
struct Scoring {
    detector: Arc<Detector>,
    patch_scores: tch::Tensor,
    score: f32,
    threshold: f32,
}

impl FunadScore {
    fn load_detector(
        &self,
        settings: &Settings,
        model: &Path,
    ) -> Result<Detector, gst::ErrorMessage> {
        if !model.is_file() {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                (
                    "Model file {} not found; set the model property to a file written by \
                     `funad train` or funadtrain, set wait-for-model=true to pass frames \
                     through unscored until it appears, or leave model empty",
                    model.display()
                )
            ));
        }
        load_detector(&self.obj(), settings, model, None).map_err(LoadError::into_message)
    }

    fn effective_threshold(settings: &Settings, detector: &Detector) -> f32 {
        if settings.threshold >= 0.0 {
            settings.threshold
        } else {
            detector.meta().threshold
        }
    }

    /// Scores one frame with the detector.
    fn score_frame(
        &self,
        detector: Arc<Detector>,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        threshold: f32,
    ) -> anyhow::Result<(Scoring, tch::Tensor)> {
        let pixels = pixels::frame_to_pixels(frame)?;
        let mut scored = detector.score_images(std::slice::from_ref(&pixels))?;
        let scored = scored
            .pop()
            .ok_or_else(|| anyhow::anyhow!("the detector returned no score"))?;
        let scoring = Scoring {
            detector,
            patch_scores: scored.patch_scores,
            score: scored.image_score,
            threshold,
        };
        Ok((scoring, pixels))
    }

    fn draw_overlay(
        &self,
        buffer: &mut gst::BufferRef,
        info: &gst_video::VideoInfo,
        pixels: &tch::Tensor,
        scoring: &Scoring,
        style: OverlayStyle,
    ) -> anyhow::Result<()> {
        let input_size = scoring.detector.meta().features.input_size;
        let ng = scoring.score > scoring.threshold;
        let drawn = overlay::render(
            pixels,
            &scoring.patch_scores,
            input_size,
            scoring.threshold,
            ng,
            style,
        );

        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
            .map_err(|err| anyhow::anyhow!("cannot map the frame for writing: {err}"))?;
        pixels::pixels_to_frame(&drawn, &mut frame)
    }

    fn frame_timing(&self, buffer: &gst::BufferRef) -> FrameTiming {
        let segment = self.obj().segment();
        let running_time = buffer.pts().and_then(|pts| {
            segment
                .downcast_ref::<gst::ClockTime>()
                .and_then(|s| s.to_running_time(pts))
        });
        FrameTiming {
            pts: buffer.pts(),
            duration: buffer.duration(),
            running_time,
        }
    }

    /// Completes `result` for the frame of `info` that arrived at `started`,
    /// attaches it to the buffer as a meta and, when enabled, posts it as a message.
    fn publish(
        &self,
        buffer: &mut gst::BufferRef,
        mut result: FunadResult,
        info: &gst_video::VideoInfo,
        started: Instant,
        post_messages: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if let Err(err) = finish_result(&mut result, info.width(), info.height(), started) {
            gst::element_imp_error!(
                self,
                gst::StreamError::Failed,
                (
                    "Failed to find the defect regions of frame {}: {err}",
                    result.sequence
                )
            );
            return Err(gst::FlowError::Error);
        }
        let timing = self.frame_timing(buffer);
        FunadMeta::add(buffer, &result);
        if post_messages {
            let structure = message::result_structure(&result, &timing);
            let msg = gst::message::Element::builder(structure)
                .src(&*self.obj())
                .build();
            if self.obj().post_message(msg).is_err() {
                gst::log!(
                    CAT,
                    imp = self,
                    "No bus to post the result of frame {}",
                    result.sequence
                );
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Puts a reloaded model in service from the next frame on, and reports
    /// the change on the bus and in the log. A frame being scored keeps the model it started with.
    fn swap_model(&self, new: Arc<Detector>) {
        let (old_version, sequence) = {
            let mut state = self.state.lock().unwrap();
            let Some(state) = state.as_mut() else { return };
            let old = state.detector.replace(new.clone());
            (old.map_or(0, |d| d.meta().version), state.next_sequence)
        };
        let meta = new.meta();
        gst::info!(
            CAT,
            imp = self,
            "Model version {} (id {}) takes over from version {old_version} at frame {sequence}",
            meta.version,
            meta.model_id
        );
        let structure = gst::Structure::builder(MODEL_CHANGED_STRUCTURE_NAME)
            .field("old-version", old_version)
            .field("model-version", meta.version)
            .field("model-id", meta.model_id.as_str())
            .field("sequence", sequence)
            .build();
        let msg = gst::message::Element::builder(structure)
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
    }

    fn overlay_style(settings: &Settings) -> Option<OverlayStyle> {
        let (heatmap, outline) = match settings.overlay {
            FunadOverlay::None => return None,
            FunadOverlay::Mark => (false, false),
            FunadOverlay::Heatmap => (true, false),
            FunadOverlay::Outline => (false, true),
            FunadOverlay::Both => (true, true),
        };
        Some(OverlayStyle {
            heatmap,
            outline,
            opacity: settings.overlay_opacity,
        })
    }
}

#[glib::object_subclass]
impl ObjectSubclass for FunadScore {
    const NAME: &'static str = "GstFunadScore";
    type Type = super::FunadScore;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for FunadScore {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model file")
                    .blurb(
                        "FUN-AD model file (.safetensors) written by `funad train`. Empty: \
                         frames pass through unscored with verdict no-model. Read at start",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("backbone")
                    .nick("Backbone weights")
                    .blurb(
                        "Backbone weights file (.safetensors) to use instead of the path \
                         recorded in the model file; its SHA-256 must match the model's. \
                         Read at start",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("device", DEFAULT_DEVICE)
                    .nick("Device")
                    .blurb("Compute device of the model. Read at start")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecFloat::builder("threshold")
                    .nick("Threshold")
                    .blurb(
                        "Image score above which a frame is NG, from 0 to 1; a negative \
                         value (the default, -1) uses the threshold stored in the model file",
                    )
                    .minimum(-1.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("overlay", DEFAULT_OVERLAY)
                    .nick("Overlay")
                    .blurb(
                        "What to draw into scored frames. Heat map colours run from blue \
                         (patch score 0) through green (the threshold) to red (1); the \
                         outline surrounds the patches above the threshold",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("overlay-opacity")
                    .nick("Overlay opacity")
                    .blurb("Weight of the heat map colour blended into the frame, from 0 to 1")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_OVERLAY_OPACITY)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a funad-result element message on the bus for each frame")
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("wait-for-model")
                    .nick("Wait for model")
                    .blurb(
                        "Start even when the model file does not exist yet: frames pass \
                         through unscored (verdict no-model) until a file appears there, \
                         for example the first model funadtrain writes. Read at start",
                    )
                    .default_value(DEFAULT_WAIT_FOR_MODEL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("model-check-interval")
                    .nick("Model check interval")
                    .blurb(
                        "Milliseconds between two checks of the model file for a new \
                         version, which is then loaded in the background and used from the \
                         next frame on; 0 never reloads. A funadtrain in the same process \
                         wakes the check at once. Read at start",
                    )
                    .maximum(3_600_000)
                    .default_value(DEFAULT_MODEL_CHECK_INTERVAL_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model-id")
                    .nick("Model id")
                    .blurb("Id of the loaded model (content hash of its weights); NULL when none")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("model-version")
                    .nick("Model version")
                    .blurb("Version of the loaded model; 0 when none")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        let path = |value: &glib::Value| {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        match pspec.name() {
            "model" => {
                let model = path(value);
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing model from {:?} to {model:?}",
                    settings.model
                );
                settings.model = model;
            }
            "backbone" => {
                let backbone = path(value);
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing backbone from {:?} to {backbone:?}",
                    settings.backbone
                );
                settings.backbone = backbone;
            }
            "device" => {
                let device = value.get::<FunadDevice>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing device from {:?} to {device:?}",
                    settings.device
                );
                settings.device = device;
            }
            "threshold" => {
                let threshold = value.get::<f32>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing threshold from {} to {threshold}",
                    settings.threshold
                );
                settings.threshold = threshold;
            }
            "overlay" => {
                let overlay = value.get::<FunadOverlay>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing overlay from {:?} to {overlay:?}",
                    settings.overlay
                );
                settings.overlay = overlay;
            }
            "overlay-opacity" => {
                let opacity = value.get::<f64>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing overlay opacity from {} to {opacity}",
                    settings.overlay_opacity
                );
                settings.overlay_opacity = opacity;
            }
            "wait-for-model" => {
                let wait = value.get::<bool>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing wait-for-model from {} to {wait}",
                    settings.wait_for_model
                );
                settings.wait_for_model = wait;
            }
            "model-check-interval" => {
                let ms = value.get::<u32>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing model-check-interval from {} to {ms} ms",
                    settings.model_check_interval_ms
                );
                settings.model_check_interval_ms = ms;
            }
            "post-messages" => {
                let post = value.get::<bool>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing post-messages from {} to {post}",
                    settings.post_messages
                );
                settings.post_messages = post;
            }
            other => unimplemented!("property {other} is read-only or unknown"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        let path_value =
            |path: &Option<PathBuf>| path.as_ref().map(|p| p.display().to_string()).to_value();
        match pspec.name() {
            "model" => path_value(&settings.model),
            "backbone" => path_value(&settings.backbone),
            "device" => settings.device.to_value(),
            "threshold" => settings.threshold.to_value(),
            "overlay" => settings.overlay.to_value(),
            "overlay-opacity" => settings.overlay_opacity.to_value(),
            "post-messages" => settings.post_messages.to_value(),
            "wait-for-model" => settings.wait_for_model.to_value(),
            "model-check-interval" => settings.model_check_interval_ms.to_value(),
            "model-id" | "model-version" => {
                drop(settings);
                let state = self.state.lock().unwrap();
                let meta = state
                    .as_ref()
                    .and_then(|s| s.detector.as_ref())
                    .map(|d| d.meta());
                if pspec.name() == "model-id" {
                    meta.map(|m| m.model_id.clone()).to_value()
                } else {
                    meta.map_or(0, |m| m.version).to_value()
                }
            }
            other => unimplemented!("property {other} is unknown"),
        }
    }
}

impl GstObjectImpl for FunadScore {}

impl ElementImpl for FunadScore {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "FUN-AD anomaly scorer",
                "Filter/Analyzer/Video",
                "Scores each frame for visual anomalies with a FUN-AD model (ViT or CNN patch \
                 features scored against its memory bank or by Local-Net), attaches a GstFunadMeta, posts a funad-result \
                 message and can draw a heat map and an OK/NG mark",
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
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .expect("valid src pad template");
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &caps,
            )
            .expect("valid sink pad template");
            vec![src, sink]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for FunadScore {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let detector = match &settings.model {
            None => {
                gst::info!(
                    CAT,
                    imp = self,
                    "No model set: frames pass through unscored"
                );
                None
            }
            Some(model) if settings.wait_for_model && !model.exists() => {
                gst::info!(
                    CAT,
                    imp = self,
                    "Model {} does not exist yet: frames pass through unscored until it appears",
                    model.display()
                );
                None
            }
            Some(model) => {
                let detector = self.load_detector(&settings, model)?;
                let meta = detector.meta();
                gst::info!(
                    CAT,
                    imp = self,
                    "Loaded model {} (id {}, version {}, {}×{} patches, threshold {}) on {:?}",
                    model.display(),
                    meta.model_id,
                    meta.version,
                    meta.grid,
                    meta.grid,
                    meta.threshold,
                    detector.device()
                );
                Some(Arc::new(detector))
            }
        };
        let watcher = match &settings.model {
            Some(model) if settings.model_check_interval_ms > 0 => Some(spawn_watcher(
                &self.obj(),
                model.clone(),
                settings.clone(),
                detector
                    .as_ref()
                    .map(|d: &Arc<Detector>| d.backbone().clone()),
                FileStamp::of(model).filter(|_| detector.is_some()),
            )?),
            _ => None,
        };
        *self.state.lock().unwrap() = Some(State {
            detector,
            info: None,
            next_sequence: 0,
            watcher,
        });
        *self.rejected_caps.lock().unwrap() = None;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = self.state.lock().unwrap().take();
        if let Some(mut state) = state {
            // Joins the watcher thread outside the state lock.
            drop(state.watcher.take());
            gst::info!(
                CAT,
                imp = self,
                "Stopped after {} frames",
                state.next_sequence
            );
        }
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "Invalid input caps {incaps}"))?;
        pixels::check_format(info.format())
            .map_err(|err| gst::loggable_error!(CAT, "Unsupported input caps {incaps}: {err}"))?;
        if incaps != outcaps {
            return Err(gst::loggable_error!(
                CAT,
                "Output caps {outcaps} differ from input caps {incaps}"
            ));
        }

        let mut state = self.state.lock().unwrap();
        let state = state
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "Caps {incaps} arrived before start"))?;
        gst::debug!(CAT, imp = self, "Configured for {incaps}");
        state.info = Some(info);
        Ok(())
    }

    fn accept_caps(&self, direction: gst::PadDirection, caps: &gst::Caps) -> bool {
        let accepted = self.parent_accept_caps(direction, caps);
        if !accepted && direction == gst::PadDirection::Sink && caps.is_fixed() {
            let mut rejected = self.rejected_caps.lock().unwrap();
            if rejected.as_ref() != Some(caps) {
                *rejected = Some(caps.clone());
                drop(rejected);
                let formats: Vec<&str> = FORMATS.iter().map(|f| f.to_str().as_str()).collect();
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Negotiation,
                    (
                        "Unsupported input caps {caps}: funadscore reads video/x-raw in the \
                         formats {}; insert videoconvert before funadscore",
                        formats.join(", ")
                    )
                );
            }
        }
        accepted
    }

    fn transform_ip(
        &self,
        buffer: &mut gst::BufferRef,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let started = Instant::now();
        if buffer.flags().contains(gst::BufferFlags::GAP) {
            gst::debug!(
                CAT,
                imp = self,
                "Gap buffer at {:?} passes through unscored",
                buffer.pts()
            );
            return Ok(gst::FlowSuccess::Ok);
        }

        let settings = self.settings.lock().unwrap().clone();
        let (detector, info, sequence) = {
            let mut state = self.state.lock().unwrap();
            // No state: stop() ran while this buffer was on its way.
            let Some(state) = state.as_mut() else {
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
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            (state.detector.clone(), info, sequence)
        };

        let Some(detector) = detector else {
            gst::log!(CAT, imp = self, "Frame {sequence} passes through unscored");
            return self.publish(
                buffer,
                FunadResult::not_scored(sequence),
                &info,
                started,
                settings.post_messages,
            );
        };

        let threshold = Self::effective_threshold(&settings, &detector);
        let scored = {
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&*buffer, &info)
                .map_err(|err| anyhow::anyhow!("cannot map the frame: {err}"));
            frame.and_then(|frame| self.score_frame(detector, &frame, threshold))
        };
        let (scoring, pixels) = match scored {
            Ok(scored) => scored,
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Failed to score frame {sequence}: {err:#}")
                );
                return Err(gst::FlowError::Error);
            }
        };

        if let Some(style) = Self::overlay_style(&settings) {
            if let Err(err) = self.draw_overlay(buffer, &info, &pixels, &scoring, style) {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Failed to draw the overlay on frame {sequence}: {err:#}")
                );
                return Err(gst::FlowError::Error);
            }
        }

        let result = scoring_result(&scoring, sequence);
        gst::log!(
            CAT,
            imp = self,
            "Frame {sequence}: score {:.4}, threshold {:.4}, {}",
            result.score,
            result.threshold,
            result.verdict
        );
        self.publish(buffer, result, &info, started, settings.post_messages)
    }
}

fn scoring_result(scoring: &Scoring, sequence: u64) -> FunadResult {
    let meta = scoring.detector.meta();
    let (grid_height, grid_width) = scoring.patch_scores.size2().unwrap_or((0, 0));
    let map: Vec<f32> = Vec::try_from(scoring.patch_scores.to_kind(tch::Kind::Float).view([-1]))
        .unwrap_or_default();
    FunadResult {
        score: scoring.score,
        verdict: funad::Verdict::from_score(scoring.score, scoring.threshold).into(),
        threshold: scoring.threshold,
        model_id: meta.model_id.clone(),
        model_version: meta.version,
        sequence,
        map_width: grid_width as u32,
        map_height: grid_height as u32,
        map,
        ..FunadResult::not_scored(sequence)
    }
}

/// Failure to load a model, with its error kind.
struct LoadError {
    kind: gst::ResourceError,
    text: String,
}

impl LoadError {
    fn new(kind: gst::ResourceError, text: String) -> Self {
        LoadError { kind, text }
    }

    fn into_message(self) -> gst::ErrorMessage {
        gst::error_msg!(self.kind, ("{}", self.text))
    }
}

/// Loads `model`, on `vit` when it is the model's backbone on the chosen device.
fn load_detector(
    element: &super::FunadScore,
    settings: &Settings,
    model: &Path,
    vit: Option<&Arc<Backbone>>,
) -> Result<Detector, LoadError> {
    let meta = Detector::read_meta(model).map_err(|err| {
        LoadError::new(
            gst::ResourceError::OpenRead,
            format!("Failed to read model file {}: {err:#}", model.display()),
        )
    })?;
    let backbone = settings
        .backbone
        .clone()
        .unwrap_or_else(|| meta.backbone_path.clone());
    if !backbone.is_file() {
        return Err(LoadError::new(
            gst::ResourceError::NotFound,
            format!(
                "Backbone weights {} for model {} not found; set the backbone property \
                 to the {} weights file",
                backbone.display(),
                model.display(),
                meta.backbone.name
            ),
        ));
    }

    let device = funad::select_device(settings.device.as_str()).map_err(|err| {
        LoadError::new(
            gst::ResourceError::Settings,
            format!("Invalid device: {err:#}"),
        )
    })?;
    gst::debug!(
        CAT,
        obj = element,
        "Loading model {} with backbone {} on {device:?}",
        model.display(),
        backbone.display()
    );
    let loaded = match vit {
        Some(vit) if vit.id().sha256 == meta.backbone.sha256 && vit.device() == device => {
            Detector::load_with_backbone(model, vit.clone())
        }
        _ => Detector::load(model, Some(&backbone), device),
    };
    loaded.map_err(|err| {
        LoadError::new(
            gst::ResourceError::OpenRead,
            format!("Failed to load model file {}: {err:#}", model.display()),
        )
    })
}

/// Starts the thread that reloads `model` when its file changes. `loaded` is
/// the stamp of the file already in service, `vit` its backbone.
fn spawn_watcher(
    element: &super::FunadScore,
    model: PathBuf,
    settings: Settings,
    mut vit: Option<Arc<Backbone>>,
    mut loaded: Option<FileStamp>,
) -> Result<Watcher, gst::ErrorMessage> {
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_millis(settings.model_check_interval_ms as u64);
    let weak = element.downgrade();
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("funadscore-watch".into())
        .spawn(move || {
            let mut seen = watch::writes();
            // Stamp of a file that failed to load, so it is reported once.
            let mut failed: Option<FileStamp> = None;
            loop {
                seen = watch::wait_for_write(seen, interval);
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Some(element) = weak.upgrade() else { break };
                let stamp = FileStamp::of(&model);
                if stamp.is_none() || stamp == loaded || stamp == failed {
                    continue;
                }
                gst::debug!(CAT, obj = element, "Model file {} changed", model.display());
                match load_detector(&element, &settings, &model, vit.as_ref()) {
                    Ok(detector) => {
                        gst::info!(
                            CAT,
                            obj = element,
                            "Loaded model version {} (id {}) from {}",
                            detector.meta().version,
                            detector.meta().model_id,
                            model.display()
                        );
                        vit = Some(detector.backbone().clone());
                        loaded = stamp;
                        failed = None;
                        element.imp().swap_model(Arc::new(detector));
                    }
                    Err(err) => {
                        failed = stamp;
                        gst::warning!(CAT, obj = element, "Reload failed: {}", err.text);
                        let text = format!(
                            "{}; the model in service stays until {} changes again",
                            err.text,
                            model.display()
                        );
                        let msg = gst::message::Warning::builder(err.kind, &text)
                            .src(&element)
                            .build();
                        let _ = element.post_message(msg);
                    }
                }
            }
        })
        .map_err(|err| {
            gst::error_msg!(
                gst::CoreError::Thread,
                ("Failed to start the model watcher thread: {err}")
            )
        })?;
    Ok(Watcher {
        stop,
        thread: Some(thread),
    })
}
