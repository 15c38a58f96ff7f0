//! FUN-AD training of Local-Net on unlabeled patch features.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::head::{BankRanking, ScoreHead};
use crate::knn::{self, Precision};
use crate::localnet::LocalNet;
use crate::loss;

/// Optimiser of Local-Net.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// RMSProp (α = 0.99, ε = 1e-8) with the configured momentum, as FUN-AD (Im et al., 2025) publishes.
    Rmsprop,
    /// Adam (β = 0.9, 0.999).
    Adam,
}

/// Starting point of the adaptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdaptorInit {
    /// PyTorch's default Linear initialisation, as FUN-AD publishes.
    Random,
    /// The identity map, so the first memory bank contains the backbone features themselves.
    Identity,
}

/// Normalisation of the image scores that select the memory bank's images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BankNormalisation {
    /// Min-max over the training set, as published. A few extreme image scores
    /// squeeze the rest towards one end, which can leave only a handful of
    /// images below 0.5 and a bank too small to cover normal variety.
    Minmax,
    /// Rank divided by the number of images: 0.5 keeps the better-scoring half.
    Rank,
}

/// Training options. [`TrainConfig::paper`] gives the published values.
/// Options missing from a stored configuration take their defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per mini-batch (all patches of each image go into the batch).
    pub batch_size: usize,
    pub optimizer: Optimizer,
    /// Learning rate.
    pub lr: f64,
    /// RMSProp momentum (ignored by Adam).
    pub momentum: f64,
    /// Weight λ of the mutual-smoothness loss.
    pub lambda: f64,
    /// Normalised-distance threshold τ above which a patch is a pseudo-anomaly.
    pub tau: f64,
    /// Upper bound τ_a of the ambiguous band (τ, τ_a), whose features are perturbed.
    pub tau_ambiguous: f64,
    /// Add Gaussian noise to ambiguous features before the cross-entropy term.
    pub perturb_ambiguous: bool,
    /// Share of the most-normal images whose patches enter the memory bank.
    pub bank_sampling: f64,
    /// Normalised image score below which an image counts as normal for the bank.
    pub bank_image_threshold: f64,
    /// Normalisation of the image scores before `bank_image_threshold` applies.
    pub bank_normalisation: BankNormalisation,
    /// Iterations between two rebuilds of the memory bank (1 = every iteration,
    /// as published; 0 = once per epoch).
    pub bank_every: usize,
    /// Cap on the memory bank's size in patch features, drawn at random (0 = no cap, as published).
    pub bank_max_features: usize,
    /// Squared distance below which a bank entry is taken to be the query itself.
    pub self_eps: f64,
    /// Seed for initialisation, shuffling, sampling and noise.
    pub seed: u64,
    /// Synthetic Perlin-noise anomalies added, as a share of the training images (FUN-AD*).
    pub synthetic_ratio: f64,
    /// Default threshold, in robust standard deviations (1.4826 MAD) of the
    /// training image logits above their median; stored as sigmoid of it.
    pub threshold_mads: f64,
    /// Starting point of the adaptor.
    pub adaptor_init: AdaptorInit,
    /// Score head of the trained model.
    pub score_head: ScoreHead,
    /// Share of the training images, lowest image score first, whose patches
    /// may enter the scoring bank of the bank and blend heads.
    pub score_bank_share: f64,
    /// Cap on the scoring bank, in patch features drawn at random.
    pub score_bank_features: usize,
    /// Number format of the scoring bank's search (model files written
    /// before the option existed: float32).
    #[serde(default)]
    pub score_bank_precision: Precision,
    /// Positional scoring bank: a patch is compared only with bank patches at
    /// most this many grid rows and columns away from its own position.
    /// `None` searches the whole bank (and model files written before the
    /// option existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_bank_radius: Option<i64>,
    /// Ranking that picks the scoring bank's images (model files written
    /// before the option existed: the Local-Net's).
    #[serde(default)]
    pub score_bank_ranking: BankRanking,
    /// Number format of the pseudo-label search during training (model files
    /// written before the option existed: float32). The mutual-pair search
    /// stays in float32: bfloat16 did not make it faster
    /// (examples/bench_train_search.rs).
    #[serde(default)]
    pub train_search_precision: Precision,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            optimizer: Optimizer::Adam,
            lr: 1e-4,
            momentum: 0.2,
            lambda: 2.5,
            tau: 0.5,
            tau_ambiguous: 0.9,
            perturb_ambiguous: true,
            bank_sampling: 0.5,
            bank_image_threshold: 0.5,
            bank_normalisation: BankNormalisation::Rank,
            bank_every: 0,
            bank_max_features: 20_000,
            self_eps: 1e-2,
            seed: 0,
            synthetic_ratio: 0.0,
            threshold_mads: 3.0,
            adaptor_init: AdaptorInit::Identity,
            score_head: ScoreHead::Bank,
            score_bank_share: 0.9,
            // On MTD at 10% (two seeds), ranking the bank's images by distance
            // instead of by the Local-Net raised image / pixel AUROC from 0.871 /
            // 0.763 to 0.896 / 0.783 at the same bank size (docs/benchmarks.md).
            // Every patch with radius 1 reached 0.905 / 0.780, but its model files
            // are 5 times larger and it assumes a fixed camera.
            score_bank_features: 40_000,
            score_bank_precision: Precision::Float32,
            score_bank_radius: None,
            score_bank_ranking: BankRanking::Distance,
            train_search_precision: Precision::Float32,
        }
    }
}

impl TrainConfig {
    /// Returns the published schedule: 1500 epochs, min-max bank selection, bank
    /// rebuilt every iteration with no cap, random adaptor start.
    pub fn paper() -> Self {
        TrainConfig {
            epochs: 1500,
            optimizer: Optimizer::Rmsprop,
            lr: 2e-5,
            bank_normalisation: BankNormalisation::Minmax,
            bank_every: 1,
            bank_max_features: 0,
            adaptor_init: AdaptorInit::Random,
            score_head: ScoreHead::Discriminator,
            ..Default::default()
        }
    }

    /// Checks every option and names the first invalid one.
    pub fn validate(&self) -> Result<()> {
        let unit = |name: &str, v: f64| -> Result<()> {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} = {v} is invalid: use a value from 0 to 1");
            }
            Ok(())
        };
        if self.epochs == 0 {
            bail!("epochs = 0 is invalid: train for at least one epoch");
        }
        if self.batch_size < 2 {
            bail!(
                "batch size {} is invalid: mutual pairs need at least 2 images",
                self.batch_size
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!(
                "learning rate {} is invalid: use a positive number such as 2e-5",
                self.lr
            );
        }
        if self.lambda < 0.0 {
            bail!(
                "lambda = {} is invalid: use a weight of 0 or more",
                self.lambda
            );
        }
        unit("tau", self.tau)?;
        unit("tau-ambiguous", self.tau_ambiguous)?;
        if self.tau_ambiguous < self.tau {
            bail!(
                "tau-ambiguous = {} is below tau = {}: the ambiguous band needs τ ≤ τ_a",
                self.tau_ambiguous,
                self.tau
            );
        }
        unit("bank sampling", self.bank_sampling)?;
        if self.bank_sampling == 0.0 {
            bail!(
                "bank sampling = 0 leaves the memory bank empty: use a share above 0, such as 0.5"
            );
        }
        unit("bank image threshold", self.bank_image_threshold)?;
        unit("synthetic ratio", self.synthetic_ratio)?;
        if let Some(r) = self.score_bank_radius.filter(|r| *r < 0) {
            bail!(
                "score bank radius {r} is invalid: use 0 or more patches, such as 1, or leave it \
                 out to search the whole bank"
            );
        }
        if self.score_head.uses_bank() {
            unit("score bank share", self.score_bank_share)?;
            if self.score_bank_share == 0.0 || self.score_bank_features == 0 {
                bail!(
                    "the {:?} score head needs a scoring bank: use a score bank share above 0 \
                     (such as 0.5) and a size above 0 (such as 40000)",
                    self.score_head
                );
            }
        }
        Ok(())
    }
}

/// Statistics of one epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub bce: f64,
    pub smoothness: f64,
    /// Share of patches labelled pseudo-anomalous.
    pub pseudo_anomalous: f64,
    /// Mean mutual pairs per batch.
    pub mutual_pairs: f64,
    /// Memory bank size at the last rebuild, in patch features.
    pub bank_size: i64,
    pub seconds: f64,
    /// Share of the pseudo-anomalous patches that are truly anomalous. This
    /// and the next two fields are diagnostics against patch labels that
    /// evaluation passes in, and training never reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_precision: Option<f64>,
    /// Share of the truly anomalous patches labelled pseudo-anomalous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_recall: Option<f64>,
    /// Share of the last bank's images that hold a truly anomalous patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_anomalous_images: Option<f64>,
}

/// Progress report of a training run, sent after every iteration.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub iteration: usize,
    pub iterations_per_epoch: usize,
    pub loss: f64,
}

/// Outcome of [`train`]: the trained weights and the per-epoch statistics.
pub struct Trained {
    pub vs: nn::VarStore,
    pub net: LocalNet,
    pub history: Vec<EpochStats>,
}

/// Training was stopped through the cancel flag.
#[derive(Debug, thiserror::Error)]
#[error("training cancelled")]
pub struct Cancelled;

/// Builds the memory bank from the adaptor features of a random share of the
/// images that the current model finds most normal.
fn build_bank(
    net: &LocalNet,
    features: &Tensor,
    cfg: &TrainConfig,
    rng: &mut ChaCha8Rng,
) -> (Tensor, Vec<i64>) {
    let _guard = tch::no_grad_guard();
    let (n, p, d) = features
        .size3()
        .expect("features are [images, patches, width]");
    let image_scores = net
        .score(&features.view([n * p, d]))
        .view([n, p])
        .amax(1, false);
    let normalised = match cfg.bank_normalisation {
        BankNormalisation::Minmax => loss::min_max(&image_scores),
        BankNormalisation::Rank => {
            image_scores
                .argsort(0, false)
                .argsort(0, false)
                .to_kind(Kind::Float)
                / n as f64
        }
    };
    let normalised: Vec<f32> =
        Vec::try_from(normalised.to_device(tch::Device::Cpu)).expect("float scores");
    let mut normal: Vec<i64> = (0..n)
        .filter(|&i| (normalised[i as usize] as f64) < cfg.bank_image_threshold)
        .collect();
    if normal.is_empty() {
        // All images share one score (an untrained net can do this): use them all.
        normal = (0..n).collect();
    }
    normal.shuffle(rng);
    let keep = ((normal.len() as f64 * cfg.bank_sampling).round() as usize).clamp(1, normal.len());
    let images = normal[..keep].to_vec();
    let chosen = Tensor::from_slice(&images).to_device(features.device());
    let mut bank = features.index_select(0, &chosen).view([-1, d]);
    if cfg.bank_max_features > 0 && bank.size()[0] > cfg.bank_max_features as i64 {
        let mut rows: Vec<i64> = (0..bank.size()[0]).collect();
        rows.shuffle(rng);
        rows.truncate(cfg.bank_max_features);
        bank = bank.index_select(0, &Tensor::from_slice(&rows).to_device(features.device()));
    }
    (net.adapt_blocked(&bank), images)
}

/// Builds the Local-Net that training starts from, seeded by `cfg.seed`: the same
/// weights as epoch 0 of [`train`] with the same configuration.
pub fn initial_localnet(
    device: tch::Device,
    feature_size: i64,
    cfg: &TrainConfig,
) -> (nn::VarStore, LocalNet) {
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let mut net = LocalNet::new(&vs.root(), feature_size);
    if cfg.adaptor_init == AdaptorInit::Identity {
        net.init_adaptor_identity();
    }
    (vs, net)
}

/// Trains Local-Net on patch features `[images, patches, width]` of unlabeled
/// images. `on_progress` is called after every iteration; setting `cancel`
/// stops the run with [`Cancelled`].
pub fn train(
    features: &Tensor,
    cfg: &TrainConfig,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Trained> {
    train_observed(features, cfg, cancel, on_progress, &mut |_, _| Ok(()), None)
}

/// [`train`], also calling `on_epoch` with each epoch's statistics and the
/// network at the end of that epoch (an error from it stops training).
/// `patch_truth` `[N, P]` (true = anomalous patch) only fills the diagnostic
/// fields of [`EpochStats`]; nothing in training reads it.
pub fn train_observed(
    features: &Tensor,
    cfg: &TrainConfig,
    cancel: Option<&AtomicBool>,
    on_progress: &mut dyn FnMut(&Progress),
    on_epoch: &mut dyn FnMut(&EpochStats, &LocalNet) -> Result<()>,
    patch_truth: Option<&Tensor>,
) -> Result<Trained> {
    cfg.validate()?;
    let (n, p, d) = features.size3()?;
    if (n as usize) < cfg.batch_size.min(2) || n < 2 {
        bail!("training needs at least 2 images, got {n}");
    }
    let device = features.device();
    let (vs, net) = initial_localnet(device, d, cfg);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut opt = match cfg.optimizer {
        Optimizer::Rmsprop => nn::RmsProp {
            alpha: 0.99,
            eps: 1e-8,
            wd: 0.0,
            momentum: cfg.momentum,
            centered: false,
        }
        .build(&vs, cfg.lr)?,
        Optimizer::Adam => nn::Adam::default().build(&vs, cfg.lr)?,
    };

    let batch = cfg.batch_size.min(n as usize);
    let iterations = (n as usize).div_ceil(batch);
    let mut history = Vec::with_capacity(cfg.epochs);
    let mut bank = Tensor::zeros([0, d], (Kind::Float, device));
    let mut bank_images: Vec<i64> = Vec::new();
    if let Some(t) = patch_truth {
        if t.size() != [n, p] {
            bail!("patch truth has shape {:?}, expected [{n}, {p}]", t.size());
        }
    }
    let mut step = 0usize;
    for epoch in 1..=cfg.epochs {
        let started = Instant::now();
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut rng);
        let (mut sum_loss, mut sum_bce, mut sum_smooth, mut sum_anom, mut sum_pairs) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        // Flagged, flagged and truly anomalous, truly anomalous (diagnostics).
        let (mut flagged, mut hits, mut truly) = (0i64, 0i64, 0i64);
        for (it, chunk) in order.chunks(batch).enumerate() {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Cancelled.into());
            }
            let every = if cfg.bank_every == 0 {
                iterations
            } else {
                cfg.bank_every
            };
            if step % every == 0 {
                (bank, bank_images) = build_bank(&net, features, cfg, &mut rng);
            }
            step += 1;
            let b = chunk.len() as i64;
            let idx = Tensor::from_slice(chunk).to_device(device);
            let x = features.index_select(0, &idx).view([b * p, d]);
            let adapted = net.adapt(&x);
            let clean = adapted.detach();

            let distances = knn::nearest_distance_excluding_self_in(
                &clean,
                &bank,
                cfg.self_eps,
                cfg.train_search_precision,
            );
            let pseudo = loss::pseudo_labels(&distances, cfg.tau, cfg.tau_ambiguous);
            if let Some(t) = patch_truth {
                let truth = t.index_select(0, &idx.to_device(t.device())).view([b * p]);
                let labels = pseudo.labels.gt(0.5).to_device(t.device());
                flagged += i64::try_from(labels.sum(Kind::Int64))?;
                hits += i64::try_from(labels.logical_and(&truth).sum(Kind::Int64))?;
                truly += i64::try_from(truth.sum(Kind::Int64))?;
            }

            let perturbed = if cfg.perturb_ambiguous && b > 1 {
                // Per dimension, the largest over patch positions of the standard
                // deviation across the batch's images.
                let sigma = clean.view([b, p, d]).std_dim(0, true, false).amax(0, false);
                let noise = Tensor::randn_like(&adapted) * sigma;
                &adapted + noise * pseudo.ambiguous.to_kind(Kind::Float).unsqueeze(1)
            } else {
                adapted.shallow_clone()
            };
            let bce = loss::balanced_bce(&net.discriminate(&perturbed), &pseudo.labels);
            let pairs = knn::mutual_nearest_pairs(&clean);
            let smooth = loss::mutual_smoothness(&net.discriminate(&adapted).sigmoid(), &pairs);
            let total = &bce + &smooth * cfg.lambda;
            opt.backward_step(&total);

            let loss_value = f64::try_from(&total)?;
            if !loss_value.is_finite() {
                bail!("training diverged at epoch {epoch}, iteration {}: loss is {loss_value}; lower the learning rate", it + 1);
            }
            sum_loss += loss_value;
            sum_bce += f64::try_from(&bce)?;
            sum_smooth += f64::try_from(&smooth)?;
            sum_anom += f64::try_from(pseudo.labels.mean(Kind::Float))?;
            sum_pairs += pairs.size()[0] as f64;
            on_progress(&Progress {
                epoch,
                epochs: cfg.epochs,
                iteration: it + 1,
                iterations_per_epoch: iterations,
                loss: loss_value,
            });
        }
        let k = iterations as f64;
        let ratio = |a: i64, b: i64| (b > 0).then(|| a as f64 / b as f64);
        let bank_anomalous_images = patch_truth.and_then(|t| {
            let anomalous: Vec<bool> =
                Vec::try_from(t.any_dim(1, false).to_device(tch::Device::Cpu)).ok()?;
            let bad = bank_images
                .iter()
                .filter(|&&i| anomalous[i as usize])
                .count();
            ratio(bad as i64, bank_images.len() as i64)
        });
        let stats = EpochStats {
            epoch,
            loss: sum_loss / k,
            bce: sum_bce / k,
            smoothness: sum_smooth / k,
            pseudo_anomalous: sum_anom / k,
            mutual_pairs: sum_pairs / k,
            bank_size: bank.size()[0],
            seconds: started.elapsed().as_secs_f64(),
            pseudo_precision: ratio(hits, flagged),
            pseudo_recall: ratio(hits, truly),
            bank_anomalous_images,
        };
        log::info!(
            "epoch {epoch}/{}: loss {:.4} (bce {:.4}, smoothness {:.4}), pseudo-anomalous {:.3}, bank {}, {:.1} s",
            cfg.epochs,
            stats.loss,
            stats.bce,
            stats.smoothness,
            stats.pseudo_anomalous,
            stats.bank_size,
            stats.seconds
        );
        on_epoch(&stats, &net)?;
        history.push(stats);
    }
    Ok(Trained { vs, net, history })
}
