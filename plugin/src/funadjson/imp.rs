use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::line::{LineOptions, ResultLine};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "funadjson",
        gst::DebugColorFlags::empty(),
        Some("FUN-AD results as JSON lines"),
    )
});

/// Media type of the output: newline-delimited JSON, one object per line.
const OUTPUT_MEDIA_TYPE: &str = "application/x-ndjson";

const DEFAULT_INCLUDE_MAP: bool = false;

#[derive(Debug, Clone)]
struct Settings {
    include_map: bool,
    /// Value of `source_id` in every line. `None` leaves the field out.
    source_id: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            include_map: DEFAULT_INCLUDE_MAP,
            source_id: None,
        }
    }
}

/// Element state between READY→PAUSED and PAUSED→READY.
#[derive(Debug, Default)]
struct State {
    /// Sequence number of the next line.
    next_sequence: u64,
}

pub struct FunadJson {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

impl FunadJson {
    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let sequence = {
            let mut state = self.state.lock().unwrap();
            // No state: the element went to READY while this buffer was on its way.
            let Some(state) = state.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            sequence
        };

        let options = LineOptions {
            include_map: settings.include_map,
            source_id: settings.source_id,
        };
        let bytes = ResultLine::from_buffer(&buffer, sequence, &options)
            .map_err(|err| anyhow::anyhow!("cannot format the creation time: {err}"))
            .and_then(|line| Ok(line.to_ndjson()?));
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("Failed to write the JSON line of frame {sequence}: {err:#}")
                );
                return Err(gst::FlowError::Error);
            }
        };
        gst::log!(
            CAT,
            imp = self,
            "Line {sequence} at {:?}: {} bytes",
            buffer.pts(),
            bytes.len()
        );

        // Caps normally go out when the input caps arrive. This covers a
        // stream whose buffers arrive without caps, since the element never
        // needs the input caps.
        if !self.srcpad.has_current_caps() && !self.push_output_caps() {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["Downstream rejected the caps {OUTPUT_MEDIA_TYPE}"]
            );
            return Err(gst::FlowError::NotNegotiated);
        }

        let mut out = gst::Buffer::from_mut_slice(bytes);
        {
            let out = out.get_mut().unwrap();
            out.set_pts(buffer.pts());
            out.set_duration(buffer.duration());
            if buffer.flags().contains(gst::BufferFlags::DISCONT) {
                out.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        self.srcpad.push(out)
    }

    /// Pushes the fixed output caps and returns whether downstream accepted them.
    fn push_output_caps(&self) -> bool {
        let caps = gst::Caps::new_empty_simple(OUTPUT_MEDIA_TYPE);
        gst::debug!(CAT, imp = self, "Setting output caps {caps}");
        self.srcpad.push_event(gst::event::Caps::new(&caps))
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Caps(caps) => {
                // The output caps never depend on the input caps, so they go
                // out once and later input caps (a new frame size, say) stop here.
                gst::debug!(CAT, imp = self, "Input caps {}", caps.caps());
                if self.srcpad.has_current_caps() {
                    true
                } else {
                    self.push_output_caps()
                }
            }
            gst::EventView::FlushStop(_) => {
                let state = self.state.lock().unwrap();
                gst::debug!(
                    CAT,
                    imp = self,
                    "Flush stop; the next line keeps sequence {}",
                    state.as_ref().map_or(0, |s| s.next_sequence)
                );
                drop(state);
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            gst::EventView::Eos(_) => {
                let state = self.state.lock().unwrap();
                gst::debug!(
                    CAT,
                    imp = self,
                    "End of stream after {} lines",
                    state.as_ref().map_or(0, |s| s.next_sequence)
                );
                drop(state);
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for FunadJson {
    const NAME: &'static str = "GstFunadJson";
    type Type = super::FunadJson;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let template = klass.pad_template("sink").unwrap();
        let sinkpad = gst::Pad::builder_from_template(&template)
            .chain_function(|pad, parent, buffer| {
                FunadJson::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                FunadJson::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .build();

        let template = klass.pad_template("src").unwrap();
        let srcpad = gst::Pad::builder_from_template(&template)
            .flags(gst::PadFlags::FIXED_CAPS)
            .build();

        FunadJson {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
        }
    }
}

impl ObjectImpl for FunadJson {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecBoolean::builder("include-map")
                    .nick("Include map")
                    .blurb(
                        "Add the anomaly map to each line as `map`: map_width × map_height \
                         patch scores in [0, 1], row-major",
                    )
                    .default_value(DEFAULT_INCLUDE_MAP)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("source-id")
                    .nick("Source id")
                    .blurb(
                        "Name of the video source (a camera name, say), copied into every \
                         line as `source_id`. Empty or NULL (the default) leaves the field out",
                    )
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "include-map" => {
                let include_map = value.get::<bool>().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing include-map from {} to {include_map}",
                    settings.include_map
                );
                settings.include_map = include_map;
            }
            "source-id" => {
                let source_id = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty());
                gst::info!(
                    CAT,
                    imp = self,
                    "Changing source-id from {:?} to {source_id:?}",
                    settings.source_id
                );
                settings.source_id = source_id;
            }
            other => unimplemented!("property {other} is unknown"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "include-map" => settings.include_map.to_value(),
            "source-id" => settings.source_id.to_value(),
            other => unimplemented!("property {other} is unknown"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for FunadJson {}

impl ElementImpl for FunadJson {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "FUN-AD result to JSON lines",
                "Formatter/Metadata",
                "Writes the GstFunadMeta of each video frame as one line of JSON \
                 (application/x-ndjson); frames without a meta give a not-scored line",
                "funad developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // Any format and any caps features, because the element reads only the meta.
            let sink_caps = gst::Caps::builder("video/x-raw").any_features().build();
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &sink_caps,
            )
            .expect("valid sink pad template");
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &gst::Caps::new_empty_simple(OUTPUT_MEDIA_TYPE),
            )
            .expect("valid src pad template");
            vec![sink, src]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            *self.state.lock().unwrap() = Some(State::default());
        }

        let success = self.parent_change_state(transition)?;

        // The parent deactivated the pads, so no chain call uses the state now.
        if transition == gst::StateChange::PausedToReady {
            if let Some(state) = self.state.lock().unwrap().take() {
                gst::info!(
                    CAT,
                    imp = self,
                    "Stopped after {} lines",
                    state.next_sequence
                );
            }
        }
        Ok(success)
    }
}
