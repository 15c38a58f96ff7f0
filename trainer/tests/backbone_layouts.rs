//! Checkpoint layouts the loader must read besides the default DINOv2 ViT-S/14:
//! DINO v1 (no LayerScale, patch 16) and DINOv2 with register tokens. The
//! weights here are random, so these tests check shapes and plumbing only;
//! `backbone_onnx` checks real weights against a reference.

use std::path::Path;

use funad::features::{extract, preprocess, FeatureConfig, LayerMerge};
use funad::Backbone;
use tch::{Device, Kind, Tensor};

const WIDTH: i64 = 384;

/// Writes a random ViT checkpoint with `depth` blocks under the official key names.
fn write_checkpoint(
    path: &Path,
    patch: i64,
    grid: i64,
    depth: i64,
    layer_scale: bool,
    registers: i64,
) {
    tch::manual_seed(7);
    let r = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.02;
    let mut named: Vec<(String, Tensor)> = vec![
        ("cls_token".into(), r(&[1, 1, WIDTH])),
        ("pos_embed".into(), r(&[1, 1 + grid * grid, WIDTH])),
        (
            "patch_embed.proj.weight".into(),
            r(&[WIDTH, 3, patch, patch]),
        ),
        ("patch_embed.proj.bias".into(), r(&[WIDTH])),
        (
            "norm.weight".into(),
            Tensor::ones([WIDTH], (Kind::Float, Device::Cpu)),
        ),
        ("norm.bias".into(), r(&[WIDTH])),
    ];
    if registers > 0 {
        named.push(("register_tokens".into(), r(&[1, registers, WIDTH])));
    }
    for i in 0..depth {
        let p = |n: &str| format!("blocks.{i}.{n}");
        named.push((
            p("norm1.weight"),
            Tensor::ones([WIDTH], (Kind::Float, Device::Cpu)),
        ));
        named.push((p("norm1.bias"), r(&[WIDTH])));
        named.push((p("attn.qkv.weight"), r(&[3 * WIDTH, WIDTH])));
        named.push((p("attn.qkv.bias"), r(&[3 * WIDTH])));
        named.push((p("attn.proj.weight"), r(&[WIDTH, WIDTH])));
        named.push((p("attn.proj.bias"), r(&[WIDTH])));
        named.push((
            p("norm2.weight"),
            Tensor::ones([WIDTH], (Kind::Float, Device::Cpu)),
        ));
        named.push((p("norm2.bias"), r(&[WIDTH])));
        named.push((p("mlp.fc1.weight"), r(&[4 * WIDTH, WIDTH])));
        named.push((p("mlp.fc1.bias"), r(&[4 * WIDTH])));
        named.push((p("mlp.fc2.weight"), r(&[WIDTH, 4 * WIDTH])));
        named.push((p("mlp.fc2.bias"), r(&[WIDTH])));
        if layer_scale {
            named.push((p("ls1.gamma"), r(&[WIDTH])));
            named.push((p("ls2.gamma"), r(&[WIDTH])));
        }
    }
    Tensor::write_safetensors(&named, path).unwrap();
}

fn image(size: i64) -> Tensor {
    let pixels =
        (Tensor::rand([size, size, 3], (Kind::Float, Device::Cpu)) * 255.0).to_kind(Kind::Uint8);
    preprocess(&pixels, size, Device::Cpu).unwrap().unsqueeze(0)
}

#[test]
fn dino_v1_layout_loads_and_interpolates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dino_vits16.safetensors");
    write_checkpoint(&path, 16, 14, 2, false, 0);
    let vit = Backbone::load(&path, Device::Cpu).unwrap();
    let cfg = vit.config();
    assert_eq!(cfg.patch_size, 16);
    assert_eq!(cfg.depth, 2);
    assert_eq!(cfg.num_heads, 6);
    assert!(!cfg.layer_scale);
    assert_eq!(cfg.pos_grid, 14);
    assert_eq!(cfg.name(), "dino vit-s/16");

    // Native grid (224 / 16 = 14) and an interpolated one (320 / 16 = 20).
    let native = vit.forward_final(&image(224)).unwrap();
    assert_eq!(native.size(), vec![1, 1 + 14 * 14, WIDTH]);
    let wider = vit.forward_final(&image(320)).unwrap();
    assert_eq!(wider.size(), vec![1, 1 + 20 * 20, WIDTH]);
    assert!(bool::try_from(wider.isfinite().all()).unwrap());

    // FUN-AD's published features: CLS ⊕ final patch token, 768 values per patch.
    let fcfg = FeatureConfig {
        input_size: 224,
        blocks: vec![2],
        merge: LayerMerge::Concat,
        with_cls: true,
        pool: 1,
        resize: funad::features::Resize::Stretch,
    };
    assert_eq!(fcfg.validate(&vit).unwrap(), 2 * WIDTH);
    let feats = extract(&vit, &fcfg, &image(224)).unwrap();
    assert_eq!(feats.size(), vec![1, 14, 14, 2 * WIDTH]);
    // Every patch carries the same CLS half.
    let cls = feats.narrow(3, 0, WIDTH);
    let spread = f64::try_from((&cls - cls.get(0).get(0).get(0)).abs().max()).unwrap();
    assert_eq!(spread, 0.0);
}

#[test]
fn dinov2_registers_are_not_patches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dinov2_vits14_reg.safetensors");
    write_checkpoint(&path, 14, 37, 2, true, 4);
    let vit = Backbone::load(&path, Device::Cpu).unwrap();
    assert_eq!(vit.config().num_registers, 4);
    assert_eq!(vit.config().name(), "dinov2 vit-s/14-reg");
    // CLS plus 16×16 patches: the four register tokens are dropped.
    let out = vit.forward_final(&image(224)).unwrap();
    assert_eq!(out.size(), vec![1, 1 + 16 * 16, WIDTH]);
}

#[test]
fn foreign_checkpoint_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.safetensors");
    let named = vec![(
        "conv1.weight".to_string(),
        Tensor::zeros([64, 3, 7, 7], (Kind::Float, Device::Cpu)),
    )];
    Tensor::write_safetensors(&named, &path).unwrap();
    let msg = format!("{:#}", Backbone::load(&path, Device::Cpu).unwrap_err());
    assert!(msg.contains("patch_embed.proj.weight"), "{msg}");
    assert!(msg.contains("resnet.safetensors"), "{msg}");

    std::fs::write(&path, b"garbage").unwrap();
    let msg = format!("{:#}", Backbone::load(&path, Device::Cpu).unwrap_err());
    assert!(msg.contains("not a valid safetensors file"), "{msg}");
}
