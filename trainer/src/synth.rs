//! Synthetic anomalies for the FUN-AD* variant: Perlin-noise masks that
//! paste the texture of another training image into an image.

use noise::{NoiseFn, Perlin};
use rand::Rng;
use tch::{Kind, Tensor};

/// Perlin noise values above this threshold form the defect mask.
const MASK_THRESHOLD: f64 = 0.5;
/// Range of the blending weight of the original pixels inside the mask.
const MAX_KEEP: f64 = 0.8;

/// Binary Perlin mask `[h, w]` at a random scale of 2^0 to 2^5 cells per side.
/// Draws again (up to 16 times) until the mask is not empty.
pub fn perlin_mask(h: i64, w: i64, rng: &mut impl Rng) -> Tensor {
    for _ in 0..16 {
        let perlin = Perlin::new(rng.gen());
        let sx = 2f64.powi(rng.gen_range(0..6)) / w as f64;
        let sy = 2f64.powi(rng.gen_range(0..6)) / h as f64;
        let (ox, oy): (f64, f64) = (rng.gen_range(0.0..1000.0), rng.gen_range(0.0..1000.0));
        let mut mask = Vec::with_capacity((h * w) as usize);
        for y in 0..h {
            for x in 0..w {
                let v = perlin.get([ox + x as f64 * sx, oy + y as f64 * sy]);
                mask.push(if v > MASK_THRESHOLD { 1.0f32 } else { 0.0 });
            }
        }
        if mask.iter().any(|&m| m > 0.0) {
            return Tensor::from_slice(&mask).view([h, w]);
        }
    }
    Tensor::zeros([h, w], (Kind::Float, tch::Device::Cpu))
}

/// Pastes `texture` (8-bit `[h', w', c']`) into `image` (8-bit `[h, w, c]`)
/// through a Perlin mask, keeping a random share of the original pixels.
/// Returns the new 8-bit image with `image`'s channel count.
pub fn synthesize(image: &Tensor, texture: &Tensor, rng: &mut impl Rng) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (h, w, c) = image.size3().expect("image is [H, W, C]");
    let img = image.to_kind(Kind::Float);
    let tex = texture
        .to_kind(Kind::Float)
        .permute([2, 0, 1])
        .unsqueeze(0)
        .upsample_bilinear2d([h, w], false, None, None)
        .squeeze_dim(0)
        .permute([1, 2, 0]);
    let tex = match (tex.size()[2], c) {
        (a, b) if a == b => tex,
        (1, _) => tex.expand([h, w, c], false),
        (_, 1) => tex.mean_dim(2, true, Kind::Float),
        _ => tex.narrow(2, 0, c),
    };
    let mask = perlin_mask(h, w, rng).unsqueeze(2);
    let keep = rng.gen_range(0.0..MAX_KEEP);
    let blended = &img * keep + tex * (1.0 - keep);
    let inverse = mask.ones_like() - &mask;
    (&img * inverse + blended * mask)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn synthesized_image_changes_only_inside_mask() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let image = Tensor::full([64, 48, 1], 100, (Kind::Uint8, tch::Device::Cpu));
        let texture = Tensor::full([30, 30, 3], 250, (Kind::Uint8, tch::Device::Cpu));
        let out = synthesize(&image, &texture, &mut rng);
        assert_eq!(out.size(), vec![64, 48, 1]);
        let changed = out.ne_tensor(&image).sum(Kind::Int64);
        let changed = i64::try_from(changed).unwrap();
        assert!(changed > 0, "no pixel changed");
        assert!(changed < 64 * 48, "every pixel changed");
        // Changed pixels move towards the texture value.
        let max = i64::try_from(out.max().to_kind(Kind::Int64)).unwrap();
        assert!(max > 100, "max {max}: no pixel moved towards the texture");
        assert!(max <= 250, "max {max}: a pixel went past the texture value");
    }
}
