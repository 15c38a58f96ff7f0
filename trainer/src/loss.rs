//! Pseudo-labels and the two FUN-AD losses.

use tch::{Kind, Reduction, Tensor};

/// Pseudo-labels of one batch.
pub struct PseudoLabels {
    /// 1.0 for pseudo-anomalous features, 0.0 for pseudo-normal ones.
    pub labels: Tensor,
    /// True where a feature is labelled anomalous but ambiguous, and gets perturbed.
    pub ambiguous: Tensor,
    /// Min-max normalised nearest-neighbour distances.
    pub normalised: Tensor,
}

/// Min-max normalises `x` to [0, 1]; a constant input maps to zeros.
pub fn min_max(x: &Tensor) -> Tensor {
    let lo = x.min();
    let range = x.max() - &lo;
    let range = range.clamp_min(f32::MIN_POSITIVE as f64);
    (x - lo) / range
}

/// Labels features from their nearest-neighbour distances to the memory bank.
///
/// Distances are min-max normalised over the batch. Above `tau` a feature is
/// labelled anomalous; between `tau` and `tau_ambiguous` it is also marked
/// ambiguous.
pub fn pseudo_labels(distances: &Tensor, tau: f64, tau_ambiguous: f64) -> PseudoLabels {
    let normalised = min_max(distances);
    let labels = normalised.gt(tau).to_kind(Kind::Float);
    let ambiguous = normalised
        .gt(tau)
        .logical_and(&normalised.lt(tau_ambiguous));
    PseudoLabels {
        labels,
        ambiguous,
        normalised,
    }
}

/// Balanced binary cross-entropy on logits: the mean over pseudo-anomalies
/// plus the mean over pseudo-normals. A class with no member adds nothing.
pub fn balanced_bce(logits: &Tensor, labels: &Tensor) -> Tensor {
    let per =
        logits.binary_cross_entropy_with_logits::<Tensor>(labels, None, None, Reduction::None);
    let pos = labels.gt(0.5);
    let neg = pos.logical_not();
    let mut total = Tensor::zeros([], (Kind::Float, logits.device()));
    for mask in [pos, neg] {
        let count = i64::try_from(mask.sum(Kind::Int64)).unwrap_or(0);
        if count > 0 {
            total = total + per.masked_select(&mask).mean(Kind::Float);
        }
    }
    total
}

/// Mutual-smoothness L1 loss: for each mutual pair (i, j) with scores p_i and
/// p_j and mean m, 0.5·(|p_i − m| + |p_j − m|), averaged over pairs. Zero
/// when there is no pair.
pub fn mutual_smoothness(scores: &Tensor, pairs: &Tensor) -> Tensor {
    if pairs.size()[0] == 0 {
        return Tensor::zeros([], (Kind::Float, scores.device()));
    }
    let pi = scores.index_select(0, &pairs.select(1, 0));
    let pj = scores.index_select(0, &pairs.select(1, 1));
    let m = (&pi + &pj) * 0.5;
    (((pi - &m).abs() + (pj - &m).abs()) * 0.5).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> Vec<f32> {
        Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }

    #[test]
    fn pseudo_labels_thresholds() {
        // Normalised: 0, 0.25, 0.6, 0.95, 1.0.
        let d = Tensor::from_slice(&[2.0f32, 3.0, 4.4, 5.8, 6.0]);
        let p = pseudo_labels(&d, 0.5, 0.9);
        assert_eq!(v(&p.labels), vec![0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(v(&p.ambiguous), vec![0.0, 0.0, 1.0, 0.0, 0.0]);
        let n = v(&p.normalised);
        assert!((n[2] - 0.6).abs() < 1e-6, "normalised {n:?}");
    }

    #[test]
    fn balanced_bce_known_value() {
        // logits 0 give BCE ln 2 for either label; one positive, three negatives.
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]);
        let labels = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0]);
        let l = f32::try_from(balanced_bce(&logits, &labels)).unwrap();
        assert!((l - 2.0 * std::f32::consts::LN_2).abs() < 1e-6, "loss {l}");
        // No positives: only the normal term, ln 2.
        let l = f32::try_from(balanced_bce(
            &logits,
            &Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)),
        ))
        .unwrap();
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6, "loss {l}");
        // Confident, correct logits on both classes cost almost nothing.
        let logits = Tensor::from_slice(&[20.0f32, -20.0]);
        let labels = Tensor::from_slice(&[1.0f32, 0.0]);
        assert!(f32::try_from(balanced_bce(&logits, &labels)).unwrap() < 1e-6);
    }

    #[test]
    fn mutual_smoothness_known_value() {
        let scores = Tensor::from_slice(&[0.2f32, 0.6, 0.9, 0.9]);
        let pairs = Tensor::from_slice(&[0i64, 1, 2, 3]).view([2, 2]);
        // Pair (0, 1): 0.5·(0.2 + 0.2) = 0.2; pair (2, 3): 0. Mean 0.1.
        let l = f32::try_from(mutual_smoothness(&scores, &pairs)).unwrap();
        assert!((l - 0.1).abs() < 1e-6, "loss {l}");
        let none = Tensor::zeros([0, 2], (Kind::Int64, tch::Device::Cpu));
        assert_eq!(
            f32::try_from(mutual_smoothness(&scores, &none)).unwrap(),
            0.0
        );
    }
}
