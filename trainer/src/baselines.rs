//! One-class memory-bank baselines on the same patch features as FUN-AD:
//! greedy (k-center) coreset subsampling as in PatchCore (Roth et al., 2022),
//! and the per-position local-outlier-factor filter of SoftPatch (Jiang et
//! al., 2022) that drops suspicious training patches before subsampling.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Patch positions whose `[images, images]` distance matrices are computed at once.
const LOF_POSITION_BLOCK: i64 = 16;

/// Gaussian random projection `[d, k]` with entries of variance 1/k, seeded,
/// so that squared distances are preserved in expectation
/// (Johnson–Lindenstrauss).
pub fn random_projection(d: i64, k: i64, seed: u64, device: Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = 1.0 / (k as f64).sqrt();
    let values: Vec<f32> = (0..d * k)
        .map(|_| {
            // Box–Muller transform of two uniform draws in (0, 1].
            let u1: f64 = 1.0 - rng.gen::<f64>();
            let u2: f64 = rng.gen();
            let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (normal * scale) as f32
        })
        .collect();
    Tensor::from_slice(&values).view([d, k]).to_device(device)
}

/// Greedy k-center coreset: starting from row `first`, repeatedly adds the row
/// of `points` `[n, d]` farthest (in L2) from all rows chosen so far. Returns
/// the `count` chosen row indices in the order they were chosen.
///
/// The loop runs on the CPU in plain Rust: one pass over the points per chosen
/// row, updating each point's distance to its nearest chosen row and the
/// running maximum together. Ties go to the lowest index.
pub fn greedy_coreset(points: &Tensor, count: usize, first: i64) -> Result<Vec<i64>> {
    let (n, d) = points.size2()?;
    if count == 0 || count as i64 > n {
        bail!("coreset size {count} is invalid: use 1 to {n}, the number of points");
    }
    if !(0..n).contains(&first) {
        bail!("first coreset point {first} is out of range 0..{n}");
    }
    let flat: Vec<f32> = Vec::try_from(
        points
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]),
    )?;
    let d = d as usize;
    let rows = flat.chunks_exact(d.max(1));
    let mut nearest = vec![f32::INFINITY; n as usize];
    let mut chosen = Vec::with_capacity(count);
    let mut next = first as usize;
    while chosen.len() < count {
        chosen.push(next as i64);
        let centre = &flat[next * d..(next + 1) * d];
        let (mut farthest, mut farthest_distance) = (0usize, f32::NEG_INFINITY);
        for (i, (row, best)) in rows.clone().zip(nearest.iter_mut()).enumerate() {
            let distance = squared_distance(row, centre);
            if distance < *best {
                *best = distance;
            }
            if *best > farthest_distance {
                farthest_distance = *best;
                farthest = i;
            }
        }
        next = farthest;
    }
    Ok(chosen)
}

/// Squared L2 distance, summed in 8 independent lanes so that the compiler
/// can vectorise it (a single running f32 sum must stay sequential).
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for j in 0..8 {
            let t = x[j] - y[j];
            lanes[j] += t * t;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Memory bank of `count` rows of `features` `[n, d]`, chosen by the greedy
/// coreset on a random projection to `projection_dim` dimensions (no
/// projection when `projection_dim` is 0 or not below `d`). The first point
/// is drawn with `seed`.
pub fn coreset_bank(
    features: &Tensor,
    count: usize,
    projection_dim: i64,
    seed: u64,
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let (n, d) = features.size2()?;
    let count = count.clamp(1, n.max(1) as usize);
    let projected = if projection_dim > 0 && projection_dim < d {
        features.mm(&random_projection(
            d,
            projection_dim,
            seed,
            features.device(),
        ))
    } else {
        features.shallow_clone()
    };
    let first = ChaCha8Rng::seed_from_u64(seed).gen_range(0..n);
    let rows = greedy_coreset(&projected, count, first)?;
    Ok(features.index_select(0, &Tensor::from_slice(&rows).to_device(features.device())))
}

/// Computes the weights of PatchCore's image-score reweighting (Roth et
/// al., 2022).
///
/// Each row of `queries` `[n, d]` is one image's patch with the largest
/// distance s* to `bank` `[m, d]`, and m* is its nearest bank row. The image
/// score is w · s*, with w = 1 − exp(s*) / Σ exp(‖q − m‖) over the
/// `neighbours` bank rows nearest to m*, m* included. In a dense part of the
/// bank w falls towards 1 − 1/`neighbours`. For a rare normal feature, far
/// from the rest of the bank, w approaches 1. Returns w `[n]` in float64,
/// because w differs from 1 by less than float32 resolves once the other
/// neighbours are about 17 units farther from q than m* is.
pub fn reweighting_weights(queries: &Tensor, bank: &Tensor, neighbours: i64) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let (m, d) = bank.size2()?;
    let (_, dq) = queries.size2()?;
    if dq != d {
        bail!("reweighting queries have {dq} values a patch, the bank {d}: use features of one backbone");
    }
    if neighbours < 2 || neighbours > m {
        bail!(
            "PatchCore reweighting neighbour count {neighbours} is invalid: use 2 to {m}, the bank \
             size (with 1, m* alone, every weight is 0)"
        );
    }
    let queries = queries.to_kind(Kind::Double);
    let bank = bank.to_kind(Kind::Double);
    let to_bank = Tensor::cdist(&queries, &bank, 2.0, None::<i64>);
    let (s_star, nearest) = to_bank.min_dim(1, false);
    let centres = bank.index_select(0, &nearest);
    let around = Tensor::cdist(&centres, &bank, 2.0, None::<i64>);
    let (_, hood) = around.topk(neighbours, 1, false, true);
    let excess = to_bank.gather(1, &hood, false) - s_star.unsqueeze(1);
    // exp(s*) / Σ exp(d) = 1 / Σ exp(d − s*), taken through logsumexp so that
    // large distances do not overflow.
    Ok(1.0 - (-excess.logsumexp([1].as_slice(), false)).exp())
}

/// Local outlier factor (Breunig et al., 2000) of every point within each group
/// of `points` `[groups, n, d]`, with `k` nearest neighbours and L2 distance.
/// Returns `[groups, n]`. The factor is about 1 inside a cluster and well above
/// 1 for outliers.
///
/// With k-distance(o) the distance from o to its k-th neighbour,
/// reach(p, o) = max(k-distance(o), d(p, o)), the local reachability density
/// lrd(p) = 1 / mean over p's neighbours o of reach(p, o), and
/// LOF(p) = mean over p's neighbours o of lrd(o) / lrd(p). Ties at the k-th
/// distance are broken by index, so exactly k neighbours count.
pub fn local_outlier_factor(points: &Tensor, k: i64) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let (groups, n, _) = points.size3()?;
    if k < 1 || k >= n {
        bail!("LOF neighbour count k = {k} is invalid: use 1 to {}", n - 1);
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < groups {
        let len = LOF_POSITION_BLOCK.min(groups - start);
        out.push(lof_block(
            &points.narrow(0, start, len).to_kind(Kind::Float),
            k,
        ));
        start += len;
    }
    Ok(Tensor::cat(&out, 0))
}

fn lof_block(x: &Tensor, k: i64) -> Tensor {
    let (g, n, _) = x.size3().expect("points are [groups, n, d]");
    let norms = x.square().sum_dim_intlist(2, true, Kind::Float);
    let squared =
        (&norms + norms.transpose(1, 2) - x.matmul(&x.transpose(1, 2)) * 2.0).clamp_min(0.0);
    // A point is not its own neighbour.
    let eye = Tensor::eye(n, (Kind::Bool, x.device())).unsqueeze(0);
    let distances = squared.sqrt().masked_fill(&eye, f64::INFINITY);
    let (neighbour_distances, neighbours) = distances.topk(k, 2, false, true);
    let k_distance = neighbour_distances.select(2, k - 1);
    let flat = neighbours.view([g, n * k]);
    let reach = neighbour_distances.maximum(&k_distance.gather(1, &flat, false).view([g, n, k]));
    // The small constant keeps the density of duplicate points (reach 0) finite.
    let lrd = (reach.mean_dim(2, false, Kind::Float) + 1e-10).reciprocal();
    lrd.gather(1, &flat, false)
        .view([g, n, k])
        .mean_dim(2, false, Kind::Float)
        / &lrd
}

/// Keep mask `[images, patches]` of the SoftPatch-style filter of training
/// patch features `[images, patches, d]`. At each patch position, every
/// image's patch gets its LOF among all images' patches at that position, and
/// the `discard` share of images with the highest LOF there is dropped.
pub fn softpatch_keep_mask(features: &Tensor, k: i64, discard: f64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&discard) {
        bail!("SoftPatch discard share {discard} is invalid: use a value from 0 to below 1");
    }
    let (n, _, _) = features.size3()?;
    let lof = local_outlier_factor(&features.transpose(0, 1), k)?;
    let dropped = (discard * n as f64).round() as i64;
    let mut keep = Tensor::ones(lof.size(), (Kind::Bool, lof.device()));
    if dropped > 0 {
        let (_, worst) = lof.topk(dropped, 1, true, false);
        keep = keep.scatter_value(1, &worst, 0);
    }
    Ok(keep.transpose(0, 1).contiguous())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).view([values.len() as i64, 1])
    }

    #[test]
    fn coreset_greedy_order() {
        // From 0: farthest is 10; then 4 (4 from 0, 6 from 10) beats 1.
        let points = column(&[0.0, 1.0, 10.0, 4.0]);
        assert_eq!(greedy_coreset(&points, 4, 0).unwrap(), vec![0, 2, 3, 1]);
        // From 4 (row 3): 10 is 6 away, 0 is 4 away, so 10 first, then 0.
        assert_eq!(greedy_coreset(&points, 3, 3).unwrap(), vec![3, 2, 0]);
    }

    #[test]
    fn coreset_two_dimensions() {
        // Points (0,0) (4,0) (0,1) (5,5) (2,0), start at (0,0). The next point
        // is the one with the largest squared distance to its nearest chosen
        // point: (5,5) at 50, then (4,0) at 16 (it is 26 from (5,5)), then
        // (2,0) at 4, and last (0,1) at 1.
        let pts = [0.0f32, 0.0, 4.0, 0.0, 0.0, 1.0, 5.0, 5.0, 2.0, 0.0];
        let points = Tensor::from_slice(&pts).view([5, 2]);
        assert_eq!(greedy_coreset(&points, 5, 0).unwrap(), vec![0, 3, 1, 4, 2]);
    }

    #[test]
    fn squared_distance_lanes_and_tail() {
        // 10 values: one chunk of 8 and a tail of 2. Differences 1..=10 give
        // the sum of squares 385.
        let a: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        let b = vec![0.0f32; 10];
        assert_eq!(squared_distance(&a, &b), 385.0);
    }

    #[test]
    fn coreset_rejects_bad_sizes() {
        let points = column(&[0.0, 1.0]);
        assert!(greedy_coreset(&points, 3, 0).is_err());
        assert!(greedy_coreset(&points, 0, 0).is_err());
        assert!(greedy_coreset(&points, 1, 5).is_err());
    }

    #[test]
    fn projection_keeps_distances_roughly() {
        let p = random_projection(256, 128, 7, Device::Cpu);
        assert_eq!(p.size(), vec![256, 128]);
        // A unit vector keeps about its length: E‖xP‖² = 1, with a standard
        // deviation of sqrt(2/128) = 0.125.
        let x = Tensor::zeros([1, 256], (Kind::Float, Device::Cpu));
        let _ = x.get(0).get(3).fill_(1.0);
        let length = f64::try_from(x.mm(&p).square().sum(Kind::Float)).unwrap();
        assert!((length - 1.0).abs() < 0.5, "squared length {length}");
        let again = random_projection(256, 128, 7, Device::Cpu);
        assert!(p.equal(&again));
    }

    #[test]
    fn lof_known_values() {
        // Points 0, 1, 2, 10 with k = 2. k-distances: 2, 1, 2, 9.
        // lrd: 2/3, 1/2, 2/3, 2/17. LOF: 7/8, 4/3, 7/8, 119/24.
        let points = column(&[0.0, 1.0, 2.0, 10.0]).unsqueeze(0);
        let lof: Vec<f32> =
            Vec::try_from(local_outlier_factor(&points, 2).unwrap().get(0)).unwrap();
        let expected = [7.0 / 8.0, 4.0 / 3.0, 7.0 / 8.0, 119.0 / 24.0];
        for (got, want) in lof.iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-5, "LOF {lof:?}");
        }
        assert!(local_outlier_factor(&points, 4).is_err());
    }

    #[test]
    fn softpatch_drops_outlier_per_position() {
        // 4 images, 2 positions, 1-D features. Position 0: image 3 is the
        // outlier; position 1: image 0 is.
        let feats =
            Tensor::from_slice(&[0.0f32, 10.0, 1.0, 1.0, 2.0, 2.0, 10.0, 0.0]).view([4, 2, 1]);
        let keep: Vec<bool> =
            Vec::try_from(softpatch_keep_mask(&feats, 2, 0.25).unwrap().flatten(0, 1)).unwrap();
        assert_eq!(keep, vec![true, false, true, true, true, true, false, true]);
        assert!(softpatch_keep_mask(&feats, 2, 1.0).is_err());
    }

    #[test]
    fn reweighting_known_values() {
        // Bank 0, 1, 3, 10 with 2 neighbours (m* and its nearest other row).
        // Query 0.4: m* = 0, neighbourhood {0, 1} at 0.4 and 0.6 from the
        // query, so w = 1 − 1/(1 + e^0.2) = 0.549834.
        // Query 9: m* = 10, neighbourhood {10, 3} at 1 and 6, so
        // w = 1 − 1/(1 + e^5) = 0.993307: the rare match keeps almost its whole distance.
        let bank = column(&[0.0, 1.0, 3.0, 10.0]);
        let queries = column(&[0.4, 9.0]);
        let got: Vec<f64> =
            Vec::try_from(reweighting_weights(&queries, &bank, 2).unwrap()).unwrap();
        let dense = 1.0 - 1.0 / (1.0 + 0.2f64.exp());
        let rare = 1.0 - 1.0 / (1.0 + 5.0f64.exp());
        assert!((got[0] - dense).abs() < 1e-6, "{got:?}");
        assert!((got[1] - rare).abs() < 1e-6, "{got:?}");
        // Three neighbours: query 0.4 adds row 3 at 2.6, w = 1 − 1/(1 + e^0.2 + e^2.2).
        let three: Vec<f64> =
            Vec::try_from(reweighting_weights(&queries, &bank, 3).unwrap()).unwrap();
        let want = 1.0 - 1.0 / (1.0 + 0.2f64.exp() + 2.2f64.exp());
        assert!((three[0] - want).abs() < 1e-6, "{three:?}");
    }

    #[test]
    fn reweighting_rejects_bad_input() {
        let bank = column(&[0.0, 1.0, 3.0, 10.0]);
        let queries = column(&[0.4, 9.0]);
        assert!(reweighting_weights(&queries, &bank, 1).is_err());
        assert!(reweighting_weights(&queries, &bank, 5).is_err());
        let wide = Tensor::from_slice(&[0.0f32, 1.0]).view([1, 2]);
        assert!(reweighting_weights(&wide, &bank, 2).is_err());
    }
}
