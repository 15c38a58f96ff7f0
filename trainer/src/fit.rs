//! From unlabeled image files to a trained [`Detector`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::backbone::Backbone;
use crate::data::load_image;
use crate::features::{self, FeatureConfig};
use crate::head;
use crate::model::{Detector, ModelMeta, ScoreStats, FORMAT_VERSION};
use crate::synth;
use crate::train::{self, Progress, TrainConfig};

/// Images per backbone forward pass during feature extraction.
pub const EXTRACT_BATCH: usize = 8;

/// Progress report of [`fit`].
pub enum FitEvent<'a> {
    /// `done` of `total` images have gone through the backbone.
    Extract {
        done: usize,
        total: usize,
    },
    Train(&'a Progress),
}

/// Computes the patch features `[N, grid·grid, D]` of `total` 8-bit images.
/// Images are decoded lazily, so only one batch of them is in memory at a time.
pub fn extract_images(
    vit: &Backbone,
    cfg: &FeatureConfig,
    images: impl IntoIterator<Item = Result<Tensor>>,
    total: usize,
    on_done: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let mut out = Vec::new();
    let mut batch = Vec::with_capacity(EXTRACT_BATCH);
    let mut done = 0;
    let mut flush = |batch: &mut Vec<Tensor>, done: &mut usize| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let f = features::extract(vit, cfg, &Tensor::stack(batch, 0))?;
        let (b, gh, gw, d) = f.size4()?;
        out.push(f.view([b, gh * gw, d]));
        *done += batch.len();
        batch.clear();
        on_done(*done, total);
        Ok(())
    };
    let grid = cfg.grid(vit);
    for image in images {
        batch.push(features::preprocess_with(
            &image?,
            cfg.input_size,
            cfg.resize,
            grid,
            vit.device(),
        )?);
        if batch.len() == EXTRACT_BATCH {
            flush(&mut batch, &mut done)?;
        }
    }
    flush(&mut batch, &mut done)?;
    if out.is_empty() {
        bail!("no images to extract features from");
    }
    Ok(Tensor::cat(&out, 0))
}

/// Synthetic anomalies made from the training images themselves: `ratio × N`
/// images, each pasting another random training image through a Perlin mask.
pub fn synthetic_images(paths: &[PathBuf], ratio: f64, seed: u64) -> Result<Vec<Tensor>> {
    let count = (ratio * paths.len() as f64).round() as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_5A17);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let base = &paths[rng.gen_range(0..paths.len())];
        let texture = &paths[rng.gen_range(0..paths.len())];
        out.push(synth::synthesize(
            &load_image(base)?,
            &load_image(texture)?,
            &mut rng,
        ));
    }
    Ok(out)
}

/// Trains a detector on unlabeled images (any sizes, grey or colour). An
/// image that cannot be read is an error.
pub fn fit(
    vit: Arc<Backbone>,
    fcfg: &FeatureConfig,
    tcfg: &TrainConfig,
    paths: &[PathBuf],
    cancel: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(FitEvent),
) -> Result<Detector> {
    fit_inner(vit, fcfg, tcfg, paths, cancel, on_event, None)
}

/// Trains like [`fit`], but leaves out images that cannot be read, after
/// passing each one's path and error to `on_unreadable`.
pub fn fit_skipping_unreadable(
    vit: Arc<Backbone>,
    fcfg: &FeatureConfig,
    tcfg: &TrainConfig,
    paths: &[PathBuf],
    cancel: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(FitEvent),
    on_unreadable: &mut dyn FnMut(&Path, &anyhow::Error),
) -> Result<Detector> {
    fit_inner(
        vit,
        fcfg,
        tcfg,
        paths,
        cancel,
        on_event,
        Some(on_unreadable),
    )
}

fn fit_inner(
    vit: Arc<Backbone>,
    fcfg: &FeatureConfig,
    tcfg: &TrainConfig,
    paths: &[PathBuf],
    cancel: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(FitEvent),
    mut on_unreadable: Option<&mut dyn FnMut(&Path, &anyhow::Error)>,
) -> Result<Detector> {
    if paths.len() < 2 {
        bail!("training needs at least 2 images, got {}", paths.len());
    }
    tcfg.validate()?;
    fcfg.validate(&vit)?;
    let synthetic = synthetic_images(paths, tcfg.synthetic_ratio, tcfg.seed)?;
    let total = paths.len() + synthetic.len();
    let synthetic_count = synthetic.len() as i64;
    let cancelled = || cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
    let images = paths
        .iter()
        .filter_map(|p| {
            if cancelled() {
                return Some(Err(train::Cancelled.into()));
            }
            match (load_image(p), on_unreadable.as_mut()) {
                (Err(err), Some(report)) => {
                    report(p, &err);
                    None
                }
                (loaded, _) => Some(loaded),
            }
        })
        .chain(synthetic.into_iter().map(Ok));
    let feats = extract_images(&vit, fcfg, images, total, &mut |done, total| {
        on_event(FitEvent::Extract { done, total })
    })?;
    fit_features(vit, fcfg, tcfg, &feats, synthetic_count, cancel, &mut |p| {
        on_event(FitEvent::Train(p))
    })
}

/// Trains a detector on precomputed patch features `[N, grid·grid, D]`, of
/// which the last `synthetic` images are synthetic anomalies. Training uses
/// every image. The score head's bank and calibration use the real images
/// only, so that no pasted defect is scored as normal.
pub fn fit_features(
    vit: Arc<Backbone>,
    fcfg: &FeatureConfig,
    tcfg: &TrainConfig,
    feats: &Tensor,
    synthetic: i64,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Detector> {
    fit_features_observed(
        vit,
        fcfg,
        tcfg,
        feats,
        synthetic,
        cancel,
        on_progress,
        &mut |_, _| Ok(()),
        None,
    )
}

/// [`fit_features`] with an end-of-epoch callback and diagnostic patch
/// labels, as in [`train::train_observed`].
#[allow(clippy::too_many_arguments)]
pub fn fit_features_observed(
    vit: Arc<Backbone>,
    fcfg: &FeatureConfig,
    tcfg: &TrainConfig,
    feats: &Tensor,
    synthetic: i64,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&Progress),
    on_epoch: &mut dyn FnMut(&train::EpochStats, &crate::localnet::LocalNet) -> Result<()>,
    patch_truth: Option<&Tensor>,
) -> Result<Detector> {
    let feature_size = fcfg.validate(&vit)?;
    let (n, p, d) = feats.size3()?;
    if d != feature_size {
        bail!("features have width {d}, the feature options give {feature_size}");
    }
    let grid = fcfg.grid(&vit);
    if p != grid * grid {
        bail!("features have {p} patches per image, expected {grid}×{grid}");
    }
    if !(0..n).contains(&synthetic) {
        bail!(
            "synthetic image count {synthetic} is invalid for {n} images: use 0 to {}, so that \
             at least one image is real",
            n - 1
        );
    }
    let trained = train::train_observed(feats, tcfg, cancel, on_progress, on_epoch, patch_truth)?;

    let (head, maxima) = head::build(
        &trained.net,
        &feats.narrow(0, 0, n - synthetic),
        tcfg.score_head,
        head::BankOptions {
            image_share: tcfg.score_bank_share,
            max_features: tcfg.score_bank_features,
            seed: tcfg.seed,
            precision: tcfg.score_bank_precision,
            radius: tcfg.score_bank_radius,
            ranking: tcfg.score_bank_ranking,
        },
    )?;
    let stats = ScoreStats::from_scores(&maxima);
    let threshold = ScoreStats::threshold(tcfg.threshold_mads);
    let meta = ModelMeta {
        format_version: FORMAT_VERSION,
        model_id: String::new(),
        version: 1,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        backbone: vit.id().clone(),
        backbone_path: std::fs::canonicalize(vit.path())
            .unwrap_or_else(|_| vit.path().to_path_buf()),
        features: fcfg.clone(),
        feature_size,
        grid,
        score_stats: stats,
        score_head: tcfg.score_head,
        logit_stats: None,
        bank_stats: None,
        threshold,
        train: tcfg.clone(),
        selection: format!("last epoch ({}); no labels are read", tcfg.epochs),
        history: trained.history,
        train_images: n as usize,
    };
    Ok(Detector::new(vit, trained.vs, trained.net, head, meta))
}

/// Image logits (the largest patch logit of each image) of features `[N, P, D]`.
pub fn image_logits(net: &crate::localnet::LocalNet, feats: &Tensor) -> Result<Vec<f32>> {
    let (n, p, d) = feats.size3()?;
    let logits = net
        .logits(&feats.view([n * p, d]))
        .view([n, p])
        .amax(1, false);
    Ok(Vec::try_from(
        logits.to_device(Device::Cpu).to_kind(Kind::Float),
    )?)
}
