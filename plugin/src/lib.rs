//! GStreamer plugin `funad`: visual anomaly detection with FUN-AD.
//!
//! The plugin contains three elements:
//!
//! - [`funadscore`](FunadScore) scores each video frame, attaches a
//!   [`FunadMeta`] to its buffer and posts a `funad-result` element message
//!   (fields in [`message`]).
//! - [`funadjson`](FunadJson) turns the meta of each frame into one line of
//!   JSON (`application/x-ndjson`) for a file, a socket or an application.
//! - [`funadtrain`](FunadTrain) stores unlabeled frames, retrains the model
//!   on them in the background and swaps each new version into service.

use gst::glib;

mod funadjson;
mod funadscore;
mod funadtrain;
pub mod message;
pub mod meta;
pub mod regions;
mod watch;

pub use funadjson::FunadJson;
pub use funadscore::{FunadDevice, FunadOverlay, FunadScore};
pub use funadtrain::{FunadBankRanking, FunadSearchPrecision, FunadTrain};
pub use meta::{FunadMeta, FunadResult, FunadVerdict};
pub use regions::FunadRegion;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Registers the meta with the plugin, so C code finds `GstFunadMetaAPI`
    // by name as soon as the plugin is loaded.
    meta::meta_api_type();
    meta::meta_info();
    funadscore::register(plugin)?;
    funadjson::register(plugin)?;
    funadtrain::register(plugin)
}

gst::plugin_define!(
    funad,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "unknown"
);
