//! EfficientNet-Lite0 with its real ImageNet weights: the architecture read
//! off the weights, block outputs against ONNX Runtime, and the feature
//! options on a CNN.

mod common;

use funad::features::{self, FeatureConfig, LayerMerge};
use funad::Backbone;
use std::process::Command;

use tch::{Device, Kind, Tensor};

fn weights() -> std::path::PathBuf {
    let path = common::repo_root().join("weights/efficientnet_lite0.safetensors");
    assert!(
        path.is_file(),
        "{} missing; run scripts/setup.sh",
        path.display()
    );
    path
}

/// Eight MTD images, four normal and four defective, as one normalised batch.
fn batch(size: i64) -> Tensor {
    let mtd = common::mtd();
    let mut files = funad::data::image_files(&mtd.join("train/good")).unwrap();
    files.truncate(4);
    let mut crack = funad::data::image_files(&mtd.join("test/crack")).unwrap();
    crack.truncate(4);
    files.extend(crack);
    let images: Vec<Tensor> = files
        .iter()
        .map(|f| {
            let img = funad::data::load_image(f).unwrap();
            features::preprocess(&img, size, Device::Cpu).unwrap()
        })
        .collect();
    Tensor::stack(&images, 0)
}

#[test]
fn architecture_is_read_off_the_weights() {
    let cnn = Backbone::load(&weights(), Device::Cpu).unwrap();
    let cfg = cnn.config();
    assert_eq!(cfg.name(), "efficientnet-lite0");
    assert_eq!(cfg.depth, 16);
    assert_eq!(cfg.patch_size, 32);
    assert!(!cnn.has_cls());
    let widths: Vec<i64> = (1..=16).map(|b| cnn.block_width(b)).collect();
    assert_eq!(
        widths,
        [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]
    );
    let strides: Vec<i64> = (1..=16).map(|b| cnn.block_stride(b)).collect();
    assert_eq!(
        strides,
        [2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32]
    );
}

/// Compares blocks 2, 5, 11 and 16 with ONNX Runtime running a graph that
/// scripts/efficientnet_reference.py builds from the same weights.
fn compare_with_onnx_runtime(input: &Tensor) {
    let root = common::repo_root();
    let cnn = Backbone::load(&weights(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let x_path = dir.path().join("x.npy");
    input.write_npy(&x_path).unwrap();
    let blocks = [2usize, 5, 11, 16];
    let status = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/efficientnet_reference.py"))
        .arg(weights())
        .arg(&x_path)
        .arg(dir.path().join("block"))
        .args(blocks.iter().map(|b| b.to_string()))
        .status()
        .expect("run scripts/efficientnet_reference.py");
    assert!(status.success(), "ONNX Runtime reference failed");
    let actual = cnn.forward_blocks(input, &blocks).unwrap();
    for (t, b) in actual.iter().zip(blocks) {
        let expected = Tensor::read_npy(dir.path().join(format!("block{b}.npy"))).unwrap();
        assert_eq!(t.patches.size(), expected.size(), "block {b}");
        let err = f64::try_from((&t.patches - &expected).abs().max()).unwrap();
        let spread = f64::try_from(expected.std(true)).unwrap();
        eprintln!("block {b}: max abs difference {err:.2e}, reference std {spread:.3}");
        assert!(
            err < 1e-3 * spread.max(1.0),
            "block {b}: max abs difference {err}"
        );
    }
}

/// The reference itself: the whole network with its ImageNet head puts the
/// photo of Grace Hopper that matplotlib ships (installed by
/// scripts/setup.sh) in class 652, "military uniform".
#[test]
fn reference_classifies_a_photo() {
    let root = common::repo_root();
    let photo = std::fs::read_dir(root.join(".venv/lib"))
        .expect(".venv/lib missing; run scripts/setup.sh")
        .map(|e| {
            e.unwrap()
                .path()
                .join("site-packages/matplotlib/mpl-data/sample_data/grace_hopper.jpg")
        })
        .find(|p| p.is_file())
        .expect("matplotlib's grace_hopper.jpg missing; run scripts/setup.sh");
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/efficientnet_reference.py"))
        .arg("--classify")
        .arg(weights())
        .arg(&photo)
        .output()
        .expect("run scripts/efficientnet_reference.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let top: Vec<(u32, f64)> = text
        .lines()
        .map(|l| {
            let (c, p) = l.split_once(' ').unwrap();
            (c.parse().unwrap(), p.parse().unwrap())
        })
        .collect();
    eprintln!("top 5: {top:?}");
    assert_eq!(top[0].0, 652, "top classes {top:?}");
    assert!(
        top[0].1 > 0.3 && top[0].1 > 3.0 * top[1].1,
        "top classes {top:?}"
    );
}

#[test]
fn matches_onnx_runtime_on_real_images() {
    compare_with_onnx_runtime(&batch(224).narrow(0, 3, 2));
}

#[test]
fn matches_onnx_runtime_on_a_wide_input() {
    // 160×256: every stride-2 convolution pads asymmetrically, and unequally in H and W.
    let x = batch(256).narrow(0, 5, 1).narrow(2, 48, 160).contiguous();
    compare_with_onnx_runtime(&x);
}

#[test]
fn patchcore_features_on_a_28_grid() {
    let cnn = Backbone::load(&weights(), Device::Cpu).unwrap();
    let cfg = FeatureConfig {
        input_size: 224,
        blocks: vec![5, 11],
        merge: LayerMerge::Concat,
        with_cls: false,
        pool: 3,
        resize: funad::features::Resize::Stretch,
    };
    assert_eq!(cfg.validate(&cnn).unwrap(), 40 + 112);
    assert_eq!(cfg.grid(&cnn), 28);
    let x = batch(224);
    let f = features::extract(&cnn, &cfg, &x).unwrap();
    assert_eq!(f.size(), [8, 28, 28, 152]);
    assert!(f.isfinite().all().int64_value(&[]) == 1);
    // The stride-16 half is upsampled: neighbouring rows of the 28 grid share
    // a source row, so they differ less than in the stride-8 half.
    let row_diff = |t: &Tensor| {
        f64::try_from(
            (t.narrow(1, 1, 27) - t.narrow(1, 0, 27))
                .abs()
                .mean(Kind::Float),
        )
        .unwrap()
    };
    let fine = f.narrow(3, 0, 40);
    let coarse = f.narrow(3, 40, 112);
    assert!(
        row_diff(&coarse) / coarse.abs().mean(Kind::Float).double_value(&[])
            < row_diff(&fine) / fine.abs().mean(Kind::Float).double_value(&[])
    );

    let bad = FeatureConfig {
        with_cls: true,
        ..cfg.clone()
    };
    let msg = format!("{:#}", bad.validate(&cnn).unwrap_err());
    assert!(msg.contains("no CLS token"), "{msg}");
    let bad = FeatureConfig {
        merge: LayerMerge::Mean,
        ..cfg.clone()
    };
    let msg = format!("{:#}", bad.validate(&cnn).unwrap_err());
    assert!(msg.contains("[40, 112]"), "{msg}");
    let bad = FeatureConfig {
        input_size: 200,
        ..cfg
    };
    let msg = format!("{:#}", bad.validate(&cnn).unwrap_err());
    assert!(
        msg.contains("multiple of the network's total stride 32"),
        "{msg}"
    );
}
