//! Shared set-up of the integration tests: paths to the repository, the
//! default backbone and the MTD dataset beside the checkout.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use funad::Backbone;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Returns the MTD dataset folder (MVTec layout): `FUNAD_MTD`, else `../shared/data/mtd`.
pub fn mtd() -> PathBuf {
    let path = std::env::var_os("FUNAD_MTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data/mtd"));
    assert!(
        path.join("train/good").is_dir(),
        "MTD not found at {}; set FUNAD_MTD",
        path.display()
    );
    path
}

pub fn backbone_path() -> PathBuf {
    let path = repo_root().join("weights/dinov2_vits14.safetensors");
    assert!(
        path.is_file(),
        "{} missing; run scripts/setup.sh",
        path.display()
    );
    path
}

/// Returns the default backbone on the CPU, loaded once per test binary.
pub fn backbone() -> Arc<Backbone> {
    static VIT: OnceLock<Arc<Backbone>> = OnceLock::new();
    VIT.get_or_init(|| Arc::new(Backbone::load(&backbone_path(), tch::Device::Cpu).unwrap()))
        .clone()
}
