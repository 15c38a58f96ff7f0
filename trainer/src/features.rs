//! Patch features: image preprocessing and the backbone options that turn
//! ViT tokens into one feature vector per patch.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::backbone::Backbone;

/// ImageNet channel means and standard deviations, which DINO and DINOv2 were trained with.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Merge rule for several requested blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LayerMerge {
    /// Concatenate the blocks' patch tokens (feature size grows with each block).
    Concat,
    /// Average the blocks' patch tokens.
    Mean,
}

/// How an image is fitted into the square model input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Scale width and height to the input size; the aspect ratio is lost.
    #[default]
    Stretch,
    /// Scale the longer side to the input size and keep the aspect ratio to
    /// the nearest whole patch; the rest of the square mirrors the image and
    /// is cut off the anomaly map again.
    Letterbox,
}

impl Resize {
    fn is_stretch(&self) -> bool {
        *self == Resize::Stretch
    }
}

/// The patches of the square grid that show the image; the others are padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Content {
    /// First patch row and column of the image.
    pub top: i64,
    pub left: i64,
    /// Patch rows and columns of the image.
    pub rows: i64,
    pub cols: i64,
}

impl Content {
    /// The image's patches of a score grid `[.., grid, grid]`: `[.., rows, cols]`.
    pub fn crop(&self, grid: &Tensor) -> Tensor {
        let d = grid.dim() as i64;
        grid.narrow(d - 2, self.top, self.rows)
            .narrow(d - 1, self.left, self.cols)
    }
}

/// Tokens that form a patch feature, and the input size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// Side of the square model input, in pixels; a multiple of the patch size.
    pub input_size: i64,
    /// 1-based indices of the blocks whose patch tokens are used.
    pub blocks: Vec<usize>,
    /// Merge rule for several blocks.
    pub merge: LayerMerge,
    /// Concatenate the CLS token of the last requested block to each patch token,
    /// as the FUN-AD paper does with the final block.
    pub with_cls: bool,
    /// Side of the neighbourhood averaged around each patch (1 = no pooling).
    pub pool: i64,
    /// Fit of the image into the square input (model files written before the
    /// option existed: stretch). Left out of the JSON when it is stretch, so
    /// those files and feature caches keep their keys.
    #[serde(default, skip_serializing_if = "Resize::is_stretch")]
    pub resize: Resize,
}

impl Default for FeatureConfig {
    /// Patch tokens after block 8 of 12, no CLS, 224 px input.
    ///
    /// On MTD at 10% contamination with the default DINOv2 ViT-S/14, a one-class
    /// nearest-neighbour score reaches 0.857 image AUROC with these features
    /// (docs/benchmarks.md).
    fn default() -> Self {
        FeatureConfig {
            input_size: 224,
            blocks: vec![8],
            merge: LayerMerge::Concat,
            with_cls: false,
            pool: 1,
            resize: Resize::Stretch,
        }
    }
}

impl FeatureConfig {
    /// Returns the default features for a backbone. A ViT gets
    /// [`FeatureConfig::default`]. EfficientNet-Lite0 gets the outputs of
    /// blocks 5 (stride 8) and 11 (stride 16) on a 28×28 grid, averaged over
    /// 3×3 neighbourhoods, the way PatchCore uses a CNN's middle stages.
    pub fn for_backbone(vit: &Backbone) -> Self {
        if vit.has_cls() {
            FeatureConfig::default()
        } else {
            FeatureConfig {
                blocks: vec![5, 11],
                pool: 3,
                ..FeatureConfig::default()
            }
        }
    }

    /// Returns the features of the FUN-AD paper (Im et al., 2025): CLS ⊕ patch token of the final block.
    pub fn paper(depth: usize) -> Self {
        FeatureConfig {
            input_size: 224,
            blocks: vec![depth],
            merge: LayerMerge::Concat,
            with_cls: true,
            pool: 1,
            resize: Resize::Stretch,
        }
    }

    /// Checks the options against a backbone and returns the feature size.
    pub fn validate(&self, vit: &Backbone) -> Result<i64> {
        let cfg = vit.config();
        if self.input_size <= 0 || self.input_size % cfg.patch_size != 0 {
            let unit = if vit.has_cls() {
                "patch size"
            } else {
                "network's total stride"
            };
            bail!(
                "input size {} is invalid for {}: use a positive multiple of the {unit} {}",
                self.input_size,
                cfg.name(),
                cfg.patch_size
            );
        }
        if self.blocks.is_empty() {
            bail!(
                "no backbone block selected: pass at least one block index between 1 and {}",
                cfg.depth
            );
        }
        if let Some(b) = self
            .blocks
            .iter()
            .find(|&&b| b == 0 || b > cfg.depth as usize)
        {
            bail!(
                "block {b} does not exist: {} has blocks 1 to {}",
                cfg.name(),
                cfg.depth
            );
        }
        if self.pool < 1 || self.pool % 2 == 0 {
            bail!(
                "pool size {} is invalid: use an odd number of patches, 1 for none",
                self.pool
            );
        }
        if self.with_cls && !vit.has_cls() {
            bail!(
                "{} has no CLS token: drop --with-cls (with-cls) for this backbone",
                cfg.name()
            );
        }
        let widths: Vec<i64> = self.blocks.iter().map(|&b| vit.block_width(b)).collect();
        let tokens = match self.merge {
            LayerMerge::Concat => widths.iter().sum(),
            LayerMerge::Mean => {
                if widths.iter().any(|&w| w != widths[0]) {
                    bail!(
                        "blocks {:?} of {} have widths {widths:?}; the mean merge needs equal \
                         widths, use the concat merge",
                        self.blocks,
                        cfg.name()
                    );
                }
                widths[0]
            }
        };
        Ok(tokens + if self.with_cls { cfg.embed_dim } else { 0 })
    }

    /// Side of the patch grid: the input size over the finest requested block's stride.
    pub fn grid(&self, vit: &Backbone) -> i64 {
        let stride = self
            .blocks
            .iter()
            .map(|&b| vit.block_stride(b))
            .min()
            .unwrap_or(vit.config().patch_size);
        self.input_size / stride
    }

    /// The patches of a `grid`×`grid` input that show a `width`×`height` image.
    pub fn content(&self, grid: i64, width: i64, height: i64) -> Content {
        content(self.resize, grid, width, height)
    }
}

/// The patches of a `grid`×`grid` input that show a `width`×`height` image
/// fitted by `resize`. A letterboxed image spans the whole grid along its
/// longer side and the nearest whole number of patches (at least one) along
/// the other, centred.
pub fn content(resize: Resize, grid: i64, width: i64, height: i64) -> Content {
    match resize {
        Resize::Stretch => Content {
            top: 0,
            left: 0,
            rows: grid,
            cols: grid,
        },
        Resize::Letterbox => {
            let long = width.max(height).max(1) as f64;
            let cells =
                |side: i64| ((side as f64 / long * grid as f64).round() as i64).clamp(1, grid);
            let (rows, cols) = (cells(height), cells(width));
            Content {
                top: (grid - rows) / 2,
                left: (grid - cols) / 2,
                rows,
                cols,
            }
        }
    }
}

/// Mirrors `x` `[1, C, H, W]` outwards by the given numbers of pixels. A
/// reflection is at most one pixel short of the side, so wider borders are
/// mirrored in steps; a side of one pixel is repeated instead.
fn mirror_pad(x: Tensor, top: i64, bottom: i64, left: i64, right: i64) -> Tensor {
    let (mut x, mut pad) = (x, [left, right, top, bottom]);
    while pad.iter().any(|&p| p > 0) {
        let (h, w) = (x.size()[2], x.size()[3]);
        if (h < 2 && pad[2] + pad[3] > 0) || (w < 2 && pad[0] + pad[1] > 0) {
            return x.replication_pad2d(pad);
        }
        let step = [
            pad[0].min(w - 1),
            pad[1].min(w - 1),
            pad[2].min(h - 1),
            pad[3].min(h - 1),
        ];
        x = x.reflection_pad2d(step);
        for (p, s) in pad.iter_mut().zip(step) {
            *p -= s;
        }
    }
    x
}

/// Converts 8-bit pixels `[H, W, C]` (C = 1, 3 or 4, RGB order) into a
/// normalised model input `[3, size, size]` on `device`, stretched to the
/// square; see [`preprocess_with`].
pub fn preprocess(pixels: &Tensor, size: i64, device: Device) -> Result<Tensor> {
    preprocess_with(pixels, size, Resize::Stretch, 1, device)
}

/// Converts 8-bit pixels `[H, W, C]` (C = 1, 3 or 4, RGB order) into a
/// normalised model input `[3, size, size]` on `device`, for a patch grid of
/// `grid`×`grid` (used by the letterbox fit only).
///
/// Nothing is cropped, so the anomaly map covers the whole frame (the
/// authors' centre crop would cut off defects at the border). Resizing uses
/// antialiased bilinear filtering. With [`Resize::Letterbox`] the image keeps
/// its aspect ratio (to the nearest whole patch) and the padding around it
/// mirrors the image, so that padding patches look like the surface rather
/// than like a flat fill.
pub fn preprocess_with(
    pixels: &Tensor,
    size: i64,
    resize: Resize,
    grid: i64,
    device: Device,
) -> Result<Tensor> {
    let (h, w, c) = pixels.size3()?;
    if h == 0 || w == 0 {
        bail!("image is empty ({w}×{h})");
    }
    let x = pixels
        .to_device(device)
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        / 255.0;
    let x = match c {
        1 | 3 => x,
        4 => x.narrow(0, 0, 3),
        _ => bail!("image has {c} channels; expected 1, 3 or 4"),
    };
    // Grey images are resized while they have one channel and expanded to
    // three afterwards, which saves two thirds of the resize work.
    let x = x.contiguous().unsqueeze(0);
    let fit = content(resize, grid.max(1), w, h);
    let cell = size / grid.max(1);
    let (th, tw) = match resize {
        Resize::Stretch => (size, size),
        Resize::Letterbox => (fit.rows * cell, fit.cols * cell),
    };
    let x = if (h, w) == (th, tw) {
        x
    } else {
        x.internal_upsample_bilinear2d_aa([th, tw], false, None, None)
    };
    let x = if (th, tw) == (size, size) {
        x
    } else {
        let (top, left) = (fit.top * cell, fit.left * cell);
        mirror_pad(x, top, size - top - th, left, size - left - tw)
    };
    let x = x.expand([1, 3, size, size], false);
    let mean = Tensor::from_slice(&IMAGENET_MEAN)
        .to_kind(Kind::Float)
        .to_device(device)
        .view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD)
        .to_kind(Kind::Float)
        .to_device(device)
        .view([1, 3, 1, 1]);
    Ok(((x - mean) / std).squeeze_dim(0))
}

/// Turns a batch of normalised images `[B, 3, S, S]` into patch features
/// `[B, grid, grid, feature_size]`.
///
/// Each block's grid is pooled at its own resolution. Grids coarser than the
/// finest one (CNN stages) are then resized to it with bilinear
/// interpolation, as PatchCore does, before the blocks are merged.
pub fn extract(vit: &Backbone, cfg: &FeatureConfig, images: &Tensor) -> Result<Tensor> {
    let tokens = vit.forward_blocks(images, &cfg.blocks)?;
    let _guard = tch::no_grad_guard();
    let grid = cfg.grid(vit);
    let patches: Vec<Tensor> = tokens
        .iter()
        .map(|t| {
            // [B, C, h, w] for pooling and resizing.
            let mut x = t.patches.permute([0, 3, 1, 2]);
            if cfg.pool > 1 {
                // Average over a pool×pool neighbourhood, ignoring positions outside the grid.
                let k = cfg.pool;
                x = x.avg_pool2d([k, k], [1, 1], [k / 2, k / 2], false, false, None::<i64>);
            }
            if x.size()[2] != grid || x.size()[3] != grid {
                x = x.upsample_bilinear2d([grid, grid], false, None, None);
            }
            x.permute([0, 2, 3, 1])
        })
        .collect();
    let mut feat = match cfg.merge {
        LayerMerge::Concat => Tensor::cat(&patches, -1),
        LayerMerge::Mean => Tensor::stack(&patches, 0).mean_dim(0, false, Kind::Float),
    };
    if cfg.with_cls {
        let cls = tokens
            .last()
            .expect("at least one block")
            .cls
            .as_ref()
            .context("this backbone has no CLS token")?;
        let (b, gh, gw, _) = feat.size4()?;
        let d = cls.size()[1];
        feat = Tensor::cat(
            &[cls.view([b, 1, 1, d]).expand([b, gh, gw, d], false), feat],
            -1,
        );
    }
    Ok(feat.contiguous())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_content_keeps_the_aspect_ratio() {
        // MTD's narrowest image, 222 wide and 103 high, on a 16-patch grid:
        // 103 / 222 · 16 = 7.42 rows, rounded to 7 and centred below 4 rows.
        let c = content(Resize::Letterbox, 16, 222, 103);
        assert_eq!(
            c,
            Content {
                top: 4,
                left: 0,
                rows: 7,
                cols: 16
            }
        );
        // Portrait: 403 / 632 · 16 = 10.2 columns.
        let c = content(Resize::Letterbox, 16, 403, 632);
        assert_eq!((c.top, c.left, c.rows, c.cols), (0, 3, 16, 10));
        // A line of one pixel still gets one patch row.
        assert_eq!(content(Resize::Letterbox, 16, 1000, 1).rows, 1);
        assert_eq!(
            content(Resize::Stretch, 16, 222, 103),
            Content {
                top: 0,
                left: 0,
                rows: 16,
                cols: 16
            }
        );
        let grid = Tensor::arange(16, (Kind::Float, Device::Cpu)).view([4, 4]);
        let crop = content(Resize::Letterbox, 4, 8, 4).crop(&grid);
        // 4 / 8 · 4 = 2 rows, starting at row 1.
        let got: Vec<f32> = Vec::try_from(crop.contiguous().view([-1])).unwrap();
        assert_eq!(got, vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]);
    }

    #[test]
    fn letterbox_input_mirrors_the_image_into_the_padding() {
        // A grey 8×4 image whose rows are 0, 1, 2, 3 (as 8-bit values × 60),
        // fitted into 8×8 with 2-pixel cells: 4 content rows from row 2.
        let rows: Vec<u8> = (0..4u8).flat_map(|r| [r * 60; 8]).collect();
        let pixels = Tensor::from_slice(&rows).view([4, 8, 1]);
        let x = preprocess_with(&pixels, 8, Resize::Letterbox, 4, Device::Cpu).unwrap();
        assert_eq!(x.size(), [3, 8, 8]);
        // Undo the normalisation of the red channel and read column 0.
        let red = (x.get(0) * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255.0;
        let column: Vec<f32> = Vec::try_from(red.select(1, 0).round()).unwrap();
        // Content rows 2..6 hold 0, 60, 120, 180; rows 1, 0 mirror rows 3, 4,
        // rows 6, 7 mirror rows 4, 3.
        assert_eq!(
            column,
            vec![120.0, 60.0, 0.0, 60.0, 120.0, 180.0, 120.0, 60.0]
        );
        // Stretch fills the square with the image instead.
        let s = preprocess_with(&pixels, 8, Resize::Stretch, 4, Device::Cpu).unwrap();
        assert!(s.equal(&preprocess(&pixels, 8, Device::Cpu).unwrap()));
        assert!(bool::try_from(s.ne_tensor(&x).any()).unwrap());
    }

    #[test]
    fn mirror_pad_wider_than_image() {
        // One row 0, 1, 2 padded by 5 on the left, in steps of 2 and 3: the
        // same as one mirror image after another.
        let x = Tensor::from_slice(&[0.0f32, 1.0, 2.0]).view([1, 1, 1, 3]);
        let out = mirror_pad(x, 0, 0, 5, 0);
        let got: Vec<f32> = Vec::try_from(out.view([-1])).unwrap();
        assert_eq!(got, vec![1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0]);
        // A single pixel is repeated.
        let one = Tensor::from_slice(&[7.0f32]).view([1, 1, 1, 1]);
        let out = mirror_pad(one, 1, 1, 2, 0);
        assert_eq!(out.size(), [1, 1, 3, 3]);
        assert!(bool::try_from(out.eq(7.0).all()).unwrap());
    }

    #[test]
    fn stretch_is_left_out_of_the_json() {
        let json = serde_json::to_string(&FeatureConfig::default()).unwrap();
        assert!(!json.contains("resize"), "{json}");
        let old: FeatureConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(old.resize, Resize::Stretch);
        let letterbox = FeatureConfig {
            resize: Resize::Letterbox,
            ..FeatureConfig::default()
        };
        let json = serde_json::to_string(&letterbox).unwrap();
        assert!(json.contains(r#""resize":"letterbox""#), "{json}");
    }
}
