//! Model files: round trip, atomic writes, and clear errors for bad files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use funad::data::image_files;
use funad::fit::fit;
use funad::head::{BankRanking, ScoreHead};
use funad::knn::Precision;
use funad::{Detector, FeatureConfig, TrainConfig};
use tch::Device;

/// Trains a model on 12 real MTD images (1 epoch, batch 4) with `head`.
fn train_small(head: ScoreHead) -> Detector {
    train_small_with(head, Precision::Float32)
}

/// As [`train_small`], with the scoring bank searched in `precision`.
fn train_small_with(head: ScoreHead, precision: Precision) -> Detector {
    train_small_config(TrainConfig {
        score_head: head,
        score_bank_precision: precision,
        ..TrainConfig::default()
    })
}

/// Trains on the 12 images with `base`'s head and bank options, 1 epoch,
/// batch 4, at most 1000 bank features.
fn train_small_config(base: TrainConfig) -> Detector {
    let images: Vec<PathBuf> = image_files(&common::mtd().join("train/good"))
        .unwrap()
        .into_iter()
        .step_by(40)
        .take(12)
        .collect();
    let tcfg = TrainConfig {
        epochs: 1,
        batch_size: 4,
        score_bank_features: 1000,
        ..base
    };
    fit(
        common::backbone(),
        &FeatureConfig::default(),
        &tcfg,
        &images,
        None,
        &mut |_| {},
    )
    .unwrap()
}

/// Returns a small default-head model, trained once and saved in a temp folder.
fn model() -> &'static (tempfile::TempDir, PathBuf) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let detector = train_small(TrainConfig::default().score_head);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.funad");
        detector.save(&path).unwrap();
        (dir, path)
    })
}

fn load_err(path: &Path, backbone: Option<&Path>) -> String {
    format!(
        "{:#}",
        Detector::load(path, backbone, Device::Cpu).unwrap_err()
    )
}

fn copy_with(bytes: &[u8], name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn round_trip_gives_same_scores() {
    let (_, path) = model();
    let a = Detector::load(path, None, Device::Cpu).unwrap();
    let image =
        funad::data::load_image(&common::mtd().join("test/crack/exp1_num_249594.jpg")).unwrap();
    let first = a.score_images(std::slice::from_ref(&image)).unwrap();
    let b = Detector::load(path, Some(&common::backbone_path()), Device::Cpu).unwrap();
    let second = b.score_images(&[image]).unwrap();
    assert_eq!(first[0].image_score, second[0].image_score);
    assert_eq!(a.meta().model_id, b.meta().model_id);
    assert_eq!(a.meta().model_id.len(), 12);
    assert_eq!(a.meta().grid, 16);
    assert_eq!(a.meta().backbone.name, "dinov2 vit-s/14");
    assert!(first[0].image_score > 0.0, "score {}", first[0].image_score);
    assert!(first[0].image_score < 1.0, "score {}", first[0].image_score);
}

#[test]
fn missing_file_names_path() {
    let msg = load_err(Path::new("/nonexistent/model.funad"), None);
    assert!(msg.contains("/nonexistent/model.funad"), "{msg}");
}

#[test]
fn truncated_file_is_rejected() {
    let bytes = std::fs::read(&model().1).unwrap();
    for keep in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        let (_dir, path) = copy_with(&bytes[..keep], "truncated.funad");
        let msg = load_err(&path, None);
        assert!(msg.contains("truncated.funad"), "{msg}");
        assert!(msg.contains("corrupt or truncated"), "cut at {keep}: {msg}");
    }
}

#[test]
fn flipped_weight_byte_fails_checksum() {
    let mut bytes = std::fs::read(&model().1).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x55;
    let (_dir, path) = copy_with(&bytes, "flipped.funad");
    let msg = load_err(&path, None);
    assert!(msg.contains("do not match their checksum"), "{msg}");
}

#[test]
fn backbone_file_is_not_a_model() {
    let msg = load_err(&common::backbone_path(), None);
    assert!(msg.contains("not a funad model"), "{msg}");
}

#[test]
fn wrong_format_version_is_rejected() {
    let mut bytes = std::fs::read(&model().1).unwrap();
    let needle = format!("\\\"format_version\\\":{}", funad::model::FORMAT_VERSION).into_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("format version in header");
    // Overwrite the one-digit version in place, so the header keeps its length.
    *bytes.get_mut(at + needle.len() - 1).unwrap() = b'9';
    let (_dir, path) = copy_with(&bytes, "future.funad");
    let msg = load_err(&path, None);
    assert!(msg.contains("format version 9"), "{msg}");
    assert!(msg.contains("future.funad"), "{msg}");
}

#[test]
fn mismatched_backbone_is_rejected() {
    // Same architecture, other weights: scale one tensor of the real backbone.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.safetensors");
    let mut named = tch::Tensor::read_safetensors(common::backbone_path()).unwrap();
    for (name, t) in named.iter_mut() {
        if name == "norm.weight" {
            *t = &*t * 2.0;
        }
    }
    tch::Tensor::write_safetensors(&named, &other).unwrap();
    let msg = load_err(&model().1, Some(&other));
    assert!(msg.contains("was trained with backbone"), "{msg}");
    assert!(msg.contains("other.safetensors"), "{msg}");
    let msg = load_err(
        &model().1,
        Some(Path::new("/nonexistent/backbone.safetensors")),
    );
    assert!(msg.contains("not found"), "{msg}");
}

#[test]
fn save_replaces_atomically() {
    let (_, path) = model();
    let detector = Detector::load(path, None, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.funad");
    std::fs::write(&target, b"old contents").unwrap();
    detector.save(&target).unwrap();
    // The metadata's key order varies between writes, so compare what loads back.
    let reloaded = Detector::load(&target, None, Device::Cpu).unwrap();
    assert_eq!(reloaded.meta().model_id, detector.meta().model_id);
    assert_eq!(reloaded.meta().threshold, detector.meta().threshold);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // Saving into a folder that does not exist fails and names it.
    let msg = format!(
        "{:#}",
        detector
            .save(Path::new("/nonexistent/dir/m.funad"))
            .unwrap_err()
    );
    assert!(msg.contains("/nonexistent/dir"), "{msg}");
}

/// Trains the 12-image model with `head` and saves it.
fn model_with_head(head: ScoreHead) -> (tempfile::TempDir, PathBuf, Detector) {
    let detector = train_small(head);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.funad");
    detector.save(&path).unwrap();
    (dir, path, detector)
}

#[test]
fn bank_heads_round_trip_with_their_bank() {
    let image =
        funad::data::load_image(&common::mtd().join("test/crack/exp1_num_249594.jpg")).unwrap();
    for head in [ScoreHead::Bank, ScoreHead::Blend] {
        let (_dir, path, trained) = model_with_head(head);
        let loaded = Detector::load(&path, None, Device::Cpu).unwrap();
        assert_eq!(loaded.meta().score_head, head);
        assert_eq!(loaded.meta().model_id, trained.meta().model_id);
        let a = trained.score_images(std::slice::from_ref(&image)).unwrap();
        let b = loaded.score_images(std::slice::from_ref(&image)).unwrap();
        assert_eq!(a[0].image_score, b[0].image_score, "{head:?}");
        // The bank is stored: of 12 images of 256 patches, the 11 lowest-scoring
        // (the default share 0.9) give 2816 patches, capped at 1000.
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let bank = st.tensor("head.bank").unwrap();
        assert_eq!(bank.shape(), &[1000, 384], "{head:?}");
        assert!(b[0].image_score > 0.0, "{head:?}");
        assert!(b[0].image_score < 1.0, "{head:?}");
    }
}

#[test]
fn positional_bank_round_trips() {
    let images: Vec<_> = ["test/crack", "test/good"]
        .iter()
        .flat_map(|d| {
            image_files(&common::mtd().join(d))
                .unwrap()
                .into_iter()
                .take(2)
        })
        .map(|f| funad::data::load_image(&f).unwrap())
        .collect();
    // The Local-Net ranking picks the same bank images at every radius (the
    // distance ranking searches by position too), so the banks below differ
    // only in how they are searched.
    let positional = |radius| {
        train_small_config(TrainConfig {
            score_bank_radius: Some(radius),
            score_bank_ranking: BankRanking::Localnet,
            ..TrainConfig::default()
        })
    };
    let near = positional(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("positional.funad");
    near.save(&path).unwrap();
    let loaded = Detector::load(&path, None, Device::Cpu).unwrap();
    assert_eq!(loaded.meta().train.score_bank_radius, Some(1));
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("head.bank_positions").unwrap().shape(), &[1000]);
    let a = near.score_images(&images).unwrap();
    let b = loaded.score_images(&images).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.image_score, b.image_score);
    }
    // A radius that spans the 16×16 grid compares with every bank patch, so
    // its raw distances equal those of the plain search on the same bank.
    let whole = positional(15);
    let plain = train_small_config(TrainConfig {
        score_bank_ranking: BankRanking::Localnet,
        ..TrainConfig::default()
    });
    let inputs: Vec<_> = images
        .iter()
        .map(|i| whole.preprocess(i).unwrap())
        .collect();
    let feats = whole.features(&tch::Tensor::stack(&inputs, 0)).unwrap();
    let (n, g, _, d) = feats.size4().unwrap();
    let flat = feats.reshape([n * g * g, d]);
    let spanned = whole.head().raw(whole.local_net(), &flat).unwrap();
    let global = plain.head().raw(plain.local_net(), &flat).unwrap();
    let gap = f64::try_from((&spanned - &global).abs().max()).unwrap();
    assert!(
        gap < 1e-3,
        "radius 15 differs from the plain search by {gap}"
    );
    // Radius 1 can only find the same or a farther neighbour.
    let local = near.head().raw(near.local_net(), &flat).unwrap();
    let below = f64::try_from((&global - &local).max()).unwrap();
    assert!(below < 1e-3, "radius 1 found a nearer patch by {below}");
    assert!(f64::try_from((&local - &global).max()).unwrap() > 0.0);
}

#[test]
fn bfloat16_bank_search_round_trips() {
    let images: Vec<_> = image_files(&common::mtd().join("test/crack"))
        .unwrap()
        .iter()
        .take(2)
        .chain(
            image_files(&common::mtd().join("test/good"))
                .unwrap()
                .iter()
                .take(2),
        )
        .map(|f| funad::data::load_image(f).unwrap())
        .collect();
    let exact = train_small_with(ScoreHead::Bank, Precision::Float32);
    let fast = train_small_with(ScoreHead::Bank, Precision::Bfloat16);
    assert_eq!(fast.head().precision(), Precision::Bfloat16);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bf16.funad");
    fast.save(&path).unwrap();
    let loaded = Detector::load(&path, None, Device::Cpu).unwrap();
    assert_eq!(
        loaded.meta().train.score_bank_precision,
        Precision::Bfloat16
    );
    assert_eq!(loaded.head().precision(), Precision::Bfloat16);

    let a = exact.score_images(&images).unwrap();
    let b = fast.score_images(&images).unwrap();
    let c = loaded.score_images(&images).unwrap();
    for ((a, b), c) in a.iter().zip(&b).zip(&c) {
        assert_eq!(b.image_score, c.image_score);
        // Same training, so only the search's rounding separates the two.
        assert!(
            (a.image_score - b.image_score).abs() < 0.01,
            "float32 {} against bfloat16 {}",
            a.image_score,
            b.image_score
        );
        let patch_gap = f64::try_from((&a.patch_scores - &b.patch_scores).abs().max()).unwrap();
        eprintln!(
            "image score {} against {}, max patch gap {patch_gap:.2e}",
            a.image_score, b.image_score
        );
        assert!(patch_gap < 0.02, "patch scores differ by up to {patch_gap}");
    }
}

#[test]
fn format_2_file_reads_as_discriminator_head() {
    // Version 2 files contain a discriminator-head model without a bank.
    let (_dir, path, _) = model_with_head(ScoreHead::Discriminator);
    let path = &path;
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&metadata["funad"]).unwrap();
    let obj = meta.as_object_mut().unwrap();
    obj.insert("format_version".into(), 2.into());
    for key in ["score_head", "logit_stats", "bank_stats"] {
        assert!(obj.remove(key).is_some(), "{key} written");
    }
    metadata.insert("funad".into(), meta.to_string());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().collect();
    let old = safetensors::serialize(views, &Some(metadata)).unwrap();
    let (_dir, old_path) = copy_with(&old, "v2.funad");
    let legacy = Detector::load(&old_path, None, Device::Cpu).unwrap();
    let current = Detector::load(path, None, Device::Cpu).unwrap();
    assert_eq!(
        legacy.meta().score_head,
        funad::head::ScoreHead::Discriminator
    );
    let image =
        funad::data::load_image(&common::mtd().join("test/crack/exp1_num_249594.jpg")).unwrap();
    let a = legacy.score_images(std::slice::from_ref(&image)).unwrap();
    let b = current.score_images(&[image]).unwrap();
    assert_eq!(a[0].image_score, b[0].image_score);
}

#[test]
fn whole_training_image_skips_itself() {
    // Six training images, every patch of each in the bank.
    let paths = six_training_images();
    let fresh = fit_whole_bank(
        &paths,
        TrainConfig {
            score_bank_radius: Some(1),
            ..TrainConfig::default()
        },
    );
    assert_eq!(fresh.head().bank.as_ref().unwrap().size()[0], 6 * 256);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("whole.funad");
    fresh.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("head.bank_groups").unwrap().shape(), &[6 * 256]);
    let loaded = Detector::load(&path, None, Device::Cpu).unwrap();
    assert_eq!(loaded.head().whole_images().unwrap().patches, 256);

    // A training image scored again: each patch's distance is to the other
    // five images, so the image's largest distance is far from 0.
    let image = funad::data::load_image(&paths[2]).unwrap();
    for detector in [&fresh, &loaded] {
        let input = detector.preprocess(&image).unwrap();
        let feats = detector.features(&input.unsqueeze(0)).unwrap();
        let d = feats.size()[3];
        let raw = detector
            .head()
            .raw(detector.local_net(), &feats.reshape([-1, d]))
            .unwrap();
        let top = f64::try_from(raw.max()).unwrap();
        assert!(
            top > 1.0,
            "a training image matched itself: largest distance {top}"
        );
    }
    let a = fresh.score_images(std::slice::from_ref(&image)).unwrap();
    let b = loaded.score_images(std::slice::from_ref(&image)).unwrap();
    assert!((a[0].image_score - b[0].image_score).abs() < 1e-5);
}

/// Returns six MTD training images, spread over the folder.
fn six_training_images() -> Vec<PathBuf> {
    image_files(&common::mtd().join("train/good"))
        .unwrap()
        .into_iter()
        .step_by(90)
        .take(6)
        .collect()
}

/// Trains on `paths` for 1 epoch, batch 4, with every patch of every image
/// in the scoring bank, and `base`'s other options.
fn fit_whole_bank(paths: &[PathBuf], base: TrainConfig) -> Detector {
    let tcfg = TrainConfig {
        epochs: 1,
        batch_size: 4,
        score_bank_share: 1.0,
        score_bank_features: 1_000_000,
        ..base
    };
    fit(
        common::backbone(),
        &FeatureConfig::default(),
        &tcfg,
        paths,
        None,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn synthetic_images_stay_out_of_bank() {
    // FUN-AD*: six real images and three synthetic ones (ratio 0.5). Training
    // uses all nine, but a bank of every patch contains the six real images only.
    let detector = fit_whole_bank(
        &six_training_images(),
        TrainConfig {
            synthetic_ratio: 0.5,
            ..TrainConfig::default()
        },
    );
    assert_eq!(detector.head().bank.as_ref().unwrap().size()[0], 6 * 256);
}
