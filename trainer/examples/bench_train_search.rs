//! Times the pseudo-label search of one training iteration (each patch of a
//! batch against the training bank, its own feature skipped) in float32 and
//! in bfloat16 with exact re-ranking, alternating, so the ratio holds on a
//! shared machine. The mutual-pair search among the batch's patches, which
//! training runs in float32, is timed beside them for scale.
//!
//!   cargo run --release -p funad --example bench_train_search [QUERIES DIM BANK ROUNDS]
//!
//! Defaults: one batch of the default training (32 images × 256 patches =
//! 8,192 queries of 384 values) against the 20,000-feature bank, 3 rounds.

use std::time::Instant;

use funad::knn::{self, Precision};
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("arguments are integers: QUERIES DIM BANK ROUNDS")
        })
        .collect();
    let arg = |i: usize, default: i64| args.get(i).copied().unwrap_or(default);
    let (n, d, m, rounds) = (arg(0, 8192), arg(1, 384), arg(2, 20_000), arg(3, 3));

    tch::manual_seed(0);
    let cpu = (Kind::Float, Device::Cpu);
    // A common offset, as backbone features have; half the queries are bank rows.
    let offset = Tensor::randn([1, d], cpu) * 3.0;
    let bank = Tensor::randn([m, d], cpu) + &offset;
    let half = (n / 2).min(m);
    let queries = Tensor::cat(
        &[
            bank.narrow(0, 0, half),
            Tensor::randn([n - half, d], cpu) + &offset,
        ],
        0,
    );
    let exact = knn::nearest_distance_excluding_self(&queries, &bank, 1e-2);
    let fast = knn::nearest_distance_excluding_self_in(&queries, &bank, 1e-2, Precision::Bfloat16);
    let same = f64::try_from(
        (&fast - &exact)
            .abs()
            .le(1e-3)
            .to_kind(Kind::Float)
            .mean(Kind::Float),
    )
    .unwrap();
    let excess = f64::try_from(((&fast - &exact) / &exact).max()).unwrap();
    println!(
        "{n} queries × {m} bank × {d} values; bfloat16: the exact nearest for {:.2}% of the \
         queries, largest relative excess of a distance {excess:.4}",
        same * 100.0
    );
    for r in 1..=rounds {
        let time = |f: &dyn Fn() -> Tensor| {
            let start = Instant::now();
            let _ = f();
            start.elapsed().as_secs_f64()
        };
        let t32 = time(&|| knn::nearest_distance_excluding_self(&queries, &bank, 1e-2));
        let t16 = time(&|| {
            knn::nearest_distance_excluding_self_in(&queries, &bank, 1e-2, Precision::Bfloat16)
        });
        let p32 = time(&|| knn::mutual_nearest_pairs(&queries));
        println!(
            "round {r}: bank search float32 {:.0} ms, bfloat16 {:.0} ms, ratio {:.2}; \
             mutual pairs (float32) {:.0} ms",
            t32 * 1e3,
            t16 * 1e3,
            t32 / t16,
            p32 * 1e3
        );
    }
}
