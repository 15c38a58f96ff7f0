//! Anomaly maps: patch score grids upsampled to the image and blurred.

use tch::{Kind, Tensor};

/// Gaussian blur standard deviation at the model's input size, in pixels.
pub const BLUR_SIGMA_AT_INPUT: f64 = 4.0;

/// Blur standard deviation for an image of `width`×`height` pixels: σ = 4 at
/// the model input, scaled by the ratio of the image's longer side to the input.
pub fn blur_sigma(width: i64, height: i64, input_size: i64) -> f64 {
    BLUR_SIGMA_AT_INPUT * width.max(height) as f64 / input_size as f64
}

/// 1-D Gaussian kernel of standard deviation `sigma`, truncated at 4σ and summing to 1.
pub fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let radius = (4.0 * sigma).round().max(1.0) as i64;
    let w: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// Separable Gaussian blur of a 2-D map `[H, W]` with reflected borders.
pub fn gaussian_blur(map: &Tensor, sigma: f64) -> Tensor {
    if sigma <= 0.0 {
        return map.shallow_clone();
    }
    let (h, w) = map.size2().expect("map is [H, W]");
    let k = gaussian_kernel(sigma);
    let r = (k.len() / 2) as i64;
    let kernel = Tensor::from_slice(&k).to_device(map.device());
    let mut x = map.to_kind(Kind::Float).view([1, 1, h, w]);
    // Reflection needs a border narrower than the side; clamp to the side − 1 and
    // fall back to replication for maps narrower than the kernel.
    let pad_w = r.min(w - 1);
    let pad_h = r.min(h - 1);
    x = if pad_w == r {
        x.reflection_pad2d([r, r, 0, 0])
    } else {
        x.replication_pad2d([r, r, 0, 0])
    };
    x = x.conv2d(
        &kernel.view([1, 1, 1, -1]),
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        1,
    );
    x = if pad_h == r {
        x.reflection_pad2d([0, 0, r, r])
    } else {
        x.replication_pad2d([0, 0, r, r])
    };
    x = x.conv2d(
        &kernel.view([1, 1, -1, 1]),
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        1,
    );
    x.view([h, w])
}

/// Anomaly map `[height, width]` of a patch score grid `[gh, gw]`: bilinear
/// upsampling (`align_corners = false`) followed by a Gaussian blur.
pub fn anomaly_map(patch_scores: &Tensor, width: i64, height: i64, input_size: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (gh, gw) = patch_scores.size2().expect("patch scores are [gh, gw]");
    let up = patch_scores
        .to_kind(Kind::Float)
        .view([1, 1, gh, gw])
        .upsample_bilinear2d([height, width], false, None, None)
        .view([height, width]);
    gaussian_blur(&up, blur_sigma(width, height, input_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sums_to_one_and_is_symmetric() {
        let k = gaussian_kernel(4.0);
        assert_eq!(k.len(), 33);
        let sum: f32 = k.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert_eq!(k[0], k[32]);
        // Ratio between the centre and one σ away is e^{-1/2}.
        assert!((k[20] / k[16] - (-0.5f32).exp()).abs() < 1e-6);
    }

    #[test]
    fn upsampling_known_values() {
        // A 2×2 grid upsampled to 4×4 with align_corners = false: the first row
        // is 0, 0.25, 0.75, 1 times the step between the two columns.
        let grid = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 1.0]).view([2, 2]);
        let up = grid
            .view([1, 1, 2, 2])
            .upsample_bilinear2d([4, 4], false, None, None)
            .view([4, 4]);
        let row: Vec<f32> = Vec::try_from(up.get(0)).unwrap();
        assert_eq!(row, vec![0.0, 0.25, 0.75, 1.0]);
        // Without blur (σ → 0 via a huge input size), the map equals the upsampling.
        let m = anomaly_map(&grid, 4, 4, 1_000_000);
        let row: Vec<f32> = Vec::try_from(m.get(0)).unwrap();
        for (a, b) in row.iter().zip([0.0, 0.25, 0.75, 1.0]) {
            assert!((a - b).abs() < 1e-3, "row {row:?}");
        }
    }

    #[test]
    fn blur_keeps_mass_and_spreads_a_peak() {
        let m = Tensor::zeros([41, 41], (Kind::Float, tch::Device::Cpu));
        let _ = m.get(20).get(20).fill_(1.0);
        let b = gaussian_blur(&m, 2.0);
        let total = f32::try_from(b.sum(Kind::Float)).unwrap();
        assert!((total - 1.0).abs() < 1e-4, "mass {total}");
        let centre = f32::try_from(b.get(20).get(20)).unwrap();
        // Peak of a 2-D Gaussian with σ = 2: 1 / (2π σ²).
        assert!(
            (centre - 1.0 / (2.0 * std::f32::consts::PI * 4.0)).abs() < 1e-3,
            "peak {centre}"
        );
        assert_eq!(blur_sigma(448, 224, 224), 8.0);
    }
}
