//! Score heads: how a trained Local-Net turns patch features into patch scores.
//!
//! FUN-AD as published scores a patch by the discriminator's output. The
//! trained Local-Net also ranks the training images from most to least
//! normal, which picks a memory bank with few defects in it: the backbone
//! features of all but the highest-scoring training images. The
//! nearest-neighbour distance to that bank is the signal the pseudo-labels
//! were cut from, and it keeps the full ranking that the binary labels throw
//! away. The `bank` head scores by that distance alone; the `blend` head adds
//! the two, each in robust standard deviations of the training images.
//!
//! The bank contains backbone features, not adaptor features. The adaptor's
//! LeakyReLU shrinks every negative component five-fold even at its identity
//! start, and training moves it further.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::knn;
use crate::localnet::LocalNet;
use crate::model::ScoreStats;

// NOTE: at the default 40,000 features the bank search cuts the scoring rate
// on 2 CPU cores to about half of the discriminator head's (scripts/bench_heads.sh).
// `--score-bank-features` and `--score-bank-precision bfloat16` trade that cost
// against accuracy.

/// Patch score of a trained model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScoreHead {
    /// The discriminator's logit, as FUN-AD (Im et al., 2025) publishes.
    Discriminator,
    /// L2 distance to the nearest backbone feature of the training images
    /// ranked most normal (see [`BankRanking`]).
    Bank,
    /// Sum of the discriminator logit and the bank distance, each standardised
    /// by the median and robust spread of the training images' scores.
    Blend,
}

impl ScoreHead {
    /// Returns the head of model files written before heads existed.
    pub fn legacy() -> Self {
        ScoreHead::Discriminator
    }

    pub fn uses_bank(self) -> bool {
        self != ScoreHead::Discriminator
    }
}

/// Builds the scoring bank: backbone features of the training images whose
/// image score ranks below `image_share`, at most `max_features` of them drawn
/// at random (seeded), from features `[N, P, D]`. Returns the bank `[M, D]`,
/// the training image index of each row `[M]` and the patch index of each
/// row within its image `[M]`.
pub fn final_bank(
    net: &LocalNet,
    features: &Tensor,
    image_share: f64,
    max_features: usize,
    seed: u64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let (n, p, d) = features.size3()?;
    let image_scores = net
        .logits(&features.view([n * p, d]))
        .view([n, p])
        .amax(1, false);
    bank_of_lowest(&image_scores, features, image_share, max_features, seed)
}

/// [`final_bank`] with the images ranked by `image_scores` `[N]`, lowest first.
pub fn bank_of_lowest(
    image_scores: &Tensor,
    features: &Tensor,
    image_share: f64,
    max_features: usize,
    seed: u64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let _guard = tch::no_grad_guard();
    let (n, p, d) = features.size3()?;
    if n == 0 || max_features == 0 {
        bail!(
            "the scoring bank needs at least one training image and a size above 0: \
             train on images and pass a score bank size such as 40000"
        );
    }
    let order: Vec<i64> = Vec::try_from(image_scores.argsort(0, false).to_device(Device::Cpu))?;
    let keep = ((n as f64 * image_share).round() as usize).clamp(1, n as usize);
    let chosen = Tensor::from_slice(&order[..keep]).to_device(features.device());
    let mut bank = features.index_select(0, &chosen).view([-1, d]);
    let mut groups = chosen.repeat_interleave_self_int(p, Some(0), None);
    let mut positions = Tensor::arange(p, (Kind::Int64, features.device())).repeat([keep as i64]);
    let rows = bank.size()[0];
    // A cap above the kept images' patch count puts each kept image in the
    // bank whole. HeadParts::with_bank_groups keeps such an image from
    // matching itself when it is scored again.
    if rows > max_features as i64 {
        let mut idx: Vec<i64> = (0..rows).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ba4c));
        idx.truncate(max_features);
        idx.sort_unstable();
        let idx = Tensor::from_slice(&idx).to_device(features.device());
        bank = bank.index_select(0, &idx);
        groups = groups.index_select(0, &idx);
        positions = positions.index_select(0, &idx);
    }
    Ok((bank, groups, positions))
}

/// Patch-grid layout of a positional scoring bank.
#[derive(Debug)]
pub struct BankLayout {
    /// Patch index of each bank row within its image `[M]`.
    pub positions: Tensor,
    /// Side of the square patch grid.
    pub grid: i64,
    /// Largest row or column offset between a scored patch and the bank patches it is compared with.
    pub radius: i64,
}

/// A score head with what it needs: the bank and the statistics that put its
/// parts on one scale.
pub struct HeadParts {
    pub head: ScoreHead,
    /// Backbone features of the scoring bank `[M, D]` (bank and blend heads).
    pub bank: Option<Tensor>,
    /// Grid positions of the bank rows when the search is positional.
    pub layout: Option<BankLayout>,
    /// Training image maxima of the discriminator logit.
    pub logit_stats: ScoreStats,
    /// Training image maxima of the bank distance (bank and blend heads).
    pub bank_stats: Option<ScoreStats>,
    /// The bank prepared once for the searches of every frame.
    prepared: Option<knn::PreparedBank>,
    /// The training images with every patch in the bank, so that such an
    /// image scored again is measured against the other images.
    whole: Option<WholeImages>,
}

/// Training images whose every patch is in the scoring bank. Without them, a
/// training image that comes back (the Overlap protocol, or `funad score`
/// run on the training folder) finds each of its patches at distance 0 and
/// scores as normal, defects included. Such a frame is measured against the
/// other images instead, as the calibration measured it.
#[derive(Debug)]
pub struct WholeImages {
    /// Training image index of each bank row `[M]`.
    pub bank_groups: Tensor,
    /// Patches per image.
    pub patches: i64,
    /// Mean patch feature of each image held whole `[G, D]`.
    descriptors: Tensor,
    /// Training image index of each descriptor `[G]`.
    groups: Tensor,
    /// Bank rows of each image held whole, in bank order `[G, patches]`.
    rows: Tensor,
}

/// Largest share of a frame's squared patch norms that the squared distances
/// to a bank image's patches at the same positions may add up to for the
/// frame to count as a copy. The nearest two distinct MTD training images
/// differ by 0.021. A training image extracted alone instead of in a batch
/// differed from itself by about 1e-7.
const SAME_IMAGE_TOLERANCE: f64 = 2e-3;

/// Bank images, nearest by mean patch feature, that are checked as copies of
/// a scored frame; up to this many copies are skipped.
const COPY_CANDIDATES: i64 = 8;

impl WholeImages {
    /// Finds the images of `bank_groups` `[M]` with all `patches` of their
    /// rows in `bank` `[M, D]`, or `None` when there are none. Fails when a
    /// group is not a whole number from 0 to 2^24 − 1.
    pub fn find(bank: &Tensor, bank_groups: &Tensor, patches: i64) -> Result<Option<Self>> {
        let _guard = tch::no_grad_guard();
        let (m, d) = bank.size2()?;
        if bank_groups.size() != [m] {
            bail!(
                "the bank's image indices have shape {:?}, but the bank has {m} rows; retrain \
                 the model or restore its file",
                bank_groups.size()
            );
        }
        if m == 0 || patches <= 0 {
            return Ok(None);
        }
        let device = bank.device();
        let values = bank_groups.to_device(device).to_kind(Kind::Double);
        let valid = values
            .isfinite()
            .logical_and(&values.ge(0.0))
            .logical_and(&values.lt(16_777_216.0))
            .logical_and(&values.eq_tensor(&values.round()));
        if !bool::try_from(valid.all())? {
            bail!(
                "the bank's image indices hold a value that is not a whole number from 0 \
                 to 16777215; retrain the model or restore its file"
            );
        }
        let bank_groups = values.to_kind(Kind::Int64);

        let (ids, inverse, counts) = bank_groups.internal_unique2(true, true, true);
        let whole = counts.eq(patches).nonzero().view([-1]);
        if whole.size()[0] == 0 {
            return Ok(None);
        }

        // Rows sorted by image, bank order kept within each image.
        let (_, order) = inverse.sort_stable(true, 0, false);
        let starts = counts.cumsum(0, Kind::Int64) - &counts;
        let offsets = Tensor::arange(patches, (Kind::Int64, device));
        let rows = order
            .index_select(
                0,
                &(starts.index_select(0, &whole).unsqueeze(1) + offsets.unsqueeze(0)).view([-1]),
            )
            .view([-1, patches]);
        let sums = Tensor::zeros([ids.size()[0], d], (Kind::Float, device)).index_add(
            0,
            &inverse,
            &bank.to_kind(Kind::Float),
        );
        Ok(Some(WholeImages {
            bank_groups,
            patches,
            descriptors: sums.index_select(0, &whole) / patches as f64,
            groups: ids.index_select(0, &whole),
            rows,
        }))
    }

    /// Overwrites the squared distances `[n]` of each whole frame in
    /// `features` `[n, D]` that copies bank images with its distances to the
    /// other images. `bank` is `prepared`'s matrix in its original order.
    fn search_copies_elsewhere(
        &self,
        prepared: &knn::PreparedBank,
        bank: &Tensor,
        features: &Tensor,
        squared: &Tensor,
    ) -> Result<()> {
        let n = features.size()[0];
        let p = self.patches;
        if n == 0 || n % p != 0 {
            return Ok(());
        }
        let device = features.device();
        for i in 0..n / p {
            let frame = features.narrow(0, i * p, p);
            let copies = self.copies(bank, &frame)?;
            if copies.is_empty() {
                continue;
            }

            // Every copy gets the frame's own group, -1, so the search skips
            // them all.
            let copies = Tensor::from_slice(&copies).to_device(device);
            let groups = self.bank_groups.where_self(
                &Tensor::isin(&self.bank_groups, &copies, false, true),
                &Tensor::from(-1i64).to_device(device),
            );
            let own = Tensor::full([p], -1, (Kind::Int64, device));
            let other = prepared.try_nearest_distance_other_group(&frame, &own, &groups)?;
            let mut slot = squared.narrow(0, i * p, p);
            slot.copy_(&other);
        }
        Ok(())
    }

    /// Returns the training images in `bank` that one frame's patch features
    /// `[patches, D]` copy (empty for a new frame).
    fn copies(&self, bank: &Tensor, frame: &Tensor) -> Result<Vec<i64>> {
        let frame = frame.to_kind(Kind::Float);
        let mean = frame.mean_dim(0, true, None);
        let k = COPY_CANDIDATES.min(self.descriptors.size()[0]);
        let (_, nearest) = knn::squared_distances(&mean, &self.descriptors).topk(k, 1, false, true);
        let norm = f64::try_from(frame.square().sum(None))?;
        let mut out = Vec::new();
        for c in Vec::<i64>::try_from(nearest.view([-1]).to_device(Device::Cpu))? {
            let rows = bank.index_select(0, &self.rows.get(c)).to_kind(Kind::Float);
            let gap = f64::try_from((&frame - rows).square().sum(None))?;
            if gap <= SAME_IMAGE_TOLERANCE * norm {
                out.push(i64::try_from(self.groups.get(c))?);
            }
        }
        Ok(out)
    }
}

impl HeadParts {
    /// Wraps a head and prepares its bank for searching, positionally when
    /// `layout` is given. Fails when the layout does not fit the bank.
    pub fn new(
        head: ScoreHead,
        bank: Option<Tensor>,
        layout: Option<BankLayout>,
        logit_stats: ScoreStats,
        bank_stats: Option<ScoreStats>,
        precision: knn::Precision,
    ) -> Result<Self> {
        let prepared = match (&bank, &layout) {
            (Some(b), Some(l)) => Some(knn::PreparedBank::positional(
                b,
                &l.positions,
                l.grid,
                l.radius,
                precision,
            )?),
            (Some(b), None) => Some(knn::PreparedBank::new(b, precision)),
            (None, _) => None,
        };
        Ok(HeadParts {
            head,
            bank,
            layout,
            logit_stats,
            bank_stats,
            prepared,
            whole: None,
        })
    }

    /// Adds the training image index of each bank row `[M]`, so that a
    /// training image held whole in the bank is scored against the other
    /// images (see [`WholeImages`]).
    pub fn with_bank_groups(mut self, bank_groups: &Tensor, patches: i64) -> Result<Self> {
        if let Some(bank) = &self.bank {
            self.whole = WholeImages::find(bank, bank_groups, patches)?;
        }
        Ok(self)
    }

    /// Returns the training images whose every patch is in the bank, if any.
    pub fn whole_images(&self) -> Option<&WholeImages> {
        self.whole.as_ref()
    }

    /// Number format of the bank search (float32 without a bank).
    pub fn precision(&self) -> knn::Precision {
        self.prepared
            .as_ref()
            .map_or(knn::Precision::Float32, |p| p.precision())
    }

    /// Raw patch values `[n]` of patch features `[n, D]` before calibration.
    /// With a positional bank, the features must be whole images of patches
    /// in row-major order.
    pub fn raw(&self, net: &LocalNet, features: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let distance = |x: &Tensor| -> Result<Tensor> {
            let Some(bank) = &self.prepared else {
                bail!(
                    "the {:?} head needs a memory bank, and the model has none",
                    self.head
                );
            };
            let squared = bank.try_nearest_distance(x)?;
            if let (Some(whole), Some(rows)) = (&self.whole, &self.bank) {
                whole.search_copies_elsewhere(bank, rows, x, &squared)?;
            }
            Ok(squared.clamp_min(0.0).sqrt())
        };
        match self.head {
            ScoreHead::Discriminator => Ok(net.logits(features)),
            ScoreHead::Bank => distance(features),
            ScoreHead::Blend => {
                let Some(bank_stats) = &self.bank_stats else {
                    bail!("the blend head needs bank statistics, and the model has none");
                };
                Ok(standardise(&net.logits(features), &self.logit_stats)
                    + standardise(&distance(features)?, bank_stats))
            }
        }
    }
}

/// (x − median) / robust standard deviation.
fn standardise(x: &Tensor, stats: &ScoreStats) -> Tensor {
    (x - stats.median as f64) / stats.scale() as f64
}

/// Ranking of the training images that decides which enter the scoring bank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BankRanking {
    /// The trained Local-Net's largest patch logit.
    #[default]
    Localnet,
    /// The largest leave-one-image-out nearest-neighbour distance of the
    /// image's backbone patch features to those of the other training images.
    /// Positional when the scoring bank is, otherwise against a random sample
    /// of at most the scoring bank's size.
    Distance,
}

/// Largest leave-one-image-out patch distance `[N]` of each training image
/// `[N, P, D]`, for [`BankRanking::Distance`].
fn distance_image_scores(features: &Tensor, opts: &BankOptions) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let (n, p, d) = features.size3()?;
    let device = features.device();
    let flat = features.view([n * p, d]);
    let groups =
        Tensor::arange(n, (Kind::Int64, device)).repeat_interleave_self_int(p, Some(0), None);
    let distance = match opts.radius {
        Some(radius) => {
            let positions = Tensor::arange(p, (Kind::Int64, device)).repeat([n]);
            knn::PreparedBank::positional(
                &flat,
                &positions,
                square_grid(p)?,
                radius,
                opts.precision,
            )?
            .try_nearest_distance_other_group(&flat, &groups, &groups)?
        }
        None => {
            let mut rows: Vec<i64> = (0..n * p).collect();
            rows.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed ^ 0x0c1e_a4ed));
            rows.truncate(opts.max_features);
            let rows = Tensor::from_slice(&rows).to_device(device);
            knn::PreparedBank::new(&flat.index_select(0, &rows), opts.precision)
                .try_nearest_distance_other_group(&flat, &groups, &groups.index_select(0, &rows))?
        }
    };
    // An image alone in the sample gets infinity; rank it last.
    Ok(distance
        .nan_to_num(None, Some(f32::MAX as f64), None)
        .view([n, p])
        .amax(1, false))
}

/// Side of the square patch grid with `patches` patches.
fn square_grid(patches: i64) -> Result<i64> {
    let grid = (patches as f64).sqrt().round() as i64;
    if grid * grid != patches {
        bail!(
            "a positional scoring bank needs a square patch grid, got {patches} patches an image"
        );
    }
    Ok(grid)
}

/// Options of the scoring bank.
#[derive(Clone, Copy, Debug)]
pub struct BankOptions {
    /// Share of the training images, lowest image score first, whose patches may enter.
    pub image_share: f64,
    pub max_features: usize,
    pub seed: u64,
    /// Number format of the bank search, in calibration and in scoring.
    pub precision: knn::Precision,
    /// Positional search radius in patches (`None`: the whole bank).
    pub radius: Option<i64>,
    /// Ranking that picks the bank's images.
    pub ranking: BankRanking,
}

/// Builds every part of `head` for a trained net from its training features
/// `[N, P, D]`, and returns it with the training image maxima of its raw
/// values, which calibrate the reported scores. A training image's own
/// patches may be in the bank, so each image is measured against the bank
/// entries of the other images only. Otherwise its own neighbouring patches,
/// near-copies of each other, would make training images look more normal
/// than new frames, and the threshold would flag too many of those.
pub fn build(
    net: &LocalNet,
    features: &Tensor,
    head: ScoreHead,
    opts: BankOptions,
) -> Result<(HeadParts, Vec<f32>)> {
    let _guard = tch::no_grad_guard();
    let (n, p, d) = features.size3()?;
    let flat = features.view([n * p, d]);

    let logits = net.logits(&flat);
    let image_max = |patch: &Tensor| -> Result<Vec<f32>> {
        let m = patch.view([n, p]).amax(1, false);
        Ok(Vec::try_from(
            m.to_device(Device::Cpu).to_kind(Kind::Float),
        )?)
    };
    let logit_maxima = image_max(&logits)?;
    let logit_stats = ScoreStats::from_scores(&logit_maxima);
    if !head.uses_bank() {
        let parts = HeadParts::new(head, None, None, logit_stats, None, opts.precision)?;
        return Ok((parts, logit_maxima));
    }

    let image_scores = match opts.ranking {
        BankRanking::Localnet => logits.view([n, p]).amax(1, false),
        BankRanking::Distance => distance_image_scores(features, &opts)?,
    };
    let (bank, groups, positions) = bank_of_lowest(
        &image_scores,
        features,
        opts.image_share,
        opts.max_features,
        opts.seed,
    )?;
    let query_groups = Tensor::arange(n, (Kind::Int64, features.device()))
        .repeat_interleave_self_int(p, Some(0), None);
    let layout = match opts.radius {
        Some(radius) => Some(BankLayout {
            positions,
            grid: square_grid(p)?,
            radius,
        }),
        None => None,
    };
    let parts = HeadParts::new(
        head,
        Some(bank),
        layout,
        logit_stats.clone(),
        None,
        opts.precision,
    )?
    .with_bank_groups(&groups, p)?;
    let distance = parts
        .prepared
        .as_ref()
        .expect("a bank head has a prepared bank")
        .try_nearest_distance_other_group(&flat, &query_groups, &groups)?
        .clamp_min(0.0)
        .sqrt();
    // A patch whose reachable bank rows all come from its own image has no
    // leave-one-image-out distance, so it is left out of its image's maximum.
    // An image with no measurable patch at all cannot be calibrated.
    let distance = distance.where_self(
        &distance.isfinite(),
        &Tensor::from(f32::NEG_INFINITY).to_device(distance.device()),
    );
    let distance_maxima = image_max(&distance)?;
    if let Some(image) = distance_maxima.iter().position(|m| !m.is_finite()) {
        let images = groups.unique_consecutive(false, false, None).0.size()[0];
        bail!(
            "training image {image} has no patch of another image in the scoring bank within \
             reach, so its score cannot be calibrated (bank: {} patches, from {images} of the \
             training images); raise --score-bank-share or --score-bank-features (funadtrain: \
             score-bank-features), or the bank radius",
            groups.size()[0]
        );
    }
    let bank_stats = ScoreStats::from_scores(&distance_maxima);
    let maxima = match head {
        ScoreHead::Blend => {
            image_max(&(standardise(&logits, &logit_stats) + standardise(&distance, &bank_stats)))?
        }
        _ => distance_maxima,
    };
    let parts = HeadParts {
        bank_stats: Some(bank_stats),
        ..parts
    };
    Ok((parts, maxima))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    fn net(d: i64) -> (nn::VarStore, LocalNet) {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut net = LocalNet::new(&vs.root(), d);
        net.init_adaptor_identity();
        (vs, net)
    }

    /// Returns bank options with the distance ranking and float32 search.
    fn distance_ranked(image_share: f64, max_features: usize, radius: Option<i64>) -> BankOptions {
        BankOptions {
            image_share,
            max_features,
            seed: 0,
            precision: knn::Precision::Float32,
            radius,
            ranking: BankRanking::Distance,
        }
    }

    #[test]
    fn bank_head_is_distance_to_nearest_kept_feature() {
        let (_vs, net) = net(2);
        // Three images of one patch each.
        let feats = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0, 5.0, 5.0]).view([3, 1, 2]);
        let (bank, groups, positions) = final_bank(&net, &feats, 1.0, 10, 0).unwrap();
        assert_eq!(Vec::<i64>::try_from(&positions).unwrap(), vec![0, 0, 0]);
        // Rows come lowest image score first, each with its image index.
        let mut images = Vec::<i64>::try_from(&groups).unwrap();
        images.sort_unstable();
        assert_eq!(images, vec![0, 1, 2]);
        assert_eq!(bank.size(), [3, 2]);
        let parts = HeadParts::new(
            ScoreHead::Bank,
            Some(bank),
            None,
            ScoreStats::from_scores(&[0.0]),
            None,
            knn::Precision::Float32,
        )
        .unwrap();
        let q = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]);
        // Nearest of (0,0), (1,0), (5,5) to (3,4): (5,5) at √5.
        let d = f32::try_from(parts.raw(&net, &q).unwrap().get(0)).unwrap();
        assert!((d - 5f32.sqrt()).abs() < 1e-5, "{d}");
    }

    #[test]
    fn final_bank_keeps_the_lowest_scoring_images() {
        let (_vs, net) = net(2);
        let feats =
            Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0, 5.0, 5.0, 9.0, 1.0]).view([4, 1, 2]);
        let logits: Vec<f32> = Vec::try_from(net.logits(&feats.view([4, 2]))).unwrap();
        let mut order: Vec<usize> = (0..4).collect();
        order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
        let (bank, _, _) = final_bank(&net, &feats, 0.5, 10, 0).unwrap();
        let got: Vec<f32> = Vec::try_from(bank.flatten(0, 1)).unwrap();
        let expect: Vec<f32> = order[..2]
            .iter()
            .flat_map(|&i| {
                let r: Vec<f32> = Vec::try_from(feats.get(i as i64).flatten(0, 1)).unwrap();
                r
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn distance_ranking_drops_the_outlier_image() {
        let (_vs, net) = net(2);
        // Four images of one patch: three close together and one far away.
        let feats =
            Tensor::from_slice(&[0.0f32, 0.0, 0.1, 0.0, 0.0, 0.1, 5.0, 5.0]).view([4, 1, 2]);
        for radius in [None, Some(0)] {
            let opts = distance_ranked(0.75, 10, radius);
            let (parts, maxima) = build(&net, &feats, ScoreHead::Bank, opts).unwrap();
            let bank: Vec<f32> = Vec::try_from(parts.bank.as_ref().unwrap().flatten(0, 1)).unwrap();
            assert_eq!(bank.len(), 6, "{radius:?}: three images kept");
            assert!(!bank.contains(&5.0), "{radius:?}: outlier kept in {bank:?}");
            // The outlier's own calibration distance is to the nearest kept image.
            assert!((maxima[3] - (4.9f32 * 4.9 + 5.0 * 5.0).sqrt()).abs() < 1e-4);
        }
    }

    #[test]
    fn whole_image_skips_itself() {
        let (_vs, net) = net(3);
        // Five images of 4 patches on a 2×2 grid; image 2 has one far patch.
        tch::manual_seed(11);
        let feats = Tensor::randn([5, 4, 3], (Kind::Float, Device::Cpu));
        let _ = feats.get(2).get(3).fill_(9.0);
        for radius in [None, Some(1)] {
            let opts = distance_ranked(1.0, 100, radius);
            let (parts, maxima) = build(&net, &feats, ScoreHead::Bank, opts).unwrap();
            let whole = parts
                .whole_images()
                .expect("every image is whole in the bank");
            assert_eq!(whole.patches, 4);
            // Image 2 scored again, alone and beside a new image: its largest
            // distance is the leave-one-image-out one of the calibration, not 0.
            let new_image = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
            let both = Tensor::cat(&[new_image.shallow_clone(), feats.get(2)], 0);
            for (batch, offset) in [(feats.get(2), 0), (both, 4)] {
                let raw = parts.raw(&net, &batch).unwrap();
                let top = f32::try_from(raw.narrow(0, offset, 4).max()).unwrap();
                assert!(
                    (top - maxima[2]).abs() < 1e-4,
                    "{radius:?}: {top} against {}",
                    maxima[2]
                );
                assert!(top > 8.0, "{radius:?}: the far patch matched itself");
            }

            // The new image is searched against the whole bank, as before.
            let plain = parts
                .prepared
                .as_ref()
                .unwrap()
                .try_nearest_distance(&new_image)
                .unwrap();
            let raw = parts.raw(&net, &new_image).unwrap();
            assert_eq!(
                Vec::<f32>::try_from(raw).unwrap(),
                Vec::<f32>::try_from(plain.clamp_min(0.0).sqrt()).unwrap()
            );

            // A copy changed by far less than the gap between two images (a
            // second decoder, sensor noise) still counts as the image.
            let near = feats.get(2) + 1e-2;
            let top = f32::try_from(parts.raw(&net, &near).unwrap().max()).unwrap();
            assert!(
                top > 8.0,
                "{radius:?}: a near copy matched its original: {top}"
            );

            // A frame changed more is a new frame: its nearest patches are
            // still its original's.
            let changed = feats.get(2) + 0.3;
            let top = f32::try_from(parts.raw(&net, &changed).unwrap().max()).unwrap();
            assert!(top < 0.6, "{radius:?}: a changed frame scored {top}");
        }

        // Two identical training images: a copy of them skips both.
        let twice = Tensor::cat(&[feats.shallow_clone(), feats.narrow(0, 2, 1)], 0);
        let opts = distance_ranked(1.0, 100, None);
        let (parts, _) = build(&net, &twice, ScoreHead::Bank, opts).unwrap();
        let top = f32::try_from(parts.raw(&net, &feats.get(2)).unwrap().max()).unwrap();
        assert!(top > 8.0, "a duplicated image matched its duplicate: {top}");

        // An image missing one patch in the bank is not whole; the others are.
        let bank = feats.view([20, 3]).narrow(0, 1, 19);
        let groups = Tensor::arange(5, (Kind::Int64, Device::Cpu))
            .repeat_interleave_self_int(4, Some(0), None)
            .narrow(0, 1, 19);
        let whole = WholeImages::find(&bank, &groups, 4).unwrap().unwrap();
        assert_eq!(
            Vec::<i64>::try_from(&whole.groups).unwrap(),
            vec![1, 2, 3, 4]
        );
        let none = WholeImages::find(&bank.narrow(0, 0, 3), &groups.narrow(0, 0, 3), 4).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn bank_of_one_image_is_an_error() {
        let (_vs, net) = net(3);
        tch::manual_seed(5);
        let feats = Tensor::randn([5, 4, 3], (Kind::Float, Device::Cpu));
        let opts = distance_ranked(0.2, 100, None);
        let err = build(&net, &feats, ScoreHead::Bank, opts)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot be calibrated"), "{err}");
        assert!(err.contains("--score-bank-share"), "{err}");
    }

    #[test]
    fn bad_bank_image_indices_are_errors() {
        let bank = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
        for bad in [-1.0f32, f32::NAN, f32::INFINITY, 0.5, 1e9] {
            let groups = Tensor::from_slice(&[0.0f32, 0.0, 1.0, bad]);
            let err = WholeImages::find(&bank, &groups, 2).err();
            assert!(err.is_some(), "{bad} accepted");
        }
        let short = Tensor::from_slice(&[0.0f32, 0.0, 1.0]);
        assert!(WholeImages::find(&bank, &short, 2).is_err());
    }

    #[test]
    fn bank_needs_a_bank() {
        let (_vs, net) = net(2);
        let parts = HeadParts::new(
            ScoreHead::Bank,
            None,
            None,
            ScoreStats::from_scores(&[0.0]),
            None,
            knn::Precision::Float32,
        )
        .unwrap();
        let err = parts.raw(&net, &Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)));
        assert!(err.unwrap_err().to_string().contains("memory bank"));
    }
}
