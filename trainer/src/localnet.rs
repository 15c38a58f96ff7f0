//! Local-Net: an adaptor and a discriminator applied to each patch feature.

use tch::nn::{self, Module};
use tch::Tensor;

/// Negative slope of every LeakyReLU in Local-Net.
const LEAKY_SLOPE: f64 = 0.2;
/// Widths of the discriminator's two hidden layers.
const HIDDEN: [i64; 2] = [1024, 128];

fn leaky_relu(x: Tensor) -> Tensor {
    x.maximum(&(&x * LEAKY_SLOPE))
}

/// Adaptor Linear(D, D) + LeakyReLU, then discriminator
/// Linear(D, 1024) + LeakyReLU, Linear(1024, 128) + LeakyReLU, Linear(128, 1).
#[derive(Debug)]
pub struct LocalNet {
    adaptor: nn::Linear,
    disc1: nn::Linear,
    disc2: nn::Linear,
    disc3: nn::Linear,
}

impl LocalNet {
    pub fn new(p: &nn::Path, feature_size: i64) -> Self {
        let d = feature_size;
        LocalNet {
            adaptor: nn::linear(p / "adaptor", d, d, Default::default()),
            disc1: nn::linear(p / "disc1", d, HIDDEN[0], Default::default()),
            disc2: nn::linear(p / "disc2", HIDDEN[0], HIDDEN[1], Default::default()),
            disc3: nn::linear(p / "disc3", HIDDEN[1], 1, Default::default()),
        }
    }

    /// Sets the adaptor to the identity map (weight I, bias 0), so that at the
    /// start the memory bank and the mutual pairs live in the backbone's own
    /// feature space instead of a random projection of it.
    pub fn init_adaptor_identity(&mut self) {
        let _guard = tch::no_grad_guard();
        let d = self.adaptor.ws.size()[0];
        self.adaptor.ws.copy_(&Tensor::eye(
            d,
            (tch::Kind::Float, self.adaptor.ws.device()),
        ));
        if let Some(b) = &mut self.adaptor.bs {
            let _ = b.zero_();
        }
    }

    /// Adaptor features `[n, D]`: the space of the memory bank and of the mutual pairs.
    pub fn adapt(&self, features: &Tensor) -> Tensor {
        leaky_relu(self.adaptor.forward(features))
    }

    /// Anomaly logits `[n]` of adaptor features; the patch score is their sigmoid.
    pub fn discriminate(&self, adapted: &Tensor) -> Tensor {
        let x = leaky_relu(self.disc1.forward(adapted));
        let x = leaky_relu(self.disc2.forward(&x));
        self.disc3.forward(&x).squeeze_dim(-1)
    }

    /// Patch scores in (0, 1) of patch features `[n, D]`, computed in blocks without gradients.
    pub fn score(&self, features: &Tensor) -> Tensor {
        self.logits(features).sigmoid()
    }

    /// Anomaly logits `[n]` of patch features `[n, D]`, computed in blocks without gradients.
    pub fn logits(&self, features: &Tensor) -> Tensor {
        self.blocked(features, &[0], |x| self.discriminate(&self.adapt(x)))
    }

    /// Adaptor features `[n, D]` of patch features `[n, D]`, computed in blocks without gradients.
    pub fn adapt_blocked(&self, features: &Tensor) -> Tensor {
        let d = features.size().get(1).copied().unwrap_or(0);
        self.blocked(features, &[0, d], |x| self.adapt(x))
    }

    /// Applies `f` to row blocks of `features` under `no_grad` and joins the
    /// results; `empty` is the shape returned for no rows.
    fn blocked(&self, features: &Tensor, empty: &[i64], f: impl Fn(&Tensor) -> Tensor) -> Tensor {
        const BLOCK: i64 = 16384;
        let _guard = tch::no_grad_guard();
        let n = features.size()[0];
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let len = BLOCK.min(n - start);
            out.push(f(&features.narrow(0, start, len)));
            start += len;
        }
        if out.is_empty() {
            return Tensor::zeros(empty, (tch::Kind::Float, features.device()));
        }
        Tensor::cat(&out, 0)
    }
}
