//! End-to-end training on a small real subset of MTD: unlabeled, contaminated
//! training images in, a detector out that ranks defect images above normal ones.

mod common;

use std::path::PathBuf;

use funad::data::{image_files, load_image};
use funad::fit::{extract_images, fit_features, image_logits};
use funad::head::{self, ScoreHead};
use funad::metrics::auroc;
use funad::train::{initial_localnet, TrainConfig};
use funad::FeatureConfig;

/// Picks every `step`-th image of an MTD folder, up to `count`.
fn pick(folder: &str, count: usize, step: usize) -> Vec<PathBuf> {
    let files = image_files(&common::mtd().join(folder)).unwrap();
    files.into_iter().step_by(step).take(count).collect()
}

#[test]
fn training_separates_defects_and_beats_its_start() {
    let vit = common::backbone();
    let fcfg = FeatureConfig::default();
    // The discriminator head, whose scores come from training alone. The
    // default bank head is checked at the end.
    let tcfg = TrainConfig {
        epochs: 20,
        seed: 3,
        score_head: funad::head::ScoreHead::Discriminator,
        ..TrainConfig::default()
    };

    // 80 normal images and 8 defects (10%), with no labels.
    let mut train = pick("train/good", 80, 9);
    for kind in ["blowhole", "break", "crack", "uneven"] {
        train.extend(pick(&format!("test/{kind}"), 2, 7));
    }
    // Held-out test images: none of them is in the training set.
    let good = pick("test/good", 30, 6);
    let mut defects = Vec::new();
    for kind in ["blowhole", "break", "crack", "fray", "uneven"] {
        defects.extend(pick(&format!("test/{kind}"), 6, 5).into_iter().skip(1));
    }
    assert!(
        defects.iter().all(|d| !train.contains(d)),
        "test defects leaked into training"
    );

    let load = |paths: &[PathBuf]| {
        let images = paths.iter().map(|p| load_image(p));
        extract_images(&vit, &fcfg, images, paths.len(), &mut |_, _| {}).unwrap()
    };
    let train_feats = load(&train);
    let test_paths: Vec<PathBuf> = good.iter().chain(&defects).cloned().collect();
    let labels: Vec<bool> = test_paths.iter().map(|p| defects.contains(p)).collect();
    let test_feats = load(&test_paths);

    let (_, untrained) = initial_localnet(tch::Device::Cpu, train_feats.size()[2], &tcfg);
    let before = auroc(&image_logits(&untrained, &test_feats).unwrap(), &labels).unwrap();

    let detector = fit_features(
        vit.clone(),
        &fcfg,
        &tcfg,
        &train_feats,
        0,
        None,
        &mut |_| {},
    )
    .unwrap();
    let grid = detector.meta().grid;
    let (t, _, d) = test_feats.size3().unwrap();
    let maps = detector
        .score_features(&test_feats.view([t, grid, grid, d]))
        .unwrap();
    let scores: Vec<f32> = Vec::try_from(maps.view([t, -1]).amax(1, false)).unwrap();
    let after = auroc(&scores, &labels).unwrap();
    eprintln!("image AUROC: untrained {before:.3}, trained {after:.3}");

    assert!(
        after > 0.7,
        "trained image AUROC {after:.3} is below the floor of 0.7"
    );
    assert!(
        after > before,
        "training made the model worse: {before:.3} before, {after:.3} after"
    );
    // Every score is calibrated into (0, 1).
    assert!(
        scores.iter().all(|&s| s > 0.0),
        "a score is 0 or below: {scores:?}"
    );
    assert!(
        scores.iter().all(|&s| s < 1.0),
        "a score is 1 or above: {scores:?}"
    );
    let history = &detector.meta().history;
    assert_eq!(history.len(), 20);
    assert!(
        history.last().unwrap().loss < history[0].loss,
        "loss did not fall: {history:?}"
    );

    // The default bank head on the same trained net: the distance to the
    // backbone features of the 90% of training images ranked most normal.
    let defaults = TrainConfig::default();
    assert_eq!(defaults.score_head, ScoreHead::Bank);
    let (parts, maxima) = head::build(
        detector.local_net(),
        &train_feats,
        ScoreHead::Bank,
        head::BankOptions {
            image_share: defaults.score_bank_share,
            max_features: defaults.score_bank_features,
            seed: 3,
            precision: defaults.score_bank_precision,
            radius: defaults.score_bank_radius,
            ranking: defaults.score_bank_ranking,
        },
    )
    .unwrap();
    // 88 images: the 79 lowest-scoring stay (round(79.2)), 256 patches each.
    assert_eq!(parts.bank.as_ref().unwrap().size(), [79 * 256, d]);
    assert_eq!(maxima.len(), 88);
    let raw = parts
        .raw(detector.local_net(), &test_feats.view([-1, d]))
        .unwrap();
    let bank_scores: Vec<f32> = Vec::try_from(raw.view([t, -1]).amax(1, false)).unwrap();
    let bank_auroc = auroc(&bank_scores, &labels).unwrap();
    eprintln!("image AUROC of the bank head: {bank_auroc:.3}");
    assert!(
        bank_auroc > 0.7,
        "bank-head image AUROC {bank_auroc:.3} is below the floor of 0.7"
    );
}
