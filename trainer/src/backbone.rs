//! The frozen backbone: a DINO-family Vision Transformer (DINO v1 and
//! DINOv2) or the EfficientNet-Lite0 CNN ([`crate::efficientnet`]), written
//! with tch.
//!
//! The weights are read from safetensors under the official key names of
//! facebookresearch/dino and facebookresearch/dinov2 (`cls_token`,
//! `pos_embed`, `patch_embed.proj.*`, `blocks.N.*`, `norm.*`). The
//! architecture (patch size, width, depth, LayerScale, register tokens) is
//! read off the tensor shapes, so one loader serves ViT-S/8, S/16, B/8, B/16
//! and the DINOv2 S/14, B/14 and L/14 checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::efficientnet::{self, EfficientNetLite};

/// LayerNorm epsilon of both DINO v1 and DINOv2.
const LAYER_NORM_EPS: f64 = 1e-6;
/// Width of one attention head in every DINO and DINOv2 model.
const HEAD_DIM: i64 = 64;

/// Network family of a backbone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// DINO v1 or DINOv2 Vision Transformer.
    #[default]
    Backbone,
    /// EfficientNet-Lite0, ImageNet-trained.
    EfficientNetLite,
}

/// Architecture of a backbone, derived from the shapes in its checkpoint.
///
/// The fields describe a ViT. For a CNN, `patch_size` is the network's total
/// stride (input sides must be multiples of it), `embed_dim` the width of the
/// last block, `depth` the number of blocks, and the other fields are zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Network family; model files written before the CNN existed have none and are ViTs.
    #[serde(default)]
    pub family: Family,
    /// Side of one square patch, in pixels.
    pub patch_size: i64,
    /// Token width.
    pub embed_dim: i64,
    /// Number of transformer blocks.
    pub depth: i64,
    /// Number of attention heads.
    pub num_heads: i64,
    /// Whether the blocks carry LayerScale (`ls1.gamma`, `ls2.gamma`): DINOv2 does, DINO v1 not.
    pub layer_scale: bool,
    /// Register tokens between CLS and the patch tokens (DINOv2 "reg" models).
    pub num_registers: i64,
    /// Side of the position-embedding grid the checkpoint was trained with.
    pub pos_grid: i64,
}

impl VitConfig {
    /// Short human-readable name, for example `dinov2 vit-s/14`.
    pub fn name(&self) -> String {
        if self.family == Family::EfficientNetLite {
            return "efficientnet-lite0".to_string();
        }
        let size = match self.embed_dim {
            384 => "s",
            768 => "b",
            1024 => "l",
            1536 => "g",
            _ => "custom",
        };
        let family = if self.layer_scale { "dinov2" } else { "dino" };
        let reg = if self.num_registers > 0 { "-reg" } else { "" };
        format!("{family} vit-{size}/{}{reg}", self.patch_size)
    }
}

/// Identity of a backbone weights file, stored in every model file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackboneId {
    pub name: String,
    pub sha256: String,
    pub config: VitConfig,
}

struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    ls1: Option<Tensor>,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    ls2: Option<Tensor>,
    num_heads: i64,
}

impl Block {
    fn new(p: nn::Path, cfg: &VitConfig) -> Self {
        let d = cfg.embed_dim;
        let ln = nn::LayerNormConfig {
            eps: LAYER_NORM_EPS,
            ..Default::default()
        };
        let hidden = 4 * d;
        let ls = |name: &str| {
            cfg.layer_scale
                .then(|| (&p / name).var("gamma", &[d], nn::Init::Const(1.0)))
        };
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            qkv: nn::linear(&p / "attn" / "qkv", d, 3 * d, Default::default()),
            proj: nn::linear(&p / "attn" / "proj", d, d, Default::default()),
            ls1: ls("ls1"),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            fc1: nn::linear(&p / "mlp" / "fc1", d, hidden, Default::default()),
            fc2: nn::linear(&p / "mlp" / "fc2", hidden, d, Default::default()),
            ls2: ls("ls2"),
            num_heads: cfg.num_heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().expect("tokens are [batch, tokens, width]");
        let h = self.num_heads;

        let qkv = self
            .qkv
            .forward(&self.norm1.forward(x))
            .reshape([b, n, 3, h, d / h])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let attn = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let mut y = self.proj.forward(&attn.transpose(1, 2).reshape([b, n, d]));
        if let Some(g) = &self.ls1 {
            y *= g;
        }
        let x = x + y;

        let mut y = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)).gelu("none"));
        if let Some(g) = &self.ls2 {
            y *= g;
        }
        x + y
    }
}

/// Tokens after one block: for a ViT with the final LayerNorm applied, for
/// a CNN the block's feature map.
pub struct BlockTokens {
    /// 1-based index of the block.
    pub block: usize,
    /// CLS token, `[batch, width]`; a CNN has none.
    pub cls: Option<Tensor>,
    /// Patch tokens as a grid, `[batch, grid_h, grid_w, width]`.
    pub patches: Tensor,
}

/// A frozen backbone: a DINO-family ViT or EfficientNet-Lite0.
pub struct Backbone {
    vs: nn::VarStore,
    cfg: VitConfig,
    id: BackboneId,
    path: PathBuf,
    net: Net,
}

enum Net {
    Backbone(VitNet),
    Cnn(EfficientNetLite),
}

struct VitNet {
    cfg: VitConfig,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    register_tokens: Option<Tensor>,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
}

// SAFETY: after `load` the weights are frozen and never written again; every
// method only reads them, under `no_grad`. libtorch allows concurrent reads of
// one tensor from several threads, so sharing a `Backbone` between threads is sound.
unsafe impl Sync for Backbone {}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish()
    }
}

/// Returns the SHA-256 of a file as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

fn infer_vit_config(path: &Path, st: &safetensors::SafeTensors) -> Result<VitConfig> {
    let shape = |name: &str| -> Result<Vec<usize>> {
        Ok(st
            .tensor(name)
            .with_context(|| {
                format!(
                    "{} has no tensor `{name}`: expected a DINO or DINOv2 checkpoint under the \
                     official key names (see README, \"Bring your own backbone\")",
                    path.display()
                )
            })?
            .shape()
            .to_vec())
    };
    let pe = shape("patch_embed.proj.weight")?;
    if pe.len() != 4 || pe[1] != 3 || pe[2] != pe[3] {
        bail!(
            "{}: patch_embed.proj.weight has shape {pe:?}, expected [width, 3, p, p]",
            path.display()
        );
    }
    let embed_dim = pe[0] as i64;
    let depth = (0..)
        .take_while(|i| st.tensor(&format!("blocks.{i}.norm1.weight")).is_ok())
        .count() as i64;
    if depth == 0 {
        bail!(
            "{} has no `blocks.0.*` tensors; it is not a DINO ViT checkpoint",
            path.display()
        );
    }
    let num_registers = match st.tensor("register_tokens") {
        Ok(t) => t.shape()[1] as i64,
        Err(_) => 0,
    };
    let pos = shape("pos_embed")?;
    let grid_tokens = pos[1] as i64 - 1;
    let pos_grid = (grid_tokens as f64).sqrt().round() as i64;
    if pos_grid * pos_grid != grid_tokens {
        bail!(
            "{}: pos_embed has {grid_tokens} grid entries, which is not a square grid",
            path.display()
        );
    }
    if embed_dim % HEAD_DIM != 0 {
        bail!(
            "{}: width {embed_dim} is not a multiple of the head width {HEAD_DIM}",
            path.display()
        );
    }
    Ok(VitConfig {
        family: Family::Backbone,
        patch_size: pe[2] as i64,
        embed_dim,
        depth,
        num_heads: embed_dim / HEAD_DIM,
        layer_scale: st.tensor("blocks.0.ls1.gamma").is_ok(),
        num_registers,
        pos_grid,
    })
}

impl VitNet {
    fn new(root: &nn::Path, cfg: &VitConfig) -> Self {
        let d = cfg.embed_dim;
        let conv = nn::ConvConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let patch_embed = nn::conv2d(root / "patch_embed" / "proj", 3, d, cfg.patch_size, conv);
        let cls_token = root.var("cls_token", &[1, 1, d], nn::Init::Const(0.0));
        let register_tokens = (cfg.num_registers > 0).then(|| {
            root.var(
                "register_tokens",
                &[1, cfg.num_registers, d],
                nn::Init::Const(0.0),
            )
        });
        let pos_embed = root.var(
            "pos_embed",
            &[1, 1 + cfg.pos_grid * cfg.pos_grid, d],
            nn::Init::Const(0.0),
        );
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(root / "blocks" / i, cfg))
            .collect();
        let ln = nn::LayerNormConfig {
            eps: LAYER_NORM_EPS,
            ..Default::default()
        };
        let norm = nn::layer_norm(root / "norm", vec![d], ln);
        VitNet {
            cfg: cfg.clone(),
            patch_embed,
            cls_token,
            register_tokens,
            pos_embed,
            blocks,
            norm,
        }
    }

    /// Returns the position embedding resized to a `gh`×`gw` grid.
    ///
    /// Like DINOv2, the grid part is resized with bicubic interpolation
    /// (`align_corners = false`) and the CLS entry is kept as it is. DINO v1
    /// passes a scale factor (with a +0.1 offset) instead of the target size;
    /// both give the same grid size, and the values differ only slightly.
    fn pos_embed_for(&self, gh: i64, gw: i64) -> Tensor {
        let g = self.cfg.pos_grid;
        if gh == g && gw == g {
            return self.pos_embed.shallow_clone();
        }
        let d = self.cfg.embed_dim;
        let cls = self.pos_embed.narrow(1, 0, 1);
        let grid = self
            .pos_embed
            .narrow(1, 1, g * g)
            .reshape([1, g, g, d])
            .permute([0, 3, 1, 2]);
        let grid = grid.upsample_bicubic2d([gh, gw], false, None, None);
        let grid = grid.permute([0, 2, 3, 1]).reshape([1, gh * gw, d]);
        Tensor::cat(&[cls, grid], 1)
    }

    fn forward_blocks(&self, images: &Tensor, blocks: &[usize]) -> Result<Vec<BlockTokens>> {
        let (b, _, h, w) = images.size4()?;
        let p = self.cfg.patch_size;
        let last = *blocks.iter().max().context("no block requested")?;
        let (gh, gw) = (h / p, w / p);
        let d = self.cfg.embed_dim;
        let r = self.cfg.num_registers;

        let _guard = tch::no_grad_guard();
        let x = self
            .patch_embed
            .forward(images)
            .flatten(2, 3)
            .transpose(1, 2);
        let x = Tensor::cat(&[self.cls_token.expand([b, 1, d], false), x], 1);
        let mut x = x + self.pos_embed_for(gh, gw);
        if let Some(reg) = &self.register_tokens {
            // DINOv2 inserts register tokens after adding the position embedding.
            x = Tensor::cat(
                &[
                    x.narrow(1, 0, 1),
                    reg.expand([b, r, d], false),
                    x.narrow(1, 1, gh * gw),
                ],
                1,
            );
        }

        let mut out = Vec::with_capacity(blocks.len());
        for (i, block) in self.blocks.iter().take(last).enumerate() {
            x = block.forward(&x);
            if blocks.contains(&(i + 1)) {
                let normed = self.norm.forward(&x);
                out.push(BlockTokens {
                    block: i + 1,
                    cls: Some(normed.select(1, 0)),
                    patches: normed.narrow(1, 1 + r, gh * gw).reshape([b, gh, gw, d]),
                });
            }
        }
        out.sort_by_key(|t| blocks.iter().position(|&q| q == t.block));
        Ok(out)
    }
}

impl Backbone {
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read backbone weights {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| {
            format!(
                "{} is not a valid safetensors file (truncated or another format?)",
                path.display()
            )
        })?;
        let sha256 = sha256_file(path)?;
        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let (cfg, net) = if efficientnet::is_efficientnet(&st) {
            let cnn = EfficientNetLite::new(&root, &st, &path.display().to_string())?;
            let cfg = VitConfig {
                family: Family::EfficientNetLite,
                patch_size: *cnn.strides().last().expect("blocks"),
                embed_dim: *cnn.widths().last().expect("blocks"),
                depth: cnn.widths().len() as i64,
                num_heads: 0,
                layer_scale: false,
                num_registers: 0,
                pos_grid: 0,
            };
            (cfg, Net::Cnn(cnn))
        } else {
            let cfg = infer_vit_config(path, &st)?;
            let net = VitNet::new(&root, &cfg);
            (cfg, Net::Backbone(net))
        };
        drop(st);
        drop(bytes);
        load_partial(&mut vs, path)?;
        vs.freeze();
        let id = BackboneId {
            name: cfg.name(),
            sha256,
            config: cfg.clone(),
        };
        Ok(Backbone {
            vs,
            cfg,
            id,
            path: path.to_path_buf(),
            net,
        })
    }

    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    pub fn id(&self) -> &BackboneId {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Returns whether the backbone has a CLS token (a ViT does, a CNN does not).
    pub fn has_cls(&self) -> bool {
        matches!(self.net, Net::Backbone(_))
    }

    /// Width of the features after 1-based block `block`.
    pub fn block_width(&self, block: usize) -> i64 {
        match &self.net {
            Net::Backbone(_) => self.cfg.embed_dim,
            Net::Cnn(cnn) => cnn.widths()[block - 1],
        }
    }

    /// Stride of the feature grid after 1-based block `block`, in input pixels.
    pub fn block_stride(&self, block: usize) -> i64 {
        match &self.net {
            Net::Backbone(_) => self.cfg.patch_size,
            Net::Cnn(cnn) => cnn.strides()[block - 1],
        }
    }

    /// Runs the backbone on normalised images `[batch, 3, H, W]` up to the
    /// last requested block and returns the tokens after each requested block
    /// (1-based indices), in the order requested. H and W must be multiples
    /// of the patch size of a ViT, or of the total stride of a CNN.
    pub fn forward_blocks(&self, images: &Tensor, blocks: &[usize]) -> Result<Vec<BlockTokens>> {
        let (b, c, h, w) = images
            .size4()
            .context("backbone input must be [batch, 3, H, W]")?;
        let p = self.cfg.patch_size;
        if c != 3 || h % p != 0 || w % p != 0 {
            bail!("backbone input has shape [{b}, {c}, {h}, {w}]; expected 3 channels and H, W multiples of {p}");
        }
        let last = *blocks.iter().max().context("no block requested")?;
        if blocks.contains(&0) || last > self.cfg.depth as usize {
            bail!(
                "requested blocks {blocks:?}, but this backbone has blocks 1 to {}",
                self.cfg.depth
            );
        }
        match &self.net {
            Net::Backbone(vit) => vit.forward_blocks(images, blocks),
            Net::Cnn(cnn) => Ok(cnn
                .forward_blocks(images, blocks)?
                .into_iter()
                .zip(blocks)
                .map(|(patches, &block)| BlockTokens {
                    block,
                    cls: None,
                    patches,
                })
                .collect()),
        }
    }

    /// Runs all blocks of a ViT and returns the final LayerNorm output
    /// `[batch, 1 + R + N, width]`, the same tensor the reference
    /// implementations return. Fails for a CNN.
    pub fn forward_final(&self, images: &Tensor) -> Result<Tensor> {
        let tokens = self.forward_blocks(images, &[self.cfg.depth as usize])?;
        let t = &tokens[0];
        let cls = t
            .cls
            .as_ref()
            .context("forward_final needs a ViT backbone with a CLS token")?;
        let (b, gh, gw, d) = t.patches.size4()?;
        Ok(Tensor::cat(
            &[cls.unsqueeze(1), t.patches.reshape([b, gh * gw, d])],
            1,
        ))
    }
}

/// Loads every variable of `vs` from `path` and fails on any missing tensor
/// or shape mismatch, naming it.
fn load_partial(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    let named = Tensor::read_safetensors(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let named: std::collections::HashMap<_, _> = named.into_iter().collect();
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        let src = named
            .get(&name)
            .with_context(|| format!("{} has no tensor `{name}`", path.display()))?;
        if src.size() != var.size() {
            bail!(
                "{}: `{name}` has shape {:?}, expected {:?}",
                path.display(),
                src.size(),
                var.size()
            );
        }
        var.copy_(&src.to_kind(Kind::Float));
    }
    Ok(())
}
