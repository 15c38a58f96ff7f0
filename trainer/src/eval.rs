//! The FUN-AD evaluation protocol on an MVTec-layout folder: contaminate the
//! training set, train without labels, and measure detection and localisation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::backbone::Vit;
use crate::data::{self, Overlap};
use crate::features::FeatureConfig;
use crate::fit::{self, FitEvent};
use crate::knn;
use crate::map;
use crate::metrics::auroc;
use crate::train::TrainConfig;

/// Evaluation options.
#[derive(Clone, Debug, Serialize)]
pub struct EvalConfig {
    pub root: PathBuf,
    /// Anomaly-to-normal ratio of the contaminated training set.
    pub ratio: f64,
    pub seed: u64,
    pub features: FeatureConfig,
    pub train: TrainConfig,
    /// Patch features in the one-class nearest-neighbour baseline's bank, drawn at random.
    pub knn_bank: usize,
    /// Also train and score FUN-AD (off: only the baseline).
    pub funad: bool,
    /// Run the one-class nearest-neighbour baseline.
    pub baseline: bool,
    /// Folder where patch features are cached between runs (none: no cache).
    pub cache: Option<PathBuf>,
}

/// Metrics of one method. "No overlap" leaves the moved defect images out of
/// the test set; "Overlap" evaluates them too.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    pub method: String,
    pub image_auroc: f64,
    pub pixel_auroc: f64,
    pub overlap_image_auroc: f64,
    pub overlap_pixel_auroc: f64,
    /// F1 of the NG verdict at the label-free threshold, where the method has one.
    pub f1_at_threshold: Option<f64>,
    pub fit_seconds: f64,
}

/// Result of one evaluation run.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub config: EvalConfig,
    pub backbone: String,
    pub train_images: usize,
    pub moved_anomalies: usize,
    pub test_images: usize,
    pub test_anomalies: usize,
    pub extract_seconds: f64,
    pub methods: Vec<MethodResult>,
    pub total_seconds: f64,
}

/// Progress report of [`evaluate`].
pub enum EvalEvent<'a> {
    Stage(&'a str),
    Fit(FitEvent<'a>),
}

fn f1(scores: &[f32], labels: &[bool], threshold: f32) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
    for (&s, &l) in scores.iter().zip(labels) {
        match (s > threshold, l) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
            _ => {}
        }
    }
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fneg)
    }
}

/// Image and pixel AUROC of patch score grids `[T, g, g]` against the test samples.
fn score_maps(
    maps: &Tensor,
    test: &[data::Sample],
    input_size: i64,
) -> Result<(f64, f64, Vec<f32>)> {
    let maps = maps.to_device(Device::Cpu).to_kind(Kind::Float);
    let mut image_scores = Vec::with_capacity(test.len());
    let mut pixel_scores: Vec<f32> = Vec::new();
    let mut pixel_labels: Vec<bool> = Vec::new();
    for (i, sample) in test.iter().enumerate() {
        let grid = maps.get(i as i64);
        image_scores.push(f32::try_from(grid.max())?);
        let (w, h) = image::image_dimensions(&sample.path)?;
        let (w, h) = (w as i64, h as i64);
        let amap = map::anomaly_map(&grid, w, h, input_size);
        let mask = match &sample.mask {
            Some(m) => {
                let m = data::load_mask(m)?;
                if m.size() != [h, w] {
                    anyhow::bail!(
                        "mask of {} is {:?}, image is {h}×{w}",
                        sample.path.display(),
                        m.size()
                    );
                }
                m
            }
            None => Tensor::zeros([h, w], (Kind::Bool, Device::Cpu)),
        };
        pixel_scores.extend(Vec::<f32>::try_from(amap.flatten(0, 1))?);
        pixel_labels.extend(Vec::<bool>::try_from(mask.flatten(0, 1))?);
    }
    let labels: Vec<bool> = test.iter().map(|s| s.is_anomalous()).collect();
    let image = auroc(&image_scores, &labels).unwrap_or(f64::NAN);
    let pixel = auroc(&pixel_scores, &pixel_labels).unwrap_or(f64::NAN);
    Ok((image, pixel, image_scores))
}

/// Cache key of the features of one split: backbone, feature options,
/// synthetic-anomaly options and the image lists.
fn cache_key(vit: &Vit, cfg: &EvalConfig, split: &data::ContaminatedSplit) -> String {
    let mut h = Sha256::new();
    h.update(&vit.id().sha256);
    h.update(serde_json::to_string(&cfg.features).unwrap_or_default());
    h.update(format!("{}:{}", cfg.train.synthetic_ratio, cfg.train.seed));
    for p in &split.train {
        h.update(p.to_string_lossy().as_bytes());
    }
    for s in &split.test {
        h.update(s.path.to_string_lossy().as_bytes());
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// Runs the protocol: FUN-AD and a one-class nearest-neighbour baseline on the
/// same features of the same contaminated training set.
pub fn evaluate(
    vit: Arc<Vit>,
    cfg: &EvalConfig,
    on_event: &mut dyn FnMut(EvalEvent),
) -> Result<EvalReport> {
    let started = Instant::now();
    cfg.features.validate(&vit)?;
    let split = data::contaminated_split(&cfg.root, cfg.ratio, Overlap::NoOverlap, cfg.seed)?;
    let overlap_test: Vec<data::Sample> = split
        .test
        .iter()
        .chain(&split.moved_samples)
        .cloned()
        .collect();
    let moved_rows = Tensor::arange_start(
        (split.train.len() - split.moved) as i64,
        split.train.len() as i64,
        (Kind::Int64, vit.device()),
    );
    let labels: Vec<bool> = split.test.iter().map(|s| s.is_anomalous()).collect();

    on_event(EvalEvent::Stage("extracting features"));
    let t0 = Instant::now();
    let cache_file = cfg
        .cache
        .as_ref()
        .map(|dir| dir.join(format!("{}.safetensors", cache_key(&vit, cfg, &split))));
    let cached = match &cache_file {
        Some(f) if f.is_file() => {
            let named: HashMap<String, Tensor> = Tensor::read_safetensors(f)?.into_iter().collect();
            match (named.get("train"), named.get("test")) {
                (Some(a), Some(b)) => Some((a.to_device(vit.device()), b.to_device(vit.device()))),
                _ => None,
            }
        }
        _ => None,
    };
    let (train_feats, test_feats) = match cached {
        Some(pair) => pair,
        None => {
            let synthetic =
                fit::synthetic_images(&split.train, cfg.train.synthetic_ratio, cfg.train.seed)?;
            let train_count = split.train.len() + synthetic.len();
            let total = train_count + split.test.len();
            let train_images = split
                .train
                .iter()
                .map(|p| data::load_image(p))
                .chain(synthetic.into_iter().map(Ok));
            let train_feats = fit::extract_images(
                &vit,
                &cfg.features,
                train_images,
                train_count,
                &mut |done, _| on_event(EvalEvent::Fit(FitEvent::Extract { done, total })),
            )?;
            let offset = train_feats.size()[0] as usize;
            let test_images = split.test.iter().map(|s| data::load_image(&s.path));
            let test_feats = fit::extract_images(
                &vit,
                &cfg.features,
                test_images,
                split.test.len(),
                &mut |done, _| {
                    on_event(EvalEvent::Fit(FitEvent::Extract {
                        done: offset + done,
                        total,
                    }))
                },
            )?;
            if let Some(f) = &cache_file {
                std::fs::create_dir_all(f.parent().expect("cache file has a folder"))?;
                let tmp = f.with_extension("part");
                Tensor::write_safetensors(&[("train", &train_feats), ("test", &test_feats)], &tmp)?;
                std::fs::rename(&tmp, f)?;
            }
            (train_feats, test_feats)
        }
    };
    let extract_seconds = t0.elapsed().as_secs_f64();
    let grid = cfg.features.grid(&vit);
    let (t, p, d) = test_feats.size3()?;
    let mut methods = Vec::new();

    // One-class nearest-neighbour baseline (PatchCore without coreset): L2
    // distance to the nearest of a random sample of training patch features.
    if cfg.baseline {
        on_event(EvalEvent::Stage("one-class nearest-neighbour baseline"));
        let t1 = Instant::now();
        let flat = train_feats.view([-1, d]);
        let mut rows: Vec<i64> = (0..flat.size()[0]).collect();
        rows.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
        rows.truncate(cfg.knn_bank.max(1));
        let bank = flat.index_select(0, &Tensor::from_slice(&rows).to_device(flat.device()));
        let knn_grid = |feats: &Tensor| {
            let n = feats.size()[0];
            knn::nearest_distance(&feats.view([n * p, d]), &bank)
                .sqrt()
                .view([n, grid, grid])
        };
        let knn_maps = knn_grid(&test_feats);
        let fit_seconds = t1.elapsed().as_secs_f64();
        let (image, pixel, _) = score_maps(&knn_maps, &split.test, cfg.features.input_size)?;
        let all = Tensor::cat(
            &[
                knn_maps,
                knn_grid(&train_feats.index_select(0, &moved_rows)),
            ],
            0,
        );
        let (overlap_image, overlap_pixel, _) =
            score_maps(&all, &overlap_test, cfg.features.input_size)?;
        methods.push(MethodResult {
            method: format!("one-class nearest neighbour ({} patches)", bank.size()[0]),
            image_auroc: image,
            pixel_auroc: pixel,
            overlap_image_auroc: overlap_image,
            overlap_pixel_auroc: overlap_pixel,
            f1_at_threshold: None,
            fit_seconds,
        });
    }

    if cfg.funad {
        on_event(EvalEvent::Stage("training FUN-AD"));
        let t2 = Instant::now();
        let detector = fit::fit_features(
            vit.clone(),
            &cfg.features,
            &cfg.train,
            &train_feats,
            None,
            &mut |pr| on_event(EvalEvent::Fit(FitEvent::Train(pr))),
        )?;
        let fit_seconds = t2.elapsed().as_secs_f64();
        let maps = detector.score_features(&test_feats.view([t, grid, grid, d]))?;
        let (image, pixel, scores) = score_maps(&maps, &split.test, cfg.features.input_size)?;
        let moved = train_feats.index_select(0, &moved_rows);
        let moved_maps = detector.score_features(&moved.view([-1, grid, grid, d]))?;
        let all = Tensor::cat(&[maps, moved_maps], 0);
        let (overlap_image, overlap_pixel, _) =
            score_maps(&all, &overlap_test, cfg.features.input_size)?;
        let name = if cfg.train.synthetic_ratio > 0.0 {
            "FUN-AD* (synthetic anomalies)"
        } else {
            "FUN-AD"
        };
        methods.push(MethodResult {
            method: name.to_string(),
            image_auroc: image,
            pixel_auroc: pixel,
            overlap_image_auroc: overlap_image,
            overlap_pixel_auroc: overlap_pixel,
            f1_at_threshold: Some(f1(&scores, &labels, detector.meta().threshold)),
            fit_seconds,
        });
    }

    Ok(EvalReport {
        config: cfg.clone(),
        backbone: vit.id().name.clone(),
        train_images: split.train.len(),
        moved_anomalies: split.moved,
        test_images: split.test.len(),
        test_anomalies: labels.iter().filter(|&&l| l).count(),
        extract_seconds,
        methods,
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::f1;

    #[test]
    fn f1_known_value() {
        // tp = 1 (0.9), fp = 1 (0.8), fn = 1 (0.1): F1 = 2 / (2 + 1 + 1) = 0.5.
        let f = f1(&[0.9, 0.8, 0.1, 0.2], &[true, false, true, false], 0.5);
        assert!((f - 0.5).abs() < 1e-12);
    }
}
