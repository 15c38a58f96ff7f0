//! # funadtrain
//!
//! A sink that learns from the live stream. Placed on a `tee` branch beside
//! `funadscore`, it keeps a bounded store of unlabeled frames on disk and
//! retrains a FUN-AD model on them in the background on a schedule. It checks
//! the new model against the one in service on recent frames held out of its
//! training, then puts it into service by replacing the model file atomically.
//! Every `funadscore` that loads that file switches to the new version
//! between two frames: at once in the same process, and at its next check of
//! the file (`model-check-interval`) in another process.
//!
//! ## Frame store
//!
//! `store-location` contains the frames as PNG files. Every `holdout-every`-th
//! frame goes to `store-location/holdout` instead, which keeps the newest
//! `holdout-frames` for the acceptance gate; no model ever trains on them.
//! The training store keeps a uniform random sample of all frames offered
//! since it was created (reservoir sampling), bounded by `max-frames` and
//! `max-bytes`. Both stores survive restarts: stored frames are found again,
//! and a frame half-written by a crash is deleted. The streaming thread only
//! copies the frame into a queue of `queue-frames` frames; a writer thread
//! encodes and stores it. When the queue is full the frame is dropped from
//! the store (never from the stream), counted in `dropped-frames`, and a
//! warning says so.
//!
//! ## Schedule
//!
//! A training starts after `train-every-frames` newly stored frames, every
//! `train-interval` seconds, daily at `train-at` (local time), or on the
//! `train` action signal, once the store contains `min-frames` frames. One
//! training runs at a time, on its own thread at the `nice` value given.
//! Going to READY or NULL cancels it within about one batch.
//!
//! ## Versions and the acceptance gate
//!
//! Each trained model gets the next version number and is kept as
//! `NAME.vNNNNNN.safetensors` beside the `model` file (see
//! [`funad::repo`]); the newest `keep-versions` stay. Before it is served,
//! it and the model in service score the held-out frames (see
//! [`funad::gate`]): a model that calls more than `gate-max-ng-share` of
//! them NG, or `gate-max-ng-increase` more than the model in service, or
//! whose scores do not vary, is kept aside as
//! `NAME.vNNNNNN.rejected.safetensors` and not served. `pin-version` serves
//! one kept version and stops automatic swaps; the `rollback` signal serves
//! the version before the one in service and pins it.
//!
//! ## Messages
//!
//! | message | fields |
//! | --- | --- |
//! | `funad-train-progress` | `phase` (`snapshot`, `extract`, `train`, `gate`, `save`), `percent` (gdouble), `epoch`, `epochs` (guint), `loss` (gdouble, -1 before training), `version` (guint64, the version being trained), `frames` (guint) |
//! | `funad-train-result` | `version`, `accepted`, `served` (gboolean), `reason` (gchararray), `path` (gchararray), `trigger` (`frames`, `interval`, `daily`, `signal`), `frames`, `holdout-frames` (guint), `ng-share`, `ng-share-current` (gdouble; -1 without a model in service), `seconds` (gdouble) |
//! | `funad-train-served` | `version`, `reason` (`trained`, `pinned`, `rollback`, `unpinned`) |
//!
//! Failures during a training (a full disk, an unwritable model folder) are
//! warnings, not errors: the pipeline keeps scoring with the model in
//! service, and a `funad-train-result` with `accepted` false gives the reason.
//!
//! ## Example
//!
//! ```text
//! gst-launch-1.0 v4l2src ! videoconvert ! tee name=t \
//!     t. ! queue ! funadscore model=line.safetensors wait-for-model=true ! fakesink \
//!     t. ! queue ! funadtrain store-location=frames model=line.safetensors \
//!         backbone=weights/dinov2_vits14.safetensors train-every-frames=2000
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
mod worker;

/// Number format of the scoring bank's nearest-neighbour search in the
/// models that funadtrain trains.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFunadSearchPrecision")]
pub enum FunadSearchPrecision {
    #[enum_value(name = "32-bit floats", nick = "float32")]
    Float32 = 0,
    #[enum_value(
        name = "bfloat16 products; the search runs about 2.5 times faster on CPUs with AVX512-BF16",
        nick = "bfloat16"
    )]
    Bfloat16 = 1,
}

impl From<FunadSearchPrecision> for funad::knn::Precision {
    fn from(p: FunadSearchPrecision) -> Self {
        match p {
            FunadSearchPrecision::Float32 => funad::knn::Precision::Float32,
            FunadSearchPrecision::Bfloat16 => funad::knn::Precision::Bfloat16,
        }
    }
}

/// Ranking of the training images that picks the scoring bank of the models
/// that funadtrain trains.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFunadBankRanking")]
pub enum FunadBankRanking {
    #[enum_value(
        name = "the trained Local-Net's largest patch score of each image",
        nick = "localnet"
    )]
    Localnet = 0,
    #[enum_value(
        name = "each image's largest patch distance to the other training images",
        nick = "distance"
    )]
    Distance = 1,
}

impl From<FunadBankRanking> for funad::head::BankRanking {
    fn from(r: FunadBankRanking) -> Self {
        match r {
            FunadBankRanking::Localnet => funad::head::BankRanking::Localnet,
            FunadBankRanking::Distance => funad::head::BankRanking::Distance,
        }
    }
}

impl From<funad::head::BankRanking> for FunadBankRanking {
    fn from(r: funad::head::BankRanking) -> Self {
        match r {
            funad::head::BankRanking::Localnet => FunadBankRanking::Localnet,
            funad::head::BankRanking::Distance => FunadBankRanking::Distance,
        }
    }
}

glib::wrapper! {
    pub struct FunadTrain(ObjectSubclass<imp::FunadTrain>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

/// Registers `funadtrain` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "funadtrain",
        gst::Rank::NONE,
        FunadTrain::static_type(),
    )
}
