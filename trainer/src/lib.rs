//! FUN-AD: fully unsupervised anomaly detection with noisy training data.
//!
//! A frozen DINO-family ViT or EfficientNet-Lite0 ([`backbone`]) gives patch features
//! ([`features`]); Local-Net ([`localnet`]) scores each patch. Training
//! ([`train`]) needs no labels: pseudo-labels come from nearest-neighbour
//! distances to a memory bank of the images the current model finds most
//! normal, and a mutual-smoothness loss ties the scores of mutually nearest
//! features. [`model::Detector`] scores images and reads and writes model files.

pub mod backbone;
pub mod baselines;
pub mod data;
pub mod efficientnet;
pub mod eval;
pub mod feature_cache;
pub mod features;
pub mod fit;
pub mod gate;
pub mod head;
pub mod knn;
pub mod localnet;
pub mod loss;
pub mod map;
pub mod metrics;
pub mod model;
pub mod repo;
pub mod store;
pub mod synth;
pub mod train;

pub use backbone::Backbone;
pub use features::FeatureConfig;
pub use model::{Detector, ModelMeta, Scored, Verdict};
pub use train::TrainConfig;

/// Picks the compute device: `auto` takes CUDA when present, `cuda` fails
/// without it, `cpu` always works.
pub fn select_device(name: &str) -> anyhow::Result<tch::Device> {
    match name {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(tch::Device::Cuda(0))
            } else {
                anyhow::bail!(
                    "device `cuda` requested, but no CUDA device is available; use `cpu` or `auto`"
                )
            }
        }
        other => anyhow::bail!("device `{other}` is invalid: use auto, cpu or cuda"),
    }
}

/// Runs `work` and returns its result, or the first line of its panic
/// message as "libtorch failed: ...". libtorch reports some failures (bad
/// tensor values, for example) by panicking, and the caller's thread should
/// survive them.
pub fn catch_torch_panic<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        let first_line = message.lines().next().unwrap_or(message);
        format!("libtorch failed: {first_line}")
    })
}
