//! Times the nearest-neighbour search of one frame's patches against a bank,
//! in float32 and in bfloat16, alternating, so the ratio holds on a shared
//! machine.
//!
//!   cargo run --release -p funad --example bench_knn [PATCHES DIM BANK ROUNDS]
//!
//! Defaults: 256 patches of 384 values (the ViT's default features) against
//! 40,000 bank features, 5 rounds of 10 searches each.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("arguments are integers: PATCHES DIM BANK ROUNDS")
        })
        .collect();
    let arg = |i: usize, default: i64| args.get(i).copied().unwrap_or(default);
    let (n, d, m, rounds) = (arg(0, 256), arg(1, 384), arg(2, 40_000), arg(3, 5));

    tch::manual_seed(0);
    let _guard = tch::no_grad_guard();
    let queries = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    let bank = Tensor::randn([m, d], (Kind::Float, Device::Cpu));
    let minus_two_bt = (&bank * -2.0).transpose(0, 1).contiguous();
    let norms = bank
        .square()
        .sum_dim_intlist(1, true, Kind::Float)
        .transpose(0, 1);
    let q16 = queries.to_kind(Kind::BFloat16);
    let bt16 = minus_two_bt.to_kind(Kind::BFloat16);
    let norms16 = norms.to_kind(Kind::BFloat16);

    let exact = norms.addmm(&queries, &minus_two_bt).min_dim(1, false).0;
    let approx = norms16
        .addmm(&q16, &bt16)
        .to_kind(Kind::Float)
        .min_dim(1, false)
        .0;
    let q_norms = queries.square().sum_dim_intlist(1, false, Kind::Float);
    let err = ((&approx - &exact).abs() / (&exact + &q_norms)).max();
    println!(
        "{n} queries × {m} bank × {d} values; max relative error of bf16 distances {:.2e}",
        f64::try_from(err).unwrap()
    );

    for r in 1..=rounds {
        let time = |f: &dyn Fn() -> Tensor| {
            let start = Instant::now();
            for _ in 0..10 {
                let _ = f();
            }
            start.elapsed().as_secs_f64() / 10.0
        };
        let t32 = time(&|| norms.addmm(&queries, &minus_two_bt).min_dim(1, false).0);
        let t16 = time(&|| norms16.addmm(&q16, &bt16).min_dim(1, false).0);
        println!(
            "round {r}: float32 {:.1} ms, bfloat16 {:.1} ms, ratio {:.2}",
            t32 * 1e3,
            t16 * 1e3,
            t32 / t16
        );
    }
}
