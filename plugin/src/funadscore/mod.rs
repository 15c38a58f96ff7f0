//! # funadscore
//!
//! Scores each video frame with a FUN-AD model: a frozen backbone (a DINOv2
//! ViT by default, or EfficientNet-Lite0) gives patch features, and the model's score head (the distance to its memory
//! bank, or Local-Net's output) turns them into patch scores in [0, 1]. The
//! image score is the maximum patch score, and a frame is NG when its score is
//! above the threshold. The element works in place. It attaches a
//! [`FunadMeta`](crate::FunadMeta) to every buffer, posts one `funad-result`
//! element message per frame (see [`crate::message`]), and can draw a heat map,
//! an outline of the regions above the threshold and an OK/NG mark into the frame.
//!
//! With the `model` property empty, frames pass through untouched and their
//! verdict is `no-model`. A model path that cannot be loaded is an error
//! when the element starts.
//!
//! The `sequence` number counts frames from 0 at each start (READY→PAUSED).
//! A flush does not reset it, so after a seek it keeps rising and an
//! application can tell results apart by sequence alone. Gap buffers (flag
//! `GAP`) pass through unscored, without a meta or a message, and take no
//! sequence number.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 -m filesrc location=tile.jpg ! jpegdec ! videoconvert ! \
//!     funadscore model=model.safetensors overlay=both ! videoconvert ! pngenc ! \
//!     filesink location=tile-scored.png
//! ```

use gst::glib;
use gst::prelude::*;

mod finish;
mod imp;
mod overlay;
pub(crate) mod pixels;

/// Compute device of the model.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFunadDevice")]
pub enum FunadDevice {
    #[enum_value(name = "CUDA when available, else CPU", nick = "auto")]
    Auto = 0,
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 1,
    #[enum_value(name = "First CUDA device; an error when there is none", nick = "cuda")]
    Cuda = 2,
}

impl FunadDevice {
    /// Returns the device name that `funad::select_device` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            FunadDevice::Auto => "auto",
            FunadDevice::Cpu => "cpu",
            FunadDevice::Cuda => "cuda",
        }
    }
}

/// Drawing mode for scored frames.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFunadOverlay")]
pub enum FunadOverlay {
    #[enum_value(name = "Nothing: frames stay untouched", nick = "none")]
    None = 0,
    #[enum_value(name = "OK/NG mark in the top-left corner", nick = "mark")]
    Mark = 1,
    #[enum_value(name = "Heat map of the anomaly map, and the mark", nick = "heatmap")]
    Heatmap = 2,
    #[enum_value(
        name = "Outline of regions above the threshold, and the mark",
        nick = "outline"
    )]
    Outline = 3,
    #[enum_value(name = "Heat map, outline and mark", nick = "both")]
    Both = 4,
}

glib::wrapper! {
    pub struct FunadScore(ObjectSubclass<imp::FunadScore>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// Registers `funadscore` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "funadscore",
        gst::Rank::NONE,
        FunadScore::static_type(),
    )
}
