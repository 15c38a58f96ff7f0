//! The FUN-AD evaluation protocol on an MVTec-layout folder: contaminate the
//! training set, train without labels, and measure detection and localisation
//! of FUN-AD and of one-class memory-bank baselines on the same features.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::backbone::Backbone;
use crate::baselines;
use crate::data::{self, Overlap};
use crate::feature_cache;
use crate::features::FeatureConfig;
use crate::fit::{self, FitEvent};
use crate::head::ScoreHead;
use crate::knn;
use crate::knn::Precision;
use crate::localnet::LocalNet;
use crate::map;
use crate::metrics::{self, auroc, RegionLabels};
use crate::model::ScoreStats;
use crate::train::TrainConfig;

/// False-positive rate up to which the PRO curve is integrated (MVTec AD's 0.3).
pub const AUPRO_MAX_FPR: f64 = 0.3;

/// A method that [`evaluate`] runs on the shared features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// L2 distance to the nearest of a random sample of training patch features.
    Knn,
    /// PatchCore-style: the same score against a greedy-coreset memory bank.
    Patchcore,
    /// SoftPatch-style: drop patches with a high local outlier factor at their
    /// position, then the greedy coreset.
    Softpatch,
    /// SPADE-style: the nearest training patch among the training images
    /// whose mean patch feature is nearest to the test image's.
    Retrieval,
    /// FUN-AD: Local-Net trained on pseudo-labels.
    Funad,
}

/// Options of the memory-bank baselines.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineConfig {
    /// Patch features in the random bank of [`Method::Knn`].
    pub knn_bank: usize,
    /// Positional search radius of [`Method::Knn`] in patches (`None`: the whole bank).
    pub knn_radius: Option<i64>,
    /// Coreset size as a share of the (kept) training patch features.
    pub coreset_ratio: f64,
    /// Dimensions of the random projection used to pick the coreset (0 = none).
    pub projection_dim: i64,
    /// Neighbours of the local outlier factor of [`Method::Softpatch`].
    pub lof_neighbours: i64,
    /// Share of images dropped at each patch position by [`Method::Softpatch`].
    pub softpatch_discard: f64,
    /// Training images searched for each test image by [`Method::Retrieval`].
    pub retrieval_images: i64,
    /// Bank neighbours of PatchCore's image-score reweighting. [`Method::Patchcore`]
    /// adds a reweighted row when this is above 0.
    pub reweight_neighbours: i64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            knn_bank: 40_000,
            knn_radius: None,
            coreset_ratio: 0.01,
            projection_dim: 128,
            lof_neighbours: 6,
            softpatch_discard: 0.15,
            retrieval_images: 50,
            reweight_neighbours: 9,
        }
    }
}

impl BaselineConfig {
    /// Checks every option and names the first invalid one.
    pub fn validate(&self) -> Result<()> {
        if self.knn_bank == 0 {
            bail!("knn bank size 0 is invalid: use at least 1 patch feature, such as 40000");
        }
        if !(self.coreset_ratio > 0.0 && self.coreset_ratio <= 1.0) {
            bail!(
                "coreset ratio {} is invalid: use a share above 0 and at most 1, such as 0.01",
                self.coreset_ratio
            );
        }
        if self.projection_dim < 0 {
            bail!(
                "projection dimension {} is invalid: use 0 (none) or a positive size such as 128",
                self.projection_dim
            );
        }
        if self.lof_neighbours < 1 {
            bail!(
                "LOF neighbours {} is invalid: use at least 1, such as 6",
                self.lof_neighbours
            );
        }
        if !(0.0..1.0).contains(&self.softpatch_discard) {
            bail!(
                "SoftPatch discard share {} is invalid: use a value from 0 to below 1, such as 0.15",
                self.softpatch_discard
            );
        }
        if let Some(r) = self.knn_radius.filter(|r| *r < 0) {
            bail!("knn radius {r} is invalid: use 0 or more patches, or leave it out");
        }
        if self.retrieval_images < 1 {
            bail!(
                "retrieval images {} is invalid: use at least 1 training image, such as 50",
                self.retrieval_images
            );
        }
        if self.reweight_neighbours < 0 || self.reweight_neighbours == 1 {
            bail!(
                "reweighting neighbours {} is invalid: use 0 (no reweighted row) or at least 2, \
                 such as 9 (with 1, every weight is 0)",
                self.reweight_neighbours
            );
        }
        Ok(())
    }
}

/// Evaluation options.
#[derive(Clone, Debug, Serialize)]
pub struct EvalConfig {
    pub root: PathBuf,
    /// Anomaly-to-normal ratio of the contaminated training set.
    pub ratio: f64,
    pub seed: u64,
    pub features: FeatureConfig,
    pub train: TrainConfig,
    /// Methods to run, in this order.
    pub methods: Vec<Method>,
    pub baselines: BaselineConfig,
    /// Measure FUN-AD on the test set after every epoch, for the oracle
    /// comparison only. Training does not read these numbers.
    pub every_epoch: bool,
    /// Also score the trained FUN-AD model with the other score heads.
    pub compare_heads: bool,
    /// Also score it with the bank head at each of these scoring-bank shares.
    pub compare_bank_shares: Vec<f64>,
    /// Also score it with the bank head searching in the other number format
    /// (bfloat16 when training used float32, and the reverse).
    pub compare_bank_precision: bool,
    /// Folder where patch features are cached between runs (none: no cache).
    pub cache: Option<PathBuf>,
}

/// Test metrics of FUN-AD after one epoch, No-overlap setting.
#[derive(Clone, Debug, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub image_auroc: f64,
    pub pixel_auroc: f64,
    pub aupro: f64,
}

/// Test images shown as examples of each kind in [`MethodResult::examples`].
pub const EXAMPLES_PER_KIND: usize = 3;

/// Patch score grid of one No-overlap test image, kept for figures.
#[derive(Clone, Debug, Serialize)]
pub struct ExampleMap {
    /// `best detection` (highest-scoring defects), `missed defect`
    /// (lowest-scoring defects), `false alarm` (highest-scoring good images)
    /// or `typical TYPE` (the images of that defect type in the middle of its
    /// score ranking).
    pub kind: String,
    /// Index into [`EvalReport::test`].
    pub test_index: usize,
    pub image_score: f32,
    /// Patch rows and columns that show the image: the square grid, or fewer
    /// with the letterbox fit.
    pub rows: i64,
    pub cols: i64,
    /// Patch scores, row-major `[rows, cols]`.
    pub patch_scores: Vec<f32>,
}

/// Returns the defect types among `defects` (`good` or a type per image),
/// sorted and without repeats.
fn distinct_defect_types(defects: &[String]) -> Vec<&str> {
    let mut types: Vec<&str> = defects
        .iter()
        .map(String::as_str)
        .filter(|d| *d != "good")
        .collect();
    types.sort_unstable();
    types.dedup();
    types
}

/// Picks the examples of [`ExampleMap`]'s kinds from the score grids of
/// [`image_grids`]. `defect_types` contains `good` or the defect type of every image.
fn example_maps(
    grids: &[Tensor],
    image_scores: &[f32],
    labels: &[bool],
    defect_types: &[String],
) -> Result<Vec<ExampleMap>> {
    let mut defects: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let mut good: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    let descending = |a: &usize, b: &usize| image_scores[*b].total_cmp(&image_scores[*a]);
    defects.sort_by(descending);
    good.sort_by(descending);
    let typical = distinct_defect_types(defect_types).into_iter().map(|t| {
        // The images of this type in the middle of its score ranking.
        let mut ranked: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] && defect_types[i] == t)
            .collect();
        ranked.sort_by(descending);
        let start = ranked.len().saturating_sub(EXAMPLES_PER_KIND) / 2;
        let middle = ranked
            .into_iter()
            .skip(start)
            .take(EXAMPLES_PER_KIND)
            .collect::<Vec<_>>();
        (format!("typical {t}"), middle)
    });
    let picks = [
        (
            "best detection",
            defects
                .iter()
                .take(EXAMPLES_PER_KIND)
                .copied()
                .collect::<Vec<_>>(),
        ),
        (
            "missed defect",
            defects
                .iter()
                .rev()
                .take(EXAMPLES_PER_KIND)
                .copied()
                .collect(),
        ),
        (
            "false alarm",
            good.iter().take(EXAMPLES_PER_KIND).copied().collect(),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let mut out = Vec::new();
    for (kind, indices) in picks.into_iter().chain(typical) {
        for i in indices {
            out.push(ExampleMap {
                kind: kind.clone(),
                test_index: i,
                image_score: image_scores[i],
                rows: grids[i].size()[0],
                cols: grids[i].size()[1],
                patch_scores: Vec::<f32>::try_from(grids[i].flatten(0, 1))?,
            });
        }
    }
    Ok(out)
}

/// Metrics of one method. "No overlap" leaves the moved defect images out of
/// the test set; "Overlap" evaluates them too.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    pub method: String,
    pub kind: Method,
    pub image_auroc: f64,
    pub pixel_auroc: f64,
    /// Pixel AUROC with every image and mask resized to the square model
    /// input, so each image weighs the same (No overlap).
    pub pixel_auroc_at_input: f64,
    /// Area under the PRO curve up to FPR 0.3, normalised by 0.3.
    pub aupro: f64,
    pub overlap_image_auroc: f64,
    pub overlap_pixel_auroc: f64,
    pub overlap_aupro: f64,
    /// F1 of the NG verdict at the label-free threshold, where the method has one.
    pub f1_at_threshold: Option<f64>,
    pub fit_seconds: f64,
    /// Memory bank size in patch features, for the bank baselines.
    pub bank_size: Option<i64>,
    /// Image scores of the No-overlap test images, in the order of [`EvalReport::test`].
    pub image_scores: Vec<f32>,
    /// Per-epoch test metrics (FUN-AD with `every_epoch` only).
    pub epochs: Vec<EpochMetrics>,
    /// FUN-AD's training statistics per epoch, with the pseudo-label
    /// diagnostics against the moved images' masks.
    pub history: Vec<crate::train::EpochStats>,
    /// Score grids of a few best, missed and falsely alarmed test images.
    pub examples: Vec<ExampleMap>,
    /// Image and pixel AUROC of each defect type against the good test
    /// images (No overlap).
    pub by_defect: Vec<DefectMetrics>,
}

/// Detection and localisation of one defect type: its test images and the
/// good ones, nothing else (No overlap).
#[derive(Clone, Debug, Serialize)]
pub struct DefectMetrics {
    pub defect: String,
    /// Test images of this type.
    pub images: usize,
    pub image_auroc: f64,
    /// Over the pixels of this type's images and of the good images.
    pub pixel_auroc: f64,
}

/// One No-overlap test image of the report.
#[derive(Clone, Debug, Serialize)]
pub struct TestImage {
    pub path: PathBuf,
    /// `good` or the defect type.
    pub defect: String,
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
    pub test: Vec<TestImage>,
    pub total_seconds: f64,
}

/// Progress report of [`evaluate`].
pub enum EvalEvent<'a> {
    Stage(&'a str),
    Fit(FitEvent<'a>),
    Epoch(&'a EpochMetrics),
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

/// Image labels and per-pixel ground truth of a test set, loaded once.
struct GroundTruth {
    labels: Vec<bool>,
    /// Image width and height of every sample.
    sizes: Vec<(i64, i64)>,
    /// `good` or the defect type of every sample.
    defects: Vec<String>,
    /// Every mask at its image's resolution, concatenated.
    pixel_labels: Vec<bool>,
    regions: RegionLabels,
    /// Every mask resized to the square model input, concatenated.
    input_masks: Vec<bool>,
}

impl GroundTruth {
    fn load(test: &[data::Sample], input_size: i64) -> Result<Self> {
        let mut sizes = Vec::with_capacity(test.len());
        let mut pixel_labels = Vec::new();
        let mut regions = RegionLabels::new();
        let mut input_masks = Vec::new();
        for sample in test {
            let (w, h) = image::image_dimensions(&sample.path)?;
            let (w, h) = (w as i64, h as i64);
            let mask = match &sample.mask {
                Some(m) => {
                    let m = data::load_mask(m)?;
                    if m.size() != [h, w] {
                        bail!(
                            "mask of {} is {:?}, image is {h}×{w}",
                            sample.path.display(),
                            m.size()
                        );
                    }
                    // Bilinear resampling, then a defect share above one half gives
                    // the mask at the model's input resolution.
                    let small = m
                        .to_kind(Kind::Float)
                        .view([1, 1, h, w])
                        .upsample_bilinear2d([input_size, input_size], false, None, None)
                        .gt(0.5);
                    input_masks.extend(Vec::<bool>::try_from(small.flatten(0, 3))?);
                    Vec::<bool>::try_from(m.flatten(0, 1))?
                }
                None => {
                    input_masks.extend(std::iter::repeat_n(
                        false,
                        (input_size * input_size) as usize,
                    ));
                    vec![false; (w * h) as usize]
                }
            };
            regions
                .push_mask(&mask, w as usize)
                .map_err(anyhow::Error::msg)?;
            pixel_labels.extend_from_slice(&mask);
            sizes.push((w, h));
        }
        Ok(GroundTruth {
            labels: test.iter().map(|s| s.is_anomalous()).collect(),
            sizes,
            defects: test.iter().map(|s| s.defect.clone()).collect(),
            pixel_labels,
            regions,
            input_masks,
        })
    }
}

/// Detection and localisation metrics of one set of score grids.
struct MapMetrics {
    image_auroc: f64,
    pixel_auroc: f64,
    pixel_auroc_at_input: f64,
    aupro: f64,
    image_scores: Vec<f32>,
    by_defect: Vec<DefectMetrics>,
}

/// Indices of the images of `truth` that are good or show `defect`.
fn defect_and_good_images(truth: &GroundTruth, defect: &str) -> Vec<usize> {
    (0..truth.defects.len())
        .filter(|&i| truth.defects[i] == "good" || truth.defects[i] == defect)
        .collect()
}

/// Image AUROC of the images `keep` of `truth`.
fn defect_image_auroc(truth: &GroundTruth, keep: &[usize], image_scores: &[f32]) -> f64 {
    let scores: Vec<f32> = keep.iter().map(|&i| image_scores[i]).collect();
    let labels: Vec<bool> = keep.iter().map(|&i| truth.labels[i]).collect();
    auroc(&scores, &labels).unwrap_or(f64::NAN)
}

/// [`DefectMetrics`] of every defect type in `truth`, from the image scores
/// and the concatenated pixel scores of all its images.
fn defect_metrics(
    truth: &GroundTruth,
    image_scores: &[f32],
    pixel_scores: &[f32],
) -> Vec<DefectMetrics> {
    let types = distinct_defect_types(&truth.defects);
    let mut starts = Vec::with_capacity(truth.sizes.len() + 1);
    starts.push(0usize);
    for &(w, h) in &truth.sizes {
        starts.push(starts.last().unwrap() + (w * h) as usize);
    }
    types
        .into_iter()
        .map(|t| {
            let keep = defect_and_good_images(truth, t);
            let (mut ps, mut pl) = (Vec::new(), Vec::new());
            for &i in &keep {
                ps.extend_from_slice(&pixel_scores[starts[i]..starts[i + 1]]);
                pl.extend_from_slice(&truth.pixel_labels[starts[i]..starts[i + 1]]);
            }
            DefectMetrics {
                defect: t.to_string(),
                images: keep.iter().filter(|&&i| truth.labels[i]).count(),
                image_auroc: defect_image_auroc(truth, &keep, image_scores),
                pixel_auroc: auroc(&ps, &pl).unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// The patches of each score grid `[T, g, g]` that show its image (all of
/// them unless the images are letterboxed), on the CPU. `sizes` gives the
/// T images' widths and heights.
fn image_grids(maps: &Tensor, sizes: &[(i64, i64)], features: &FeatureConfig) -> Vec<Tensor> {
    let maps = maps.to_device(Device::Cpu).to_kind(Kind::Float);
    let g = maps.size()[1];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| {
            features
                .content(g, w, h)
                .crop(&maps.get(i as i64))
                .contiguous()
        })
        .collect()
}

/// Metrics of patch score grids `[T, g, g]` against the ground truth of the
/// same T images: image score = max score of the patches that show the
/// image; pixel scores from the upsampled and blurred anomaly map at each
/// image's own resolution.
fn score_maps(
    maps: &Tensor,
    truth: &GroundTruth,
    features: &FeatureConfig,
    per_defect: bool,
) -> Result<MapMetrics> {
    let input_size = features.input_size;
    let grids = image_grids(maps, &truth.sizes, features);
    let mut image_scores = Vec::with_capacity(truth.sizes.len());
    let mut pixel_scores: Vec<f32> = Vec::with_capacity(truth.regions.len());
    let mut input_scores: Vec<f32> = Vec::with_capacity(truth.input_masks.len());
    for (grid, &(w, h)) in grids.iter().zip(&truth.sizes) {
        image_scores.push(f32::try_from(grid.max())?);
        let amap = map::anomaly_map(grid, w, h, input_size);
        pixel_scores.extend(Vec::<f32>::try_from(amap.flatten(0, 1))?);
        let at_input = map::anomaly_map(grid, input_size, input_size, input_size);
        input_scores.extend(Vec::<f32>::try_from(at_input.flatten(0, 1))?);
    }
    let pixel = metrics::pixel_metrics(&pixel_scores, &truth.regions, AUPRO_MAX_FPR);
    let by_defect = if per_defect {
        defect_metrics(truth, &image_scores, &pixel_scores)
    } else {
        Vec::new()
    };
    Ok(MapMetrics {
        image_auroc: auroc(&image_scores, &truth.labels).unwrap_or(f64::NAN),
        pixel_auroc: pixel.auroc.unwrap_or(f64::NAN),
        pixel_auroc_at_input: auroc(&input_scores, &truth.input_masks).unwrap_or(f64::NAN),
        aupro: pixel.aupro.unwrap_or(f64::NAN),
        image_scores,
        by_defect,
    })
}

/// Everything a method needs: features of the contaminated split and the ground truth.
struct Prepared {
    split: data::ContaminatedSplit,
    /// Training features `[N, P, D]`: `split.train` in order, then synthetic images.
    train_feats: Tensor,
    test_feats: Tensor,
    moved_rows: Tensor,
    /// Patch labels `[N, P]` of the training images (true: the patch touches
    /// a defect), for the pseudo-label diagnostics only.
    train_truth: Tensor,
    truth: GroundTruth,
    overlap_truth: GroundTruth,
    grid: i64,
    features: FeatureConfig,
}

impl Prepared {
    /// Evaluates score grids of the test images and of the moved images in
    /// both overlap settings.
    fn metrics(&self, test_maps: &Tensor, moved_maps: &Tensor) -> Result<(MapMetrics, MapMetrics)> {
        let no_overlap = score_maps(test_maps, &self.truth, &self.features, true)?;
        let all = Tensor::cat(&[test_maps, moved_maps], 0);
        let overlap = score_maps(&all, &self.overlap_truth, &self.features, false)?;
        Ok((no_overlap, overlap))
    }

    /// Example maps of the No-overlap test images.
    fn examples(&self, test_maps: &Tensor, image_scores: &[f32]) -> Result<Vec<ExampleMap>> {
        let grids = image_grids(test_maps, &self.truth.sizes, &self.features);
        example_maps(
            &grids,
            image_scores,
            &self.truth.labels,
            &self.truth.defects,
        )
    }

    fn moved_feats(&self) -> Tensor {
        self.train_feats.index_select(0, &self.moved_rows)
    }

    /// Training features of the split's own images, without the synthetic
    /// anomalies of FUN-AD*, which only FUN-AD's training uses.
    fn real_train_feats(&self) -> Tensor {
        self.train_feats.narrow(0, 0, self.split.train.len() as i64)
    }

    /// Number of synthetic images at the end of `train_feats`.
    fn synthetic_count(&self) -> i64 {
        self.train_feats.size()[0] - self.split.train.len() as i64
    }
}

fn result(
    method: String,
    kind: Method,
    (no_overlap, overlap): (MapMetrics, MapMetrics),
    fit_seconds: f64,
) -> MethodResult {
    MethodResult {
        method,
        kind,
        image_auroc: no_overlap.image_auroc,
        pixel_auroc: no_overlap.pixel_auroc,
        pixel_auroc_at_input: no_overlap.pixel_auroc_at_input,
        aupro: no_overlap.aupro,
        overlap_image_auroc: overlap.image_auroc,
        overlap_pixel_auroc: overlap.pixel_auroc,
        overlap_aupro: overlap.aupro,
        f1_at_threshold: None,
        fit_seconds,
        bank_size: None,
        image_scores: no_overlap.image_scores,
        epochs: Vec::new(),
        history: Vec::new(),
        examples: Vec::new(),
        by_defect: no_overlap.by_defect,
    }
}

/// Scores test and moved images by L2 distance to the nearest bank feature.
fn bank_method(
    prepared: &Prepared,
    kind: Method,
    name: String,
    bank: &Tensor,
    fit_seconds: f64,
) -> Result<MethodResult> {
    let mut r = distance_method(prepared, kind, name, fit_seconds, |feats| {
        let (n, p, d) = feats.size3()?;
        Ok(knn::nearest_distance(&feats.view([n * p, d]), bank).view([n, p]))
    })?;
    r.bank_size = Some(bank.size()[0]);
    Ok(r)
}

/// Scores test and moved images by the square root of `squared`, which maps
/// patch features `[n, p, d]` to squared distances `[n, p]`.
fn distance_method(
    prepared: &Prepared,
    kind: Method,
    name: String,
    fit_seconds: f64,
    squared: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<MethodResult> {
    let (test_maps, moved_maps) = distance_maps(prepared, squared)?;
    maps_result(prepared, kind, name, fit_seconds, &test_maps, &moved_maps)
}

/// Distance grids `[n, g, g]` of the test and the moved images.
fn distance_maps(
    prepared: &Prepared,
    squared: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let g = prepared.grid;
    let grids = |feats: &Tensor| -> Result<Tensor> {
        let n = feats.size()[0];
        Ok(squared(feats)?.sqrt().view([n, g, g]))
    };
    Ok((
        grids(&prepared.test_feats)?,
        grids(&prepared.moved_feats())?,
    ))
}

/// Builds a method's result from its grids of the test and the moved images.
fn maps_result(
    prepared: &Prepared,
    kind: Method,
    name: String,
    fit_seconds: f64,
    test_maps: &Tensor,
    moved_maps: &Tensor,
) -> Result<MethodResult> {
    let mut r = result(
        name,
        kind,
        prepared.metrics(test_maps, moved_maps)?,
        fit_seconds,
    );
    r.examples = prepared.examples(test_maps, &r.image_scores)?;
    Ok(r)
}

/// Flat index `[n]` of each image's highest-scoring patch among the patches
/// that show the image, from score grids `[n, g, g]`.
fn peak_patches(maps: &Tensor, sizes: &[(i64, i64)], features: &FeatureConfig) -> Result<Tensor> {
    let maps = maps.to_device(Device::Cpu).to_kind(Kind::Float);
    let g = maps.size()[1];
    let mut peaks = Vec::with_capacity(sizes.len());
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let content = features.content(g, w, h);
        let crop = content.crop(&maps.get(i as i64));
        let k = i64::try_from(crop.flatten(0, 1).argmax(0, false))?;
        peaks.push((content.top + k / content.cols) * g + content.left + k % content.cols);
    }
    Ok(Tensor::from_slice(&peaks))
}

/// Returns `plain`, a PatchCore-style result, with PatchCore's reweighted image
/// scores ([`baselines::reweighting_weights`]). The maps, and with them
/// every pixel metric, stay those of `plain`.
fn reweighted_result(
    prepared: &Prepared,
    plain: &MethodResult,
    (test_maps, moved_maps): (&Tensor, &Tensor),
    bank: &Tensor,
    neighbours: i64,
) -> Result<MethodResult> {
    // w · s*, with s* the plain row's own maximum, so that no score rises.
    let peak_scores = |feats: &Tensor, maps: &Tensor, sizes: &[(i64, i64)]| -> Result<Vec<f32>> {
        let (n, _, d) = feats.size3()?;
        let peaks = peak_patches(maps, sizes, &prepared.features)?.to_device(feats.device());
        let queries = feats
            .gather(1, &peaks.view([n, 1, 1]).expand([n, 1, d], false), false)
            .view([n, d]);
        let weights: Vec<f64> = Vec::try_from(
            baselines::reweighting_weights(&queries, bank, neighbours)?.to_device(Device::Cpu),
        )?;
        let maxima = image_grids(maps, sizes, &prepared.features)
            .iter()
            .map(|grid| f32::try_from(grid.max()))
            .collect::<Result<Vec<f32>, _>>()?;
        Ok(weights
            .iter()
            .zip(maxima)
            .map(|(w, s)| (w * s as f64) as f32)
            .collect())
    };

    let test_sizes = &prepared.truth.sizes;
    let test = peak_scores(&prepared.test_feats, test_maps, test_sizes)?;
    let moved = peak_scores(
        &prepared.moved_feats(),
        moved_maps,
        &prepared.overlap_truth.sizes[test_sizes.len()..],
    )?;

    let mut r = plain.clone();
    r.method = format!("{}, reweighted ({neighbours} neighbours)", plain.method);
    r.image_auroc = auroc(&test, &prepared.truth.labels).unwrap_or(f64::NAN);
    let all: Vec<f32> = test.iter().chain(&moved).copied().collect();
    r.overlap_image_auroc = auroc(&all, &prepared.overlap_truth.labels).unwrap_or(f64::NAN);

    // Per defect type, only the image AUROC changes.
    let truth = &prepared.truth;
    r.by_defect = plain
        .by_defect
        .iter()
        .map(|m| DefectMetrics {
            image_auroc: defect_image_auroc(
                truth,
                &defect_and_good_images(truth, &m.defect),
                &test,
            ),
            ..m.clone()
        })
        .collect();

    r.examples = prepared.examples(test_maps, &test)?;
    r.image_scores = test;
    Ok(r)
}

/// Draws a random bank of training patch features `[M, D]` and returns it
/// with the patch index of each row within its image `[M]`.
fn random_bank(prepared: &Prepared, cfg: &EvalConfig) -> Result<(Tensor, Tensor)> {
    let (_, p, d) = prepared.real_train_feats().size3()?;
    let flat = prepared.real_train_feats().view([-1, d]);
    let mut rows: Vec<i64> = (0..flat.size()[0]).collect();
    rows.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    rows.truncate(cfg.baselines.knn_bank);
    let rows = Tensor::from_slice(&rows).to_device(flat.device());
    Ok((flat.index_select(0, &rows), rows.remainder(p)))
}

fn coreset_of(features: &Tensor, cfg: &EvalConfig) -> Result<Tensor> {
    let n = features.size()[0];
    let count = ((cfg.baselines.coreset_ratio * n as f64).round() as usize).max(1);
    baselines::coreset_bank(features, count, cfg.baselines.projection_dim, cfg.seed)
}

fn run_baseline(prepared: &Prepared, cfg: &EvalConfig, kind: Method) -> Result<Vec<MethodResult>> {
    let started = Instant::now();
    let train_feats = prepared.real_train_feats();
    let d = train_feats.size()[2];
    let b = &cfg.baselines;
    if kind == Method::Retrieval {
        let k = b.retrieval_images;
        let name = format!("SPADE-style retrieval ({k} nearest images, all their patches)");
        let bank = &train_feats;
        return Ok(vec![distance_method(prepared, kind, name, 0.0, |feats| {
            knn::nearest_distance_in_similar_images(feats, bank, k)
        })?]);
    }
    let (bank, name) = match kind {
        Method::Knn => {
            let (bank, positions) = random_bank(prepared, cfg)?;
            let Some(radius) = b.knn_radius else {
                let name = format!(
                    "one-class nearest neighbour ({} random patches)",
                    bank.size()[0]
                );
                let r = bank_method(prepared, kind, name, &bank, started.elapsed().as_secs_f64())?;
                return Ok(vec![r]);
            };
            let name = format!(
                "one-class nearest neighbour ({} random patches, radius {radius})",
                bank.size()[0]
            );
            let search = knn::PreparedBank::positional(
                &bank,
                &positions,
                prepared.grid,
                radius,
                Precision::Float32,
            )?;
            let fit_seconds = started.elapsed().as_secs_f64();
            let mut r = distance_method(prepared, kind, name, fit_seconds, |feats| {
                let (n, p, d) = feats.size3()?;
                Ok(search
                    .try_nearest_distance(&feats.view([n * p, d]))?
                    .view([n, p]))
            })?;
            r.bank_size = Some(bank.size()[0]);
            return Ok(vec![r]);
        }
        Method::Patchcore => {
            let bank = coreset_of(&train_feats.view([-1, d]), cfg)?;
            let name = format!("PatchCore-style coreset ({:.0}%)", b.coreset_ratio * 100.0);
            let fit_seconds = started.elapsed().as_secs_f64();
            let (test_maps, moved_maps) = distance_maps(prepared, |feats| {
                let (n, p, d) = feats.size3()?;
                Ok(knn::nearest_distance(&feats.view([n * p, d]), &bank).view([n, p]))
            })?;
            let mut plain =
                maps_result(prepared, kind, name, fit_seconds, &test_maps, &moved_maps)?;
            plain.bank_size = Some(bank.size()[0]);
            if b.reweight_neighbours == 0 {
                return Ok(vec![plain]);
            }
            // A tiny training set can give a coreset smaller than the neighbourhood.
            let rows = bank.size()[0];
            if rows < 2 {
                log::warn!(
                    "the PatchCore-style bank has {rows} row, too few to reweight, so the \
                     reweighted row is left out; raise --coreset-ratio"
                );
                return Ok(vec![plain]);
            }
            let neighbours = b.reweight_neighbours.min(rows);
            if neighbours < b.reweight_neighbours {
                log::warn!(
                    "--reweight-neighbours {} exceeds the PatchCore-style bank of {rows} rows, \
                     so {rows} are used",
                    b.reweight_neighbours
                );
            }
            let reweighted = reweighted_result(
                prepared,
                &plain,
                (&test_maps, &moved_maps),
                &bank,
                neighbours,
            )?;
            return Ok(vec![plain, reweighted]);
        }
        Method::Softpatch => {
            let keep = baselines::softpatch_keep_mask(
                &train_feats,
                b.lof_neighbours,
                b.softpatch_discard,
            )?;
            let kept_feats = train_feats.masked_select(&keep.unsqueeze(2)).view([-1, d]);
            let bank = coreset_of(&kept_feats, cfg)?;
            let name = format!(
                "SoftPatch-style LOF filter ({:.0}% dropped, k = {}) + coreset ({:.0}%)",
                b.softpatch_discard * 100.0,
                b.lof_neighbours,
                b.coreset_ratio * 100.0
            );
            (bank, name)
        }
        Method::Funad | Method::Retrieval => unreachable!("handled elsewhere"),
    };
    Ok(vec![bank_method(
        prepared,
        kind,
        name,
        &bank,
        started.elapsed().as_secs_f64(),
    )?])
}

fn run_funad(
    prepared: &Prepared,
    vit: Arc<Backbone>,
    cfg: &EvalConfig,
    on_event: &mut dyn FnMut(EvalEvent),
) -> Result<Vec<MethodResult>> {
    on_event(EvalEvent::Stage("training FUN-AD"));
    let started = Instant::now();
    let mut epochs = Vec::new();
    let mut eval_seconds = 0.0;
    // Both callbacks report progress; training calls them one after the other.
    let on_event = std::cell::RefCell::new(on_event);
    let detector = {
        let mut on_epoch = |stats: &crate::train::EpochStats, net: &LocalNet| -> Result<()> {
            if !cfg.every_epoch {
                return Ok(());
            }
            let t = Instant::now();
            let (maps, _, _) = head_grids(prepared, net, cfg, cfg.train.score_head)?;
            let m = score_maps(&maps, &prepared.truth, &prepared.features, false)?;
            let epoch = EpochMetrics {
                epoch: stats.epoch,
                image_auroc: m.image_auroc,
                pixel_auroc: m.pixel_auroc,
                aupro: m.aupro,
            };
            (on_event.borrow_mut())(EvalEvent::Epoch(&epoch));
            epochs.push(epoch);
            eval_seconds += t.elapsed().as_secs_f64();
            Ok(())
        };
        fit::fit_features_observed(
            vit,
            &cfg.features,
            &cfg.train,
            &prepared.train_feats,
            prepared.synthetic_count(),
            None,
            &mut |pr| (on_event.borrow_mut())(EvalEvent::Fit(FitEvent::Train(pr))),
            &mut on_epoch,
            Some(&prepared.train_truth),
        )?
    };
    let fit_seconds = started.elapsed().as_secs_f64() - eval_seconds;
    let g = prepared.grid;
    let d = prepared.test_feats.size()[2];
    let test_maps = detector.score_features(&prepared.test_feats.view([-1, g, g, d]))?;
    // An explicit count, because a view of no moved images cannot infer it.
    let moved = prepared.moved_feats();
    let moved_maps = detector.score_features(&moved.view([moved.size()[0], g, g, d]))?;
    let name = if cfg.train.synthetic_ratio > 0.0 {
        "FUN-AD* (synthetic anomalies)"
    } else {
        "FUN-AD"
    };
    let mut r = result(
        format!(
            "{name} ({} epochs, {:?} head, last epoch kept)",
            cfg.train.epochs, cfg.train.score_head
        ),
        Method::Funad,
        prepared.metrics(&test_maps, &moved_maps)?,
        fit_seconds,
    );
    r.f1_at_threshold = Some(f1(
        &r.image_scores,
        &prepared.truth.labels,
        detector.meta().threshold,
    ));
    r.epochs = epochs;
    r.history = detector.meta().history.clone();
    r.bank_size = detector.head().bank.as_ref().map(|b| b.size()[0]);
    r.examples = prepared.examples(&test_maps, &r.image_scores)?;
    let mut results = vec![r];
    if cfg.compare_heads {
        for head in [ScoreHead::Discriminator, ScoreHead::Bank, ScoreHead::Blend] {
            if head == cfg.train.score_head {
                continue;
            }
            (on_event.borrow_mut())(EvalEvent::Stage("scoring with another head"));
            let t = Instant::now();
            let mut r = head_result(prepared, &detector, cfg, head)?;
            r.method = format!("{name} ({} epochs, {head:?} head)", cfg.train.epochs);
            r.fit_seconds = fit_seconds + t.elapsed().as_secs_f64();
            results.push(r);
        }
    }
    for &share in &cfg.compare_bank_shares {
        (on_event.borrow_mut())(EvalEvent::Stage("scoring with another bank share"));
        let t = Instant::now();
        let mut other = cfg.clone();
        other.train.score_bank_share = share;
        let mut r = head_result(prepared, &detector, &other, ScoreHead::Bank)?;
        r.method = format!(
            "{name} ({} epochs, Bank head, {:.0}% of images)",
            cfg.train.epochs,
            share * 100.0
        );
        r.fit_seconds = fit_seconds + t.elapsed().as_secs_f64();
        results.push(r);
    }
    if cfg.compare_bank_precision {
        (on_event.borrow_mut())(EvalEvent::Stage("scoring with another search precision"));
        let t = Instant::now();
        let mut other = cfg.clone();
        other.train.score_bank_precision = match cfg.train.score_bank_precision {
            Precision::Float32 => Precision::Bfloat16,
            Precision::Bfloat16 => Precision::Float32,
        };
        let mut r = head_result(prepared, &detector, &other, ScoreHead::Bank)?;
        r.method = format!(
            "{name} ({} epochs, Bank head, {:?} search)",
            cfg.train.epochs, other.train.score_bank_precision
        );
        r.fit_seconds = fit_seconds + t.elapsed().as_secs_f64();
        results.push(r);
    }
    Ok(results)
}

/// Calibrated score grids of the test and the moved images under `head`,
/// built from `net` and the training features as [`fit::fit_features`]
/// does, and the size of the head's bank.
fn head_grids(
    prepared: &Prepared,
    net: &LocalNet,
    cfg: &EvalConfig,
    head: ScoreHead,
) -> Result<(Tensor, Tensor, Option<i64>)> {
    let t = &cfg.train;
    let (parts, maxima) = crate::head::build(
        net,
        &prepared.real_train_feats(),
        head,
        crate::head::BankOptions {
            image_share: t.score_bank_share,
            max_features: t.score_bank_features,
            seed: t.seed,
            precision: t.score_bank_precision,
            radius: t.score_bank_radius,
            ranking: t.score_bank_ranking,
        },
    )?;
    let stats = ScoreStats::from_scores(&maxima);
    let g = prepared.grid;
    let grids = |feats: &Tensor| -> Result<Tensor> {
        let (n, p, d) = feats.size3()?;
        let raw = parts.raw(net, &feats.view([n * p, d]))?;
        Ok(stats.calibrate(&raw).view([n, g, g]))
    };
    Ok((
        grids(&prepared.test_feats)?,
        grids(&prepared.moved_feats())?,
        parts.bank.as_ref().map(|b| b.size()[0]),
    ))
}

/// Scores the test set with the trained Local-Net of `detector` through another score head.
fn head_result(
    prepared: &Prepared,
    detector: &crate::Detector,
    cfg: &EvalConfig,
    head: ScoreHead,
) -> Result<MethodResult> {
    let (test_maps, moved_maps, bank_size) = head_grids(prepared, detector.local_net(), cfg, head)?;
    let mut r = result(
        String::new(),
        Method::Funad,
        prepared.metrics(&test_maps, &moved_maps)?,
        0.0,
    );
    r.f1_at_threshold = Some(f1(
        &r.image_scores,
        &prepared.truth.labels,
        detector.meta().threshold,
    ));
    r.bank_size = bank_size;
    r.examples = prepared.examples(&test_maps, &r.image_scores)?;
    Ok(r)
}

/// Returns the epoch that an oracle with test labels would keep: the best
/// mean of image and pixel AUROC, the selection rule the FUN-AD paper states.
pub fn oracle_epoch(epochs: &[EpochMetrics]) -> Option<&EpochMetrics> {
    epochs
        .iter()
        .filter(|e| e.image_auroc.is_finite() && e.pixel_auroc.is_finite())
        .max_by(|a, b| (a.image_auroc + a.pixel_auroc).total_cmp(&(b.image_auroc + b.pixel_auroc)))
}

/// Builds the contaminated split, its features (from the dataset cache when
/// present) and its ground truth.
fn prepare(
    vit: &Backbone,
    cfg: &EvalConfig,
    on_event: &mut dyn FnMut(EvalEvent),
) -> Result<(Prepared, f64)> {
    let split = data::contaminated_split(&cfg.root, cfg.ratio, Overlap::NoOverlap, cfg.seed)?;
    // All images of the folder: with no overlap, train and test together cover them.
    let all: Vec<PathBuf> = split
        .train
        .iter()
        .cloned()
        .chain(split.test.iter().map(|s| s.path.clone()))
        .collect();

    on_event(EvalEvent::Stage("extracting features"));
    let t0 = Instant::now();
    let total = all.len();
    let dataset = feature_cache::dataset_features(
        vit,
        &cfg.features,
        &all,
        cfg.cache.as_deref(),
        &mut |done, _| on_event(EvalEvent::Fit(FitEvent::Extract { done, total })),
    )?;
    let mut train_feats = dataset.select(&split.train)?;
    // NOTE: synthetic anomalies depend on the split and seed, so they are
    // extracted on every run and never cached.
    let synthetic = fit::synthetic_images(&split.train, cfg.train.synthetic_ratio, cfg.train.seed)?;
    if !synthetic.is_empty() {
        let count = synthetic.len();
        let extra = fit::extract_images(
            vit,
            &cfg.features,
            synthetic.into_iter().map(Ok),
            count,
            &mut |done, total| on_event(EvalEvent::Fit(FitEvent::Extract { done, total })),
        )?;
        train_feats = Tensor::cat(&[train_feats, extra], 0);
    }
    let test_paths: Vec<PathBuf> = split.test.iter().map(|s| s.path.clone()).collect();
    let test_feats = dataset.select(&test_paths)?;
    let extract_seconds = t0.elapsed().as_secs_f64();

    on_event(EvalEvent::Stage("loading ground truth"));
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
    let grid = cfg.features.grid(vit);
    let train_truth = {
        let (n, p) = (train_feats.size()[0], grid * grid);
        let normal = (split.train.len() - split.moved) as i64;
        let mut rows = vec![Tensor::zeros([normal, p], (Kind::Bool, Device::Cpu))];
        for s in &split.moved_samples {
            let m = match &s.mask {
                Some(m) => data::load_mask(m)?,
                None => Tensor::zeros([1, 1], (Kind::Bool, Device::Cpu)),
            };
            let (h, w) = m.size2()?;
            // A patch is anomalous when any defect pixel falls inside it.
            // Letterbox padding counts as normal, although it mirrors the image.
            let c = cfg.features.content(grid, w, h);
            let cells = m
                .to_kind(Kind::Float)
                .view([1, 1, h, w])
                .adaptive_max_pool2d([c.rows, c.cols])
                .0
                .gt(0.0)
                .view([c.rows, c.cols]);
            let full = Tensor::zeros([grid, grid], (Kind::Bool, Device::Cpu));
            c.crop(&full).copy_(&cells);
            rows.push(full.view([1, p]));
        }
        let synthetic = n - split.train.len() as i64;
        rows.push(Tensor::zeros([synthetic, p], (Kind::Bool, Device::Cpu)));
        Tensor::cat(&rows, 0)
    };
    let prepared = Prepared {
        train_truth,
        truth: GroundTruth::load(&split.test, cfg.features.input_size)?,
        overlap_truth: GroundTruth::load(&overlap_test, cfg.features.input_size)?,
        split,
        train_feats,
        test_feats,
        moved_rows,
        grid,
        features: cfg.features.clone(),
    };
    Ok((prepared, extract_seconds))
}

/// Runs the protocol: every requested method on the same features of the
/// same contaminated training set, scored in both overlap settings.
pub fn evaluate(
    vit: Arc<Backbone>,
    cfg: &EvalConfig,
    on_event: &mut dyn FnMut(EvalEvent),
) -> Result<EvalReport> {
    let started = Instant::now();
    cfg.features.validate(&vit)?;
    cfg.baselines.validate()?;
    if let Some(bad) = cfg
        .compare_bank_shares
        .iter()
        .find(|s| !(**s > 0.0 && **s <= 1.0))
    {
        bail!("bank share {bad} is invalid: use a share above 0 and at most 1, such as 0.9");
    }
    if cfg.methods.is_empty() {
        bail!("no methods to evaluate: pass --methods with knn, patchcore, softpatch, retrieval or funad");
    }
    if cfg.methods.contains(&Method::Funad) {
        cfg.train.validate()?;
    }
    let (prepared, extract_seconds) = prepare(&vit, cfg, on_event)?;

    let mut methods = Vec::new();
    for &kind in &cfg.methods {
        let rows = match kind {
            Method::Funad => run_funad(&prepared, vit.clone(), cfg, on_event)?,
            _ => {
                on_event(EvalEvent::Stage(match kind {
                    Method::Knn => "one-class nearest-neighbour baseline",
                    Method::Patchcore => "PatchCore-style coreset baseline",
                    Method::Retrieval => "SPADE-style retrieval baseline",
                    _ => "SoftPatch-style baseline",
                }));
                run_baseline(&prepared, cfg, kind)?
            }
        };
        methods.extend(rows);
    }

    let split = &prepared.split;
    Ok(EvalReport {
        config: cfg.clone(),
        backbone: vit.id().name.clone(),
        train_images: split.train.len(),
        moved_anomalies: split.moved,
        test_images: split.test.len(),
        test_anomalies: prepared.truth.labels.iter().filter(|&&l| l).count(),
        extract_seconds,
        methods,
        test: split
            .test
            .iter()
            .map(|s| TestImage {
                path: s.path.clone(),
                defect: s.defect.clone(),
            })
            .collect(),
        total_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_known_value() {
        // tp = 1 (0.9), fp = 1 (0.8), fn = 1 (0.1): F1 = 2 / (2 + 1 + 1) = 0.5.
        let f = f1(&[0.9, 0.8, 0.1, 0.2], &[true, false, true, false], 0.5);
        assert!((f - 0.5).abs() < 1e-12);
    }

    #[test]
    fn oracle_picks_best_mean() {
        let e = |epoch, image_auroc, pixel_auroc| EpochMetrics {
            epoch,
            image_auroc,
            pixel_auroc,
            aupro: 0.0,
        };
        let epochs = [
            e(1, 0.8, 0.7),
            e(2, 0.9, 0.5),
            e(3, 0.7, 0.85),
            e(4, f64::NAN, 1.0),
        ];
        // Sums 1.5, 1.4, 1.55; epoch 4 has no image AUROC and is skipped.
        assert_eq!(oracle_epoch(&epochs).unwrap().epoch, 3);
        assert!(oracle_epoch(&[]).is_none());
    }

    #[test]
    fn defect_metrics_per_type() {
        // Four 2×1 images: two good, one crack, one hole; one defect pixel each.
        let mut regions = RegionLabels::new();
        let masks = [[false, false], [false, false], [true, false], [false, true]];
        for m in &masks {
            regions.push_mask(m, 2).unwrap();
        }
        let truth = GroundTruth {
            labels: vec![false, false, true, true],
            sizes: vec![(2, 1); 4],
            defects: ["good", "good", "crack", "hole"].map(String::from).to_vec(),
            pixel_labels: masks.iter().flatten().copied().collect(),
            regions,
            input_masks: Vec::new(),
        };

        let image_scores = [0.1, 0.5, 0.4, 0.9];
        let pixel_scores = [0.1, 0.2, 0.3, 0.5, 0.22, 0.05, 0.2, 0.25];
        let m = defect_metrics(&truth, &image_scores, &pixel_scores);
        let got: Vec<(&str, usize, f64, f64)> = m
            .iter()
            .map(|d| (d.defect.as_str(), d.images, d.image_auroc, d.pixel_auroc))
            .collect();

        // crack: 0.4 beats one of the good images' 0.1 and 0.5. Its defect
        // pixel 0.22 beats 3 of the 5 normal pixels 0.1, 0.2, 0.3, 0.5, 0.05;
        // with the hole image's pixels counted too it would be 4 of 7.
        // hole: 0.9 beats both; 0.25 beats 0.1, 0.2 and 0.2 of 5.
        assert_eq!(got, vec![("crack", 1, 0.5, 0.6), ("hole", 1, 1.0, 0.6)]);
    }

    #[test]
    fn examples_pick_extremes() {
        // Four 1×1 grids: defects score 0.9 and 0.2, good images 0.8 and 0.1.
        let maps = Tensor::from_slice(&[0.9f32, 0.8, 0.2, 0.1]).view([4, 1, 1]);
        let grids: Vec<Tensor> = (0..4).map(|i| maps.get(i)).collect();
        let scores = [0.9, 0.8, 0.2, 0.1];
        let labels = [true, false, true, false];
        let defects = ["crack", "good", "crack", "good"].map(String::from);
        let examples = example_maps(&grids, &scores, &labels, &defects).unwrap();
        let picked: Vec<(&str, usize)> = examples
            .iter()
            .map(|e| (e.kind.as_str(), e.test_index))
            .collect();
        assert_eq!(
            picked,
            [
                ("best detection", 0),
                ("best detection", 2),
                ("missed defect", 2),
                ("missed defect", 0),
                ("false alarm", 1),
                ("false alarm", 3),
                ("typical crack", 0),
                ("typical crack", 2),
            ]
        );
        assert_eq!(examples[4].patch_scores, vec![0.8]);
    }

    #[test]
    fn typical_examples_are_the_middle_of_each_type() {
        // Five uneven images scored 0.5, 0.1, 0.4, 0.2, 0.3 and one blowhole.
        let scores = [0.5f32, 0.1, 0.4, 0.2, 0.3, 0.9, 0.0];
        let grids: Vec<Tensor> = scores
            .iter()
            .map(|&s| Tensor::from_slice(&[s]).view([1, 1]))
            .collect();
        let labels = [true, true, true, true, true, true, false];
        let defects = [
            "uneven", "uneven", "uneven", "uneven", "uneven", "blowhole", "good",
        ]
        .map(String::from);
        let examples = example_maps(&grids, &scores, &labels, &defects).unwrap();
        let typical: Vec<(&str, usize)> = examples
            .iter()
            .filter(|e| e.kind.starts_with("typical"))
            .map(|e| (e.kind.as_str(), e.test_index))
            .collect();
        // Ranked 0.5, 0.4, 0.3, 0.2, 0.1: the middle three are 0.4, 0.3, 0.2.
        assert_eq!(
            typical,
            [
                ("typical blowhole", 5),
                ("typical uneven", 2),
                ("typical uneven", 4),
                ("typical uneven", 3),
            ]
        );
    }

    #[test]
    fn baseline_options_rejected() {
        assert!(BaselineConfig::default().validate().is_ok());
        let bad = [
            BaselineConfig {
                coreset_ratio: 0.0,
                ..Default::default()
            },
            BaselineConfig {
                knn_bank: 0,
                ..Default::default()
            },
            BaselineConfig {
                lof_neighbours: 0,
                ..Default::default()
            },
            BaselineConfig {
                softpatch_discard: 1.0,
                ..Default::default()
            },
            BaselineConfig {
                projection_dim: -1,
                ..Default::default()
            },
            BaselineConfig {
                reweight_neighbours: -1,
                ..Default::default()
            },
            BaselineConfig {
                reweight_neighbours: 1,
                ..Default::default()
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }

    #[test]
    fn peak_patches_stay_inside_the_image() {
        // Two 4×4 grids. Stretched, the peak of the first is its corner
        // (row 0, column 3), index 3. Letterboxed, a 200×100 image covers
        // rows 1–2 only, so the corner is off the image and the peak is the
        // highest of those rows: row 2, column 0, index 8.
        let mut values = vec![0.0f32; 32];
        values[3] = 9.0;
        values[8] = 5.0;
        values[4] = 1.0;
        values[16 + 13] = 7.0;
        let maps = Tensor::from_slice(&values).view([2, 4, 4]);
        let sizes = [(200, 100), (100, 100)];
        let stretch = FeatureConfig::default();
        let peaks: Vec<i64> =
            Vec::try_from(peak_patches(&maps, &sizes, &stretch).unwrap()).unwrap();
        assert_eq!(peaks, vec![3, 13]);
        let letterbox = FeatureConfig {
            resize: crate::features::Resize::Letterbox,
            ..FeatureConfig::default()
        };
        let peaks: Vec<i64> =
            Vec::try_from(peak_patches(&maps, &sizes, &letterbox).unwrap()).unwrap();
        assert_eq!(peaks, vec![8, 13]);
    }
}
