//! `funad`: train, score and evaluate FUN-AD anomaly detectors from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use funad::data;
use funad::eval::{self, BaselineConfig, EvalConfig, EvalEvent, Method};
use funad::features::{FeatureConfig, LayerMerge, Resize};
use funad::fit::{self, FitEvent};
use funad::head::{BankRanking, ScoreHead};
use funad::knn::Precision;
use funad::train::{AdaptorInit, BankNormalisation, Optimizer, TrainConfig};
use funad::{map, select_device, Backbone, Detector, Verdict};

/// Default backbone weights, as installed by scripts/setup.sh.
const DEFAULT_BACKBONE: &str = "weights/dinov2_vits14.safetensors";

#[derive(Parser)]
#[command(
    name = "funad",
    version,
    about = "FUN-AD anomaly detection: train without labels, score, evaluate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on a folder of unlabeled images (which may contain defects).
    Train(TrainArgs),
    /// Score images with a model; prints one JSON line per image.
    Score(ScoreArgs),
    /// Run the FUN-AD protocol on an MVTec-layout folder and report AUROC.
    Eval(EvalArgs),
    /// Measure the library's scoring speed on decoded frames, one frame per call.
    Bench(BenchArgs),
}

/// Options that load an existing model.
#[derive(Args)]
struct ModelArgs {
    /// Model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Backbone weights; by default the file the model was trained with.
    #[arg(long, env = "FUNAD_BACKBONE")]
    backbone: Option<PathBuf>,
    /// Compute device: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

impl ModelArgs {
    fn load(&self) -> Result<Detector> {
        Detector::load(
            &self.model,
            self.backbone.as_deref(),
            select_device(&self.device)?,
        )
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Image files or folders of images; decoded before timing starts.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Frames scored before timing starts.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
}

#[derive(Args, Clone)]
struct Common {
    /// Backbone weights (safetensors, official DINO or DINOv2 key names).
    #[arg(long, env = "FUNAD_BACKBONE", default_value = DEFAULT_BACKBONE)]
    backbone: PathBuf,
    /// Compute device: auto (CUDA when present), cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args, Clone)]
struct FeatureArgs {
    /// Side of the square model input, in pixels (a multiple of the patch size).
    #[arg(long, default_value_t = 224)]
    input_size: i64,
    /// Backbone blocks whose patch tokens form the feature, 1-based,
    /// comma-separated [default: 8 for a ViT, 5,11 for EfficientNet-Lite0].
    #[arg(long, value_delimiter = ',')]
    blocks: Option<Vec<usize>>,
    /// Merge rule for several blocks.
    #[arg(long, value_enum, default_value_t = LayerMerge::Concat)]
    merge: LayerMerge,
    /// Concatenate the CLS token to each patch token, as FUN-AD (Im et al., 2025) does.
    #[arg(long)]
    with_cls: bool,
    /// Side of the neighbourhood averaged around each patch (odd; 1 = none)
    /// [default: 1 for a ViT, 3 for EfficientNet-Lite0].
    #[arg(long)]
    pool: Option<i64>,
    /// Fit of each image into the square input: stretch both sides, or
    /// letterbox (keep the aspect ratio, mirror the image into the rest, and
    /// score only the patches that show the image).
    #[arg(long, value_enum, default_value_t = Resize::Stretch)]
    resize: Resize,
    /// Use the FUN-AD paper's features instead: CLS ⊕ final-block patch token.
    #[arg(long)]
    paper_features: bool,
}

impl FeatureArgs {
    fn config(&self, vit: &Backbone) -> FeatureConfig {
        if self.paper_features {
            return FeatureConfig {
                input_size: self.input_size,
                resize: self.resize,
                ..FeatureConfig::paper(vit.config().depth as usize)
            };
        }
        let base = FeatureConfig::for_backbone(vit);
        FeatureConfig {
            input_size: self.input_size,
            blocks: self.blocks.clone().unwrap_or(base.blocks),
            merge: self.merge,
            with_cls: self.with_cls,
            pool: self.pool.unwrap_or(base.pool),
            resize: self.resize,
        }
    }
}

#[derive(Args, Clone)]
struct TrainOptions {
    /// Passes over the training images (FUN-AD publishes 1500).
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Images per mini-batch.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    #[arg(long, value_enum, default_value_t = TrainConfig::default().optimizer)]
    optimizer: Optimizer,
    /// Learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    lr: f64,
    /// RMSProp momentum.
    #[arg(long, default_value_t = TrainConfig::default().momentum)]
    momentum: f64,
    /// Weight of the mutual-smoothness loss.
    #[arg(long, default_value_t = TrainConfig::default().lambda)]
    lambda: f64,
    /// Pseudo-anomaly threshold on the normalised nearest-neighbour distance.
    #[arg(long, default_value_t = TrainConfig::default().tau)]
    tau: f64,
    /// Upper end of the ambiguous band whose features get Gaussian noise.
    #[arg(long, default_value_t = TrainConfig::default().tau_ambiguous)]
    tau_ambiguous: f64,
    /// Share of the most-normal images whose patches form the memory bank.
    #[arg(long, default_value_t = TrainConfig::default().bank_sampling)]
    bank_sampling: f64,
    /// How image scores are normalised to pick the bank's images (minmax is FUN-AD's published rule).
    #[arg(long, value_enum, default_value_t = TrainConfig::default().bank_normalisation)]
    bank_normalisation: BankNormalisation,
    /// Iterations between memory-bank rebuilds (1 = every iteration, as published; 0 = once per epoch).
    #[arg(long, default_value_t = TrainConfig::default().bank_every)]
    bank_every: usize,
    /// Cap on the memory bank in patch features, drawn at random (0 = no cap, as published).
    #[arg(long, default_value_t = TrainConfig::default().bank_max_features)]
    bank_max_features: usize,
    /// Synthetic Perlin anomalies as a share of the training images (FUN-AD*: 0.05).
    #[arg(long, default_value_t = TrainConfig::default().synthetic_ratio)]
    synthetic_ratio: f64,
    /// Default threshold, in robust standard deviations (1.4826 MAD) above the
    /// median training image; the calibrated threshold is sigmoid of it.
    #[arg(long, default_value_t = TrainConfig::default().threshold_mads)]
    threshold_mads: f64,
    /// Starting point of the adaptor (random is FUN-AD's published start).
    #[arg(long, value_enum, default_value_t = TrainConfig::default().adaptor_init)]
    adaptor_init: AdaptorInit,
    /// Score head: the discriminator (as published), the distance to the
    /// scoring bank of the most normal training images, or both standardised and added.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().score_head)]
    score_head: ScoreHead,
    /// Share of the training images, lowest image score first, whose patches
    /// may enter the scoring bank (bank and blend heads).
    #[arg(long, default_value_t = TrainConfig::default().score_bank_share)]
    score_bank_share: f64,
    /// Cap on the scoring bank in patch features (bank and blend heads).
    #[arg(long, default_value_t = TrainConfig::default().score_bank_features)]
    score_bank_features: usize,
    /// Number format of the scoring bank's search. In bfloat16 the search
    /// runs about 2.5 times faster on CPUs with AVX512-BF16, with a distance
    /// error under 2%.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().score_bank_precision)]
    score_bank_precision: Precision,
    /// Compare each patch only with scoring-bank patches at most this many
    /// patch rows and columns from its own position, for a fixed camera.
    /// Without it, the whole bank is searched.
    #[arg(long)]
    score_bank_radius: Option<i64>,
    /// Ranking that picks the scoring bank's images: the trained Local-Net's
    /// largest patch logit, or the largest nearest-neighbour distance to the
    /// other training images' patches.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().score_bank_ranking)]
    score_bank_ranking: BankRanking,
    /// Number format of training's pseudo-label search against the memory
    /// bank. In bfloat16 the product picks 4 candidates per patch and exact
    /// float32 distances choose among them.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().train_search_precision)]
    train_search_precision: Precision,
    /// Seed for initialisation, shuffling, sampling and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl TrainOptions {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            lr: self.lr,
            momentum: self.momentum,
            lambda: self.lambda,
            tau: self.tau,
            tau_ambiguous: self.tau_ambiguous,
            bank_sampling: self.bank_sampling,
            bank_normalisation: self.bank_normalisation,
            bank_every: self.bank_every,
            bank_max_features: self.bank_max_features,
            synthetic_ratio: self.synthetic_ratio,
            threshold_mads: self.threshold_mads,
            seed: self.seed,
            adaptor_init: self.adaptor_init,
            score_head: self.score_head,
            score_bank_share: self.score_bank_share,
            score_bank_features: self.score_bank_features,
            score_bank_precision: self.score_bank_precision,
            score_bank_radius: self.score_bank_radius,
            score_bank_ranking: self.score_bank_ranking,
            train_search_precision: self.train_search_precision,
            ..TrainConfig::default()
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    /// Folders of unlabeled images (PNG or JPEG, any size, grey or colour), or image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Model file to write.
    #[arg(short, long)]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    features: FeatureArgs,
    #[command(flatten)]
    train: TrainOptions,
}

#[derive(Args)]
struct ScoreArgs {
    /// Image files or folders of images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// OK/NG threshold on the image score, overriding the model's.
    #[arg(long)]
    threshold: Option<f32>,
    /// Folder to write each image's anomaly map into, as an 8-bit grey PNG.
    #[arg(long)]
    maps: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// MVTec-layout folder: train/good, test/<type>, ground_truth/<type>.
    #[arg(long)]
    data: PathBuf,
    /// Anomaly-to-normal ratio moved into the training set (0.1 = 10%).
    #[arg(long, default_value_t = 0.1)]
    ratio: f64,
    /// Methods to run, comma-separated [default: knn,patchcore,softpatch,funad].
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with_all = ["baseline_only", "no_baseline"])]
    methods: Option<Vec<Method>>,
    /// Patch features in the one-class nearest-neighbour baseline's random bank.
    #[arg(long, default_value_t = BaselineConfig::default().knn_bank)]
    knn_bank: usize,
    /// Compare each patch of the kNN baseline only with bank patches at most
    /// this many patch rows and columns away. Without it, the whole bank.
    #[arg(long)]
    knn_radius: Option<i64>,
    /// Coreset size of the PatchCore- and SoftPatch-style banks, as a share of
    /// the training patch features.
    #[arg(long, default_value_t = BaselineConfig::default().coreset_ratio)]
    coreset_ratio: f64,
    /// Dimensions of the random projection the coreset is chosen in (0 = none).
    #[arg(long, default_value_t = BaselineConfig::default().projection_dim)]
    projection_dim: i64,
    /// Neighbours of the SoftPatch-style local outlier factor.
    #[arg(long, default_value_t = BaselineConfig::default().lof_neighbours)]
    lof_neighbours: i64,
    /// Share of training images the SoftPatch-style filter drops at each patch position.
    #[arg(long, default_value_t = BaselineConfig::default().softpatch_discard)]
    softpatch_discard: f64,
    /// Training images the SPADE-style retrieval baseline searches for each
    /// test image: those whose mean patch feature is nearest to its own.
    #[arg(long, default_value_t = BaselineConfig::default().retrieval_images)]
    retrieval_images: i64,
    /// Bank neighbours of PatchCore's image-score reweighting, reported as a
    /// second PatchCore-style row (0 = no such row).
    #[arg(long, default_value_t = BaselineConfig::default().reweight_neighbours)]
    reweight_neighbours: i64,
    /// Measure FUN-AD on the test set after every epoch, to compare the
    /// label-free last epoch with the best epoch an oracle would pick.
    #[arg(long)]
    every_epoch: bool,
    /// Also score the trained FUN-AD model with the other score heads, one row each.
    #[arg(long)]
    compare_heads: bool,
    /// Also score the trained FUN-AD model with the bank head searching in
    /// the other number format (float32 or bfloat16), one row.
    #[arg(long)]
    compare_bank_precision: bool,
    /// Also score the trained FUN-AD model with the bank head at each of
    /// these scoring-bank shares (comma-separated), one row each.
    #[arg(long, value_delimiter = ',')]
    compare_bank_shares: Vec<f64>,
    /// Only run the baselines (knn, patchcore, softpatch).
    #[arg(long, conflicts_with = "no_baseline")]
    baseline_only: bool,
    /// Only run FUN-AD.
    #[arg(long)]
    no_baseline: bool,
    /// Folder to cache patch features in, so later runs with the same
    /// backbone, feature options and dataset folder skip the backbone.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    features: FeatureArgs,
    #[command(flatten)]
    train: TrainOptions,
}

impl EvalArgs {
    fn methods(&self) -> Vec<Method> {
        if let Some(m) = &self.methods {
            return m.clone();
        }
        let baselines = [Method::Knn, Method::Patchcore, Method::Softpatch];
        if self.baseline_only {
            baselines.to_vec()
        } else if self.no_baseline {
            vec![Method::Funad]
        } else {
            baselines.into_iter().chain([Method::Funad]).collect()
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}/{eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Progress bars for extraction and training, driven by fit events.
struct Bars {
    extract: Option<ProgressBar>,
    train: Option<ProgressBar>,
}

impl Bars {
    fn new() -> Self {
        Bars {
            extract: None,
            train: None,
        }
    }

    fn on(&mut self, event: FitEvent) {
        match event {
            FitEvent::Extract { done, total } => {
                let pb = self
                    .extract
                    .get_or_insert_with(|| bar(total as u64, "features"));
                pb.set_position(done as u64);
                if done == total {
                    pb.finish();
                }
            }
            FitEvent::Train(p) => {
                let total = (p.epochs * p.iterations_per_epoch) as u64;
                let pb = self.train.get_or_insert_with(|| bar(total, "training"));
                pb.set_position(((p.epoch - 1) * p.iterations_per_epoch + p.iteration) as u64);
                pb.set_message(format!("loss {:.3}", p.loss));
                if p.epoch == p.epochs && p.iteration == p.iterations_per_epoch {
                    pb.finish();
                }
            }
        }
    }
}

fn load_backbone(common: &Common) -> Result<Arc<Backbone>> {
    let device = select_device(&common.device)?;
    if !common.backbone.is_file() {
        anyhow::bail!(
            "backbone weights {} not found; run scripts/setup.sh to install the default, or pass --backbone",
            common.backbone.display()
        );
    }
    Ok(Arc::new(Backbone::load(&common.backbone, device)?))
}

fn run_train(args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    let paths = data::collect_inputs(&args.images)?;
    let vit = load_backbone(&args.common)?;
    let fcfg = args.features.config(&vit);
    let tcfg = args.train.config();
    eprintln!(
        "training on {} images with {} ({:?})",
        paths.len(),
        vit.id().name,
        vit.device()
    );
    let mut bars = Bars::new();
    let detector = fit::fit(vit, &fcfg, &tcfg, &paths, None, &mut |e| bars.on(e))?;
    detector.save(&args.out)?;
    let m = detector.meta();
    eprintln!(
        "wrote {} (model {}, threshold {:.4}) in {:.0} s",
        args.out.display(),
        m.model_id,
        m.threshold,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_map(dir: &Path, image_path: &Path, map: &tch::Tensor) -> Result<()> {
    let (h, w) = map.size2()?;
    let bytes: Vec<u8> = Vec::try_from(
        (map.clamp(0.0, 1.0) * 255.0)
            .round()
            .to_kind(tch::Kind::Uint8)
            .flatten(0, 1),
    )?;
    let img = image::GrayImage::from_raw(w as u32, h as u32, bytes).context("map buffer size")?;
    let stem = image_path.file_stem().unwrap_or_default().to_string_lossy();
    let out = dir.join(format!("{stem}_map.png"));
    img.save(&out)
        .with_context(|| format!("cannot write {}", out.display()))
}

fn run_score(args: ScoreArgs) -> Result<()> {
    let paths = data::collect_inputs(&args.images)?;
    let detector = args.model.load()?;
    let threshold = args.threshold.unwrap_or(detector.meta().threshold);
    if let Some(dir) = &args.maps {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let input_size = detector.meta().features.input_size;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for chunk in paths.chunks(fit::EXTRACT_BATCH) {
        let images: Vec<tch::Tensor> = chunk
            .iter()
            .map(|p| data::load_image(p))
            .collect::<Result<_>>()?;
        let scored = detector.score_images(&images)?;
        for ((path, image), s) in chunk.iter().zip(&images).zip(scored) {
            let verdict = Verdict::from_score(s.image_score, threshold);
            let line = serde_json::json!({
                "path": path,
                "image_score": s.image_score,
                "verdict": verdict.as_str(),
                "threshold": threshold,
                "model_id": detector.meta().model_id,
            });
            writeln!(out, "{line}")?;
            if let Some(dir) = &args.maps {
                let (h, w, _) = image.size3()?;
                write_map(
                    dir,
                    path,
                    &map::anomaly_map(&s.patch_scores, w, h, input_size),
                )?;
            }
        }
    }
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let vit = load_backbone(&args.common)?;
    let cfg = EvalConfig {
        root: args.data.clone(),
        ratio: args.ratio,
        seed: args.train.seed,
        features: args.features.config(&vit),
        train: args.train.config(),
        methods: args.methods(),
        baselines: BaselineConfig {
            knn_bank: args.knn_bank,
            knn_radius: args.knn_radius,
            coreset_ratio: args.coreset_ratio,
            projection_dim: args.projection_dim,
            lof_neighbours: args.lof_neighbours,
            softpatch_discard: args.softpatch_discard,
            retrieval_images: args.retrieval_images,
            reweight_neighbours: args.reweight_neighbours,
        },
        every_epoch: args.every_epoch,
        compare_heads: args.compare_heads,
        compare_bank_shares: args.compare_bank_shares.clone(),
        compare_bank_precision: args.compare_bank_precision,
        cache: args.cache.clone(),
    };
    let mut bars = Bars::new();
    let report = eval::evaluate(vit, &cfg, &mut |e| match e {
        EvalEvent::Stage(s) => eprintln!("{s}"),
        EvalEvent::Fit(f) => bars.on(f),
        EvalEvent::Epoch(m) => eprintln!(
            "epoch {}: test image AUROC {:.4}, pixel AUROC {:.4}, AUPRO {:.4}",
            m.epoch, m.image_auroc, m.pixel_auroc, m.aupro
        ),
    })?;
    println!(
        "{}: {} training images ({} defects moved in), {} test images ({} defects) \
         without overlap, seed {}",
        args.data.display(),
        report.train_images,
        report.moved_anomalies,
        report.test_images,
        report.test_anomalies,
        cfg.seed
    );
    println!(
        "| method | image AUROC | pixel AUROC | pixel AUROC at input | AUPRO | image AUROC, overlap \
         | pixel AUROC, overlap | AUPRO, overlap | F1 at threshold | fit s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for m in &report.methods {
        let f1 = m
            .f1_at_threshold
            .map(|f| format!("{f:.3}"))
            .unwrap_or_else(|| "–".into());
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {f1} | {:.0} |",
            m.method,
            m.image_auroc,
            m.pixel_auroc,
            m.pixel_auroc_at_input,
            m.aupro,
            m.overlap_image_auroc,
            m.overlap_pixel_auroc,
            m.overlap_aupro,
            m.fit_seconds
        );
        for h in &m.history {
            let pct = |v: Option<f64>| {
                v.map(|v| format!("{:.1}%", 100.0 * v))
                    .unwrap_or_else(|| "–".into())
            };
            println!(
                "  epoch {}: pseudo-anomalous {:.2}%, their precision {}, recall {}; \
                 bank images with a defect {}",
                h.epoch,
                100.0 * h.pseudo_anomalous,
                pct(h.pseudo_precision),
                pct(h.pseudo_recall),
                pct(h.bank_anomalous_images)
            );
        }
        if !m.by_defect.is_empty() {
            let parts: Vec<String> = m
                .by_defect
                .iter()
                .map(|d| {
                    format!(
                        "{} ({}) {:.4} / {:.4}",
                        d.defect, d.images, d.image_auroc, d.pixel_auroc
                    )
                })
                .collect();
            println!(
                "  by defect type (images), image / pixel AUROC against the good images: {}",
                parts.join("; ")
            );
        }
        if let (Some(best), Some(last)) = (eval::oracle_epoch(&m.epochs), m.epochs.last()) {
            println!(
                "  oracle epoch {} (best mean of test image and pixel AUROC): {:.4} / {:.4}; \
                 label-free last epoch {}: {:.4} / {:.4}",
                best.epoch,
                best.image_auroc,
                best.pixel_auroc,
                last.epoch,
                last.image_auroc,
                last.pixel_auroc
            );
        }
    }
    println!(
        "feature extraction {:.0} s, total {:.0} s",
        report.extract_seconds, report.total_seconds
    );
    if let Some(path) = &args.json {
        funad::model::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<()> {
    let paths = data::collect_inputs(&args.images)?;
    let detector = args.model.load()?;
    let images: Vec<tch::Tensor> = paths
        .iter()
        .map(|p| data::load_image(p))
        .collect::<Result<_>>()?;
    for image in images.iter().cycle().take(args.warmup) {
        detector.score_images(std::slice::from_ref(image))?;
    }
    let started = Instant::now();
    for image in &images {
        detector.score_images(std::slice::from_ref(image))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "frames": images.len(),
        "seconds": seconds,
        "frames_per_second": images.len() as f64 / seconds,
        "threads": tch::get_num_threads(),
        "device": format!("{:?}", detector.device()),
    });
    println!("{line}");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => run_train(a),
        Command::Score(a) => run_score(a),
        Command::Eval(a) => run_eval(a),
        Command::Bench(a) => run_bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
