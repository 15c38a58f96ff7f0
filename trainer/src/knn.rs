//! Nearest-neighbour search as blocked matrix products.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Number format of the matrix product in a bank search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats throughout.
    #[default]
    Float32,
    /// bfloat16 inputs and outputs of the product, on centred features;
    /// about 2.5 times faster on CPUs with AVX512-BF16 (examples/bench_knn.rs).
    Bfloat16,
}

/// Queries per block, so that one distance block of `QUERY_BLOCK × bank` floats
/// stays a few hundred MB for banks of up to about 100,000 features.
const QUERY_BLOCK: i64 = 1024;

/// Squared L2 distances `[n, m]` between the rows of `a` `[n, d]` and `b` `[m, d]`,
/// as ‖a‖² + ‖b‖² − 2ab, clamped at 0 against rounding.
pub fn squared_distances(a: &Tensor, b: &Tensor) -> Tensor {
    let prepared = Prepared::new(b);
    (prepared.partial(a) + row_norms(a)).clamp_min(0.0)
}

/// ‖a‖² of each row, as a column `[n, 1]`.
fn row_norms(a: &Tensor) -> Tensor {
    a.square().sum_dim_intlist(1, true, Kind::Float)
}

/// A bank `[m, d]` prepared for blocked distance queries: `partial(q)` returns
/// ‖b‖² − 2qb in one fused matrix product. The query's own ‖q‖² is the same
/// along a row, so it is added only to the few values that survive a min or top-k.
struct Prepared {
    minus_two_bt: Tensor,
    norms: Tensor,
}

impl Prepared {
    fn new(bank: &Tensor) -> Self {
        Prepared {
            minus_two_bt: (bank * -2.0).transpose(0, 1).contiguous(),
            norms: row_norms(bank).transpose(0, 1),
        }
    }

    fn partial(&self, q: &Tensor) -> Tensor {
        self.norms.addmm(q, &self.minus_two_bt)
    }

    /// [`Prepared::partial`] against bank rows `start..start + len` only.
    fn partial_band(&self, q: &Tensor, start: i64, len: i64) -> Tensor {
        self.norms
            .narrow(1, start, len)
            .addmm(q, &self.minus_two_bt.narrow(1, start, len))
    }
}

/// A scoring bank prepared once for many nearest-neighbour queries, in float32
/// or bfloat16.
///
/// In bfloat16 the bank and the queries are first centred on the bank's mean,
/// which leaves every distance unchanged but shrinks ‖b‖² − 2qb, whose
/// rounding error is relative to its own size (8 significant bits).
pub struct PreparedBank {
    prepared: Prepared,
    precision: Precision,
    center: Option<Tensor>,
    /// Patch-grid positions of the rows when the search is positional.
    layout: Option<GridLayout>,
}

/// Patch-grid layout of a positional bank. The rows are sorted by grid row,
/// so that the bank rows near one grid row form one contiguous band of the
/// prepared matrix.
struct GridLayout {
    /// Side of the square patch grid.
    grid: i64,
    /// Largest row or column offset between a query patch and a bank patch it may match.
    radius: i64,
    /// First sorted bank row of each grid row, and the bank size at the end (`grid + 1` values).
    row_starts: Vec<i64>,
    /// Grid column of each sorted bank row `[M]`.
    cols: Tensor,
    /// Caller's row index of each sorted bank row `[M]`.
    order: Tensor,
}

impl PreparedBank {
    pub fn new(bank: &Tensor, precision: Precision) -> Self {
        let _guard = tch::no_grad_guard();
        match precision {
            Precision::Float32 => PreparedBank {
                prepared: Prepared::new(bank),
                precision,
                center: None,
                layout: None,
            },
            Precision::Bfloat16 => {
                let center = bank.mean_dim(0, true, Kind::Float);
                let exact = Prepared::new(&(bank - &center));
                PreparedBank {
                    prepared: Prepared {
                        minus_two_bt: exact.minus_two_bt.to_kind(Kind::BFloat16),
                        norms: exact.norms.to_kind(Kind::BFloat16),
                    },
                    precision,
                    center: Some(center),
                    layout: None,
                }
            }
        }
    }

    /// Prepares a positional bank: a query patch at grid row i, column j is
    /// compared only with bank patches at most `radius` rows and columns
    /// away. `positions` `[M]` contains each bank row's patch index on the
    /// `grid`×`grid` patch grid (row-major). Queries must then come as whole
    /// images, `grid`² patches each in row-major order.
    ///
    /// On a fixed camera the same part of the object stays at the same place,
    /// so a small radius loses no match. The search then reads about
    /// (2·radius + 1) / grid of the bank per query.
    pub fn positional(
        bank: &Tensor,
        positions: &Tensor,
        grid: i64,
        radius: i64,
        precision: Precision,
    ) -> Result<Self> {
        let _guard = tch::no_grad_guard();
        let m = bank.size()[0];
        if grid < 1 || radius < 0 {
            bail!("positional search needs a grid of at least 1 and a radius of at least 0, got grid {grid} and radius {radius}");
        }
        if positions.size() != [m] {
            bail!(
                "bank positions have shape {:?}, expected [{m}]: one patch index per bank row",
                positions.size()
            );
        }
        let positions = positions.to_kind(Kind::Int64);
        if m > 0 {
            let (low, high) = (
                i64::try_from(positions.min())?,
                i64::try_from(positions.max())?,
            );
            if low < 0 || high >= grid * grid {
                bail!(
                    "bank positions range from {low} to {high}, outside the {grid}×{grid} patch grid"
                );
            }
        }
        let rows = positions.divide_scalar_mode(grid, "floor");
        let (_, order) = rows.sort_stable(true, 0, false);
        let sorted = bank.index_select(0, &order);
        let counts: Vec<i64> = Vec::try_from(
            rows.bincount(None::<Tensor>, grid)
                .to_device(tch::Device::Cpu),
        )?;
        let mut row_starts = Vec::with_capacity(grid as usize + 1);
        row_starts.push(0);
        for c in counts {
            row_starts.push(row_starts.last().copied().unwrap_or(0) + c);
        }
        let mut prepared = PreparedBank::new(&sorted, precision);
        prepared.layout = Some(GridLayout {
            grid,
            radius,
            row_starts,
            cols: positions.index_select(0, &order).remainder(grid),
            order,
        });
        Ok(prepared)
    }

    /// Returns whether queries are compared only with bank patches near their own position.
    pub fn is_positional(&self) -> bool {
        self.layout.is_some()
    }

    /// For each query `[n, d]`, the squared distance to its nearest bank
    /// feature, in float32. A positional bank needs whole images of queries
    /// and returns an error otherwise.
    pub fn try_nearest_distance(&self, queries: &Tensor) -> Result<Tensor> {
        match &self.layout {
            None => Ok(self.nearest_distance(queries)),
            Some(layout) => self.banded(layout, queries, None),
        }
    }

    /// As [`PreparedBank::try_nearest_distance`], but skipping bank entries of
    /// the query's own group (see [`nearest_distance_other_group`]).
    /// `bank_groups` follows the order of the bank given at preparation.
    pub fn try_nearest_distance_other_group(
        &self,
        queries: &Tensor,
        query_groups: &Tensor,
        bank_groups: &Tensor,
    ) -> Result<Tensor> {
        match &self.layout {
            None => Ok(self.nearest_distance_other_group(queries, query_groups, bank_groups)),
            Some(layout) => {
                let sorted = bank_groups.index_select(0, &layout.order);
                self.banded(layout, queries, Some((query_groups, &sorted)))
            }
        }
    }

    /// Runs the positional search one grid row at a time. The queries of that
    /// row in every image meet the contiguous band of bank rows within the
    /// radius. Bank columns farther than the radius are masked out, and so is
    /// the query's own group when groups are given.
    fn banded(
        &self,
        layout: &GridLayout,
        queries: &Tensor,
        groups: Option<(&Tensor, &Tensor)>,
    ) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let g = layout.grid;
        let (n, d) = queries.size2()?;
        let per_image = g * g;
        if n % per_image != 0 {
            bail!(
                "{n} query patches do not form whole images of {g}×{g} patches, \
                 which the positional bank search needs"
            );
        }
        let images = n / per_image;
        if images == 0 {
            return Ok(Tensor::zeros([0], (Kind::Float, queries.device())));
        }

        let grid_queries = queries.view([images, g, g, d]);
        let grid_groups = groups.map(|(q, _)| q.view([images, g, g]));
        let by_row: Vec<Tensor> = (0..g)
            .map(|row| {
                let row_groups = grid_groups
                    .as_ref()
                    .zip(groups)
                    .map(|(q, (_, bank))| (q.select(1, row), bank));
                self.banded_row(layout, row, &grid_queries.select(1, row), row_groups)
            })
            .collect();
        Ok(Tensor::stack(&by_row, 1).view([n]))
    }

    /// Returns the squared distances `[images, grid]` of the queries on grid
    /// row `row` (`[images, grid, d]`), with their groups `[images, grid]` and
    /// the sorted bank groups when given.
    fn banded_row(
        &self,
        layout: &GridLayout,
        row: i64,
        row_queries: &Tensor,
        groups: Option<(Tensor, &Tensor)>,
    ) -> Tensor {
        let (g, r) = (layout.grid, layout.radius);
        let shape = row_queries.size();
        let (images, d) = (shape[0], shape[2]);
        let device = row_queries.device();
        let first_row = (row - r).max(0) as usize;
        let last_row = (row + r).min(g - 1) as usize;
        let start = layout.row_starts[first_row];
        let len = layout.row_starts[last_row + 1] - start;
        if len == 0 {
            return Tensor::full([images, g], f64::INFINITY, (Kind::Float, device));
        }

        // [1, g, len]: true where the bank patch's column is too far.
        let query_cols = Tensor::arange(g, (Kind::Int64, device));
        let far = (layout.cols.narrow(0, start, len).unsqueeze(0) - query_cols.unsqueeze(1))
            .abs()
            .gt(r)
            .unsqueeze(0);
        let band_groups = groups
            .as_ref()
            .map(|(_, bank)| bank.narrow(0, start, len).view([1, 1, len]));

        let chunk = (QUERY_BLOCK / g).max(1);
        let mut parts = Vec::new();
        let mut first = 0;
        while first < images {
            let count = chunk.min(images - first);
            let flat = row_queries.narrow(0, first, count).reshape([count * g, d]);
            let (q, norms) = self.queries(&flat);
            let mut partial = self
                .prepared
                .partial_band(&q, start, len)
                .view([count, g, len])
                .masked_fill(&far, f64::INFINITY);
            if let (Some((query_groups, _)), Some(bank_groups)) = (&groups, &band_groups) {
                let same = query_groups
                    .narrow(0, first, count)
                    .unsqueeze(2)
                    .eq_tensor(bank_groups);
                partial = partial.masked_fill(&same, f64::INFINITY);
            }
            let (min, _) = partial.min_dim(2, false);
            parts.push((min.to_kind(Kind::Float) + norms.view([count, g])).clamp_min(0.0));
            first += count;
        }
        Tensor::cat(&parts, 0)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Returns the queries in the bank's frame and format, and their ‖q‖² in float32.
    fn queries(&self, q: &Tensor) -> (Tensor, Tensor) {
        match &self.center {
            None => (q.shallow_clone(), row_norms(q)),
            Some(c) => {
                let centred = q - c;
                let norms = row_norms(&centred);
                (centred.to_kind(Kind::BFloat16), norms)
            }
        }
    }

    /// For each query `[n, d]`, the squared distance to its nearest bank feature, in float32.
    pub fn nearest_distance(&self, queries: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        blocked(queries.size()[0], |start, len| {
            let (q, norms) = self.queries(&queries.narrow(0, start, len));
            let (min, _) = self.prepared.partial(&q).min_dim(1, true);
            (min.to_kind(Kind::Float) + norms)
                .clamp_min(0.0)
                .squeeze_dim(1)
        })
    }

    /// As [`nearest_distance_other_group`], against this bank.
    pub fn nearest_distance_other_group(
        &self,
        queries: &Tensor,
        query_groups: &Tensor,
        bank_groups: &Tensor,
    ) -> Tensor {
        let _guard = tch::no_grad_guard();
        let bank_groups = bank_groups.unsqueeze(0);
        blocked(queries.size()[0], |start, len| {
            let (q, norms) = self.queries(&queries.narrow(0, start, len));
            let same = query_groups
                .narrow(0, start, len)
                .unsqueeze(1)
                .eq_tensor(&bank_groups);
            let (min, _) = self
                .prepared
                .partial(&q)
                .masked_fill(&same, f64::INFINITY)
                .min_dim(1, true);
            (min.to_kind(Kind::Float) + norms)
                .clamp_min(0.0)
                .squeeze_dim(1)
        })
    }
}

/// Splits `n` rows into blocks of `QUERY_BLOCK` and concatenates `f` of each
/// block. `f` is called once with an empty block when `n` is 0, so that the
/// result keeps its shape and kind.
fn blocked(n: i64, mut f: impl FnMut(i64, i64) -> Tensor) -> Tensor {
    if n == 0 {
        return f(0, 0);
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = QUERY_BLOCK.min(n - start);
        out.push(f(start, len));
        start += len;
    }
    Tensor::cat(&out, 0)
}

/// For each query, the squared distance to its nearest bank feature other than
/// itself. A bank entry closer than `self_eps` is taken to be the query itself
/// (the bank may contain the query's own feature), and the second-nearest is used.
pub fn nearest_distance_excluding_self(queries: &Tensor, bank: &Tensor, self_eps: f64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let k = bank.size()[0].min(2);
    let prepared = Prepared::new(bank);
    blocked(queries.size()[0], |start, len| {
        let q = queries.narrow(0, start, len);
        let (top, _) = prepared.partial(&q).topk(k, 1, false, true);
        let top = (top + row_norms(&q)).clamp_min(0.0);
        let first = top.select(1, 0);
        if k == 2 {
            top.select(1, 1).where_self(&first.lt(self_eps), &first)
        } else {
            first
        }
    })
}

/// Candidates that the bfloat16 search of
/// [`nearest_distance_excluding_self_in`] keeps per query for the exact
/// float32 comparison.
const RERANK: i64 = 4;

/// [`nearest_distance_excluding_self`] with the matrix product in `precision`.
///
/// In bfloat16, the product (on features centred on the bank mean) only
/// picks the `RERANK` nearest candidates of each query; their distances are
/// then computed exactly in float32. The self match therefore still lands
/// below `self_eps`, which a rounded distance would not, and every returned
/// value is an exact distance to one of the bank's features.
pub fn nearest_distance_excluding_self_in(
    queries: &Tensor,
    bank: &Tensor,
    self_eps: f64,
    precision: Precision,
) -> Tensor {
    if precision == Precision::Float32 {
        return nearest_distance_excluding_self(queries, bank, self_eps);
    }
    let _guard = tch::no_grad_guard();
    let m = bank.size()[0];
    let d = bank.size()[1];
    let k = m.min(RERANK);
    let prepared = PreparedBank::new(bank, precision);
    blocked(queries.size()[0], |start, len| {
        let q = queries.narrow(0, start, len);
        let (centred, _) = prepared.queries(&q);
        let (_, idx) = prepared.prepared.partial(&centred).topk(k, 1, false, false);
        let candidates = bank.index_select(0, &idx.flatten(0, 1)).view([len, k, d]);
        let exact = (candidates - q.unsqueeze(1))
            .square()
            .sum_dim_intlist(2, false, Kind::Float);
        let (top, _) = exact.sort(1, false);
        let first = top.select(1, 0);
        if k >= 2 {
            top.select(1, 1).where_self(&first.lt(self_eps), &first)
        } else {
            first
        }
    })
}

/// For each query, the squared distance to its nearest bank feature from
/// another group: bank entries whose group equals the query's are skipped. With
/// images as groups, this is a leave-one-image-out distance, free of the
/// near-copies that neighbouring patches of one image are of each other.
/// A query whose group contains the whole bank gets infinity.
pub fn nearest_distance_other_group(
    queries: &Tensor,
    query_groups: &Tensor,
    bank: &Tensor,
    bank_groups: &Tensor,
) -> Tensor {
    PreparedBank::new(bank, Precision::Float32).nearest_distance_other_group(
        queries,
        query_groups,
        bank_groups,
    )
}

/// For each query, the squared distance to its nearest bank feature (one-class scoring).
pub fn nearest_distance(queries: &Tensor, bank: &Tensor) -> Tensor {
    PreparedBank::new(bank, Precision::Float32).nearest_distance(queries)
}

/// Image descriptors `[n, d]` of patch features `[n, p, d]`: the mean patch feature.
pub fn image_descriptors(features: &Tensor) -> Tensor {
    features.mean_dim(1, false, Kind::Float)
}

/// Indices `[q, k]` of the `k` bank images nearest to each query image,
/// ranked by the squared L2 distance between [`image_descriptors`].
/// `k` is clamped to the number of bank images.
pub fn nearest_images(query_descriptors: &Tensor, bank_descriptors: &Tensor, k: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let k = k.clamp(1, bank_descriptors.size()[0]);
    squared_distances(query_descriptors, bank_descriptors)
        .topk(k, 1, false, true)
        .1
}

/// Retrieval-conditioned nearest-neighbour search, in the manner of SPADE
/// (Cohen and Hoshen, 2020): each query image `[q, p, d]` is compared only with
/// the patches of the `k` bank images `[n, p', d]` whose mean patch features lie
/// nearest to its own. Returns the squared distance `[q, p]` from every query
/// patch to the nearest of those patches.
///
/// A global bank may match a bright band on a dark part to some bright part
/// elsewhere in the training set. Among images that look like the query as a
/// whole, the band may have no match. `k` at least the bank's image count gives
/// the plain [`nearest_distance`] over all bank patches.
pub fn nearest_distance_in_similar_images(
    queries: &Tensor,
    bank: &Tensor,
    k: i64,
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let (q, p, d) = queries.size3()?;
    if q == 0 {
        return Ok(Tensor::zeros([0, p], (Kind::Float, queries.device())));
    }
    let picked = nearest_images(&image_descriptors(queries), &image_descriptors(bank), k);
    let rows: Vec<Tensor> = (0..q)
        .map(|i| {
            let near = bank.index_select(0, &picked.get(i)).view([-1, d]);
            nearest_distance(&queries.get(i), &near)
        })
        .collect();
    Ok(Tensor::stack(&rows, 0).view([q, p]))
}

/// Mutually nearest pairs among the rows of `x` `[n, d]`: i and j with j the
/// nearest neighbour of i (other than i) and i the nearest of j. Returns
/// `[pairs, 2]` int64 indices with i < j in each row.
pub fn mutual_nearest_pairs(x: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let device = x.device();
    if n < 2 {
        return Tensor::zeros([0, 2], (Kind::Int64, device));
    }
    let nn = nearest_other_rows(x);
    let idx = Tensor::arange(n, (Kind::Int64, device));
    let back = nn.index_select(0, &nn);
    let mutual = back.eq_tensor(&idx).logical_and(&idx.lt_tensor(&nn));
    let i = idx.masked_select(&mutual);
    let j = nn.masked_select(&mutual);
    Tensor::stack(&[i, j], 1)
}

/// For each row of `x`, the index of its nearest other row (float32).
fn nearest_other_rows(x: &Tensor) -> Tensor {
    let n = x.size()[0];
    let device = x.device();
    let prepared = Prepared::new(x);
    blocked(n, |start, len| {
        // ‖q‖² does not change the argmin of a row, so the partial distances suffice.
        let mut d = prepared.partial(&x.narrow(0, start, len));
        let rows = Tensor::arange(len, (Kind::Int64, device));
        let _ = d.index_put_(
            &[Some(rows.shallow_clone()), Some(rows + start)],
            &Tensor::from(f32::INFINITY).to_device(device),
            false,
        );
        d.argmin(1, false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, 2])
    }

    #[test]
    fn squared_distances_known_values() {
        let a = t(&[[0.0, 0.0], [1.0, 2.0]]);
        let b = t(&[[3.0, 4.0], [1.0, 0.0]]);
        let d: Vec<f32> = Vec::try_from(squared_distances(&a, &b).flatten(0, 1)).unwrap();
        assert_eq!(d, vec![25.0, 1.0, 8.0, 4.0]);
    }

    #[test]
    fn nearest_skips_self_match() {
        // The first query is itself in the bank, so its distance is to [3, 0]: 9.
        let bank = t(&[[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]]);
        let q = t(&[[0.0, 0.0], [0.0, 4.0]]);
        let d: Vec<f32> = Vec::try_from(nearest_distance_excluding_self(&q, &bank, 1e-2)).unwrap();
        assert_eq!(d, vec![9.0, 1.0]);
        let plain: Vec<f32> = Vec::try_from(nearest_distance(&q, &bank)).unwrap();
        assert_eq!(plain, vec![0.0, 1.0]);
    }

    #[test]
    fn nearest_of_no_queries_is_empty() {
        let bank = t(&[[0.0, 0.0], [3.0, 0.0]]);
        let none = Tensor::zeros([0, 2], (Kind::Float, tch::Device::Cpu));
        assert_eq!(nearest_distance(&none, &bank).size(), vec![0]);
        assert_eq!(
            nearest_distance_excluding_self(&none, &bank, 1e-2).size(),
            vec![0]
        );
    }

    #[test]
    fn retrieval_searches_only_similar_images() {
        // Two bank images of two 1-D patches each: image 0 near 0, image 1 near 10.
        let bank = Tensor::from_slice(&[0.0f32, 1.0, 9.0, 11.0]).view([2, 2, 1]);
        // A query image whose patches are 0.5 and 8: its mean 4.25 lies nearer
        // image 0 (mean 0.5) than image 1 (mean 10).
        let q = Tensor::from_slice(&[0.5f32, 8.0]).view([1, 2, 1]);
        let picked: Vec<i64> = Vec::try_from(
            nearest_images(&image_descriptors(&q), &image_descriptors(&bank), 1).view([-1]),
        )
        .unwrap();
        assert_eq!(picked, vec![0]);
        // With k = 1 the patch at 8 is compared with 0 and 1 only: 7² = 49,
        // although image 1's patch at 9 lies 1 away.
        let d: Vec<f32> = Vec::try_from(
            nearest_distance_in_similar_images(&q, &bank, 1)
                .unwrap()
                .view([-1]),
        )
        .unwrap();
        assert_eq!(d, vec![0.25, 49.0]);
        // With k at least the number of images it is the plain search.
        let all: Vec<f32> = Vec::try_from(
            nearest_distance_in_similar_images(&q, &bank, 5)
                .unwrap()
                .view([-1]),
        )
        .unwrap();
        assert_eq!(all, vec![0.25, 1.0]);
        // No query images, as when no defect image moves into training.
        let none = Tensor::zeros([0, 2, 1], (Kind::Float, tch::Device::Cpu));
        assert_eq!(
            nearest_distance_in_similar_images(&none, &bank, 1)
                .unwrap()
                .size(),
            [0, 2]
        );
    }

    /// Asserts that two distance lists agree to 1e-4, infinities included.
    fn assert_distances_match(got: &[f32], want: &[f32], case: &str) {
        assert_eq!(got.len(), want.len(), "{case}: lengths");
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            let same = (a - b).abs() < 1e-4 || (a.is_infinite() && b.is_infinite());
            assert!(same, "{case}, query {k}: {a} against {b}");
        }
    }

    /// Brute force for the positional search: every pair, masked by grid
    /// distance and group.
    fn positional_reference(
        q: &Tensor,
        bank: &Tensor,
        positions: &[i64],
        grid: i64,
        radius: i64,
        groups: Option<(&[i64], &[i64])>,
    ) -> Vec<f32> {
        let d: Vec<f32> = Vec::try_from(squared_distances(q, bank).flatten(0, 1)).unwrap();
        let m = positions.len();
        let per_image = (grid * grid) as usize;
        (0..q.size()[0] as usize)
            .map(|i| {
                let (qr, qc) = ((i % per_image) as i64 / grid, (i % per_image) as i64 % grid);
                (0..m)
                    .filter(|&k| {
                        let (br, bc) = (positions[k] / grid, positions[k] % grid);
                        let near = (br - qr).abs() <= radius && (bc - qc).abs() <= radius;
                        let other = groups.is_none_or(|(qg, bg)| qg[i] != bg[k]);
                        near && other
                    })
                    .map(|k| d[i * m + k])
                    .fold(f32::INFINITY, f32::min)
            })
            .collect()
    }

    #[test]
    fn positional_search_matches_brute_force() {
        tch::manual_seed(11);
        let cpu = (Kind::Float, tch::Device::Cpu);
        let (grid, m) = (4i64, 90i64);
        let bank = Tensor::randn([m, 3], cpu);
        // Positions in a shuffled order, with grid row 2 left empty.
        let positions: Vec<i64> = (0..m)
            .map(|k| (k * 7) % 16)
            .filter(|p| p / 4 != 2)
            .collect();
        let bank = bank.narrow(0, 0, positions.len() as i64);
        let pos = Tensor::from_slice(&positions);
        let q = Tensor::randn([3 * 16, 3], cpu);
        for radius in [0, 1, 3] {
            let prepared =
                PreparedBank::positional(&bank, &pos, grid, radius, Precision::Float32).unwrap();
            let got: Vec<f32> = Vec::try_from(prepared.try_nearest_distance(&q).unwrap()).unwrap();
            let want = positional_reference(&q, &bank, &positions, grid, radius, None);
            assert_distances_match(&got, &want, &format!("radius {radius}"));
        }
        // Radius 3 reaches every position of a 4×4 grid: the plain search.
        let all = PreparedBank::positional(&bank, &pos, grid, 3, Precision::Float32).unwrap();
        let plain = nearest_distance(&q, &bank);
        let diff = f64::try_from((all.try_nearest_distance(&q).unwrap() - plain).abs().max());
        assert!(diff.unwrap() < 1e-4);
        // Groups: queries of image k and bank rows of group k % 3.
        let bank_groups: Vec<i64> = (0..positions.len() as i64).map(|k| k % 3).collect();
        let query_groups: Vec<i64> = (0..48).map(|i| i / 16).collect();
        let prepared = PreparedBank::positional(&bank, &pos, grid, 1, Precision::Float32).unwrap();
        let got: Vec<f32> = Vec::try_from(
            prepared
                .try_nearest_distance_other_group(
                    &q,
                    &Tensor::from_slice(&query_groups),
                    &Tensor::from_slice(&bank_groups),
                )
                .unwrap(),
        )
        .unwrap();
        let want = positional_reference(
            &q,
            &bank,
            &positions,
            grid,
            1,
            Some((&query_groups, &bank_groups)),
        );
        assert_distances_match(&got, &want, "radius 1 with groups");
    }

    #[test]
    fn positional_search_rejects_bad_input() {
        let bank = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        let err = PreparedBank::positional(
            &bank,
            &Tensor::from_slice(&[0i64, 16]),
            4,
            1,
            Precision::Float32,
        );
        assert!(err.is_err_and(|e| e.to_string().contains("outside the 4×4 patch grid")));
        let ok = PreparedBank::positional(
            &bank,
            &Tensor::from_slice(&[0i64, 15]),
            4,
            1,
            Precision::Float32,
        )
        .unwrap();
        let q = Tensor::zeros([5, 3], (Kind::Float, tch::Device::Cpu));
        let err = ok.try_nearest_distance(&q).unwrap_err().to_string();
        assert!(err.contains("whole images"), "{err}");
        let none = Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu));
        assert_eq!(ok.try_nearest_distance(&none).unwrap().size(), [0]);
    }

    #[test]
    fn other_group_skips_own_group() {
        let bank = t(&[[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]);
        let bank_groups = Tensor::from_slice(&[0i64, 0, 1]);
        let q = t(&[[0.9, 0.0], [4.0, 0.0]]);
        // Query 0 is in group 0, so (0,0) and (1,0) are skipped: (5,0) at 4.1².
        // Query 1 is in group 1, so (5,0) is skipped: (1,0) at 3².
        let d =
            nearest_distance_other_group(&q, &Tensor::from_slice(&[0i64, 1]), &bank, &bank_groups);
        let d: Vec<f32> = Vec::try_from(d).unwrap();
        assert!((d[0] - 4.1f32 * 4.1).abs() < 1e-4, "{d:?}");
        assert!((d[1] - 9.0).abs() < 1e-4, "{d:?}");
        let alone = nearest_distance_other_group(
            &t(&[[0.0, 0.0]]),
            &Tensor::from_slice(&[0i64]),
            &t(&[[1.0, 1.0]]),
            &Tensor::from_slice(&[0i64]),
        );
        assert!(f32::try_from(alone.get(0)).unwrap().is_infinite());
    }

    #[test]
    fn bfloat16_search_is_close_to_float32() {
        tch::manual_seed(5);
        let cpu = (Kind::Float, tch::Device::Cpu);
        // Features with a large common offset, as backbone features have.
        let offset = Tensor::randn([1, 64], cpu) * 4.0;
        let bank = Tensor::randn([3000, 64], cpu) + &offset;
        let q = Tensor::randn([500, 64], cpu) * 1.2 + &offset;
        let exact = PreparedBank::new(&bank, Precision::Float32).nearest_distance(&q);
        let fast = PreparedBank::new(&bank, Precision::Bfloat16).nearest_distance(&q);
        assert_eq!(fast.kind(), Kind::Float);
        let rel = f64::try_from(((&fast - &exact).abs() / &exact).max()).unwrap();
        assert!(rel < 0.02, "max relative error {rel}");
        // Without centring, the same search loses far more to rounding.
        let exact_raw = Prepared::new(&bank);
        let raw = Prepared {
            minus_two_bt: exact_raw.minus_two_bt.to_kind(Kind::BFloat16),
            norms: exact_raw.norms.to_kind(Kind::BFloat16),
        };
        let (min, _) = raw.partial(&q.to_kind(Kind::BFloat16)).min_dim(1, true);
        let uncentred = (min.to_kind(Kind::Float) + row_norms(&q)).squeeze_dim(1);
        let rel_raw = f64::try_from(((&uncentred - &exact).abs() / &exact).max()).unwrap();
        assert!(rel_raw > 2.0 * rel, "uncentred {rel_raw}, centred {rel}");
        // With no group shared, the groups variant returns the plain search.
        let groups = PreparedBank::new(&bank, Precision::Bfloat16).nearest_distance_other_group(
            &q,
            &Tensor::full([500], -1i64, (Kind::Int64, tch::Device::Cpu)),
            &Tensor::zeros([3000], (Kind::Int64, tch::Device::Cpu)),
        );
        assert!(groups.allclose(&fast, 0.0, 0.0, false));
    }

    #[test]
    fn bfloat16_training_search_reranks_exactly() {
        tch::manual_seed(7);
        let cpu = (Kind::Float, tch::Device::Cpu);
        let offset = Tensor::randn([1, 64], cpu) * 4.0;
        let bank = Tensor::randn([2000, 64], cpu) + &offset;
        // The first 300 queries are bank rows (their self match must be
        // skipped), the other 300 are new points.
        let q = Tensor::cat(
            &[
                bank.narrow(0, 0, 300),
                Tensor::randn([300, 64], cpu) * 1.1 + &offset,
            ],
            0,
        );
        let exact = nearest_distance_excluding_self(&q, &bank, 1e-2);
        let fast = nearest_distance_excluding_self_in(&q, &bank, 1e-2, Precision::Bfloat16);
        assert_eq!(fast.size(), [600]);

        // Every value is the exact distance to some bank row, so it is never
        // below the true nearest. Rounding only decides which candidates
        // reach the exact comparison. The float32 reference itself rounds
        // ‖q‖² + ‖b‖² − 2qb, so it may lie above the truth by a few ulps of ‖q‖².
        let diff = &fast - &exact;
        let slack = 1e-5 * f64::try_from(row_norms(&q).max()).unwrap();
        let lowest = f64::try_from(diff.min()).unwrap();
        assert!(
            lowest >= -slack,
            "{lowest} below the rounding slack {slack}"
        );
        let same =
            f64::try_from(diff.abs().lt(1e-3).to_kind(Kind::Float).mean(Kind::Float)).unwrap();
        assert!(
            same > 0.97,
            "only {same} of the queries found their nearest"
        );

        // No self match got through: bank rows have a positive distance.
        assert!(f64::try_from(fast.narrow(0, 0, 300).min()).unwrap() > 1e-2);

        // Float32 is the plain search.
        let plain = nearest_distance_excluding_self_in(&q, &bank, 1e-2, Precision::Float32);
        assert!(plain.equal(&exact));
        // A bank of one feature, which is the query itself: the exact zero.
        let one = nearest_distance_excluding_self_in(
            &bank.narrow(0, 0, 1),
            &bank.narrow(0, 0, 1),
            1e-2,
            Precision::Bfloat16,
        );
        assert!(f64::try_from(one.get(0)).unwrap().abs() < 1e-3);
    }

    #[test]
    fn mutual_pairs_known_layout() {
        // 0–1 are mutual, 2–3 are mutual, 4 points to 3 but 3 points to 2.
        let x = t(&[[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.2, 0.0], [5.5, 0.0]]);
        let pairs: Vec<i64> = Vec::try_from(mutual_nearest_pairs(&x).flatten(0, 1)).unwrap();
        assert_eq!(pairs, vec![0, 1, 2, 3]);
    }
}
