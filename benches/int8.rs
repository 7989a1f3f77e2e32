//! One dense layer, f32 kernel against int8 (activation quantization included, and alone), at
//! every int8 level this CPU has, over the benchmark models' layer shapes.
//!
//!     cargo bench --bench int8 [-- b1|b16|b256|b1024 ...]
//!
//! Prints medians of 15 repetitions in µs per call and the f32/int8 ratio (above 1: int8 faster).
//! For whole models use benches/synthetic and benches/compare (docs/PERFORMANCE.md).

use std::time::Instant;

use ple::kernels::int8::{self, GemmI8, I8Level, Quantized};
use ple::kernels::{self, Gemm, Panels, SimdLevel};

/// (name, k, n): the layers of the "criteo" and "large" synthetic PLEs (benches/synthetic.rs).
const LAYERS: &[(&str, usize, usize)] = &[
    ("criteo expert 1", 429, 256),
    ("criteo expert 2", 256, 128),
    ("criteo tower", 128, 64),
    ("criteo gate", 429, 3),
    ("large expert 1", 660, 512),
    ("large expert 2", 512, 256),
    ("large tower 1", 256, 128),
    ("large tower 2", 128, 64),
    ("large gate", 660, 4),
];

/// Times the variants interleaved (repetition 1 of each, then 2, ...) so that load changes on a
/// shared machine hit them alike; returns each one's median µs per call and, for each, the median
/// over repetitions of (variant 0's time ÷ its time).
fn paired_us(fs: &mut [&mut dyn FnMut()]) -> Vec<(f64, f64)> {
    let inner: Vec<usize> = fs
        .iter_mut()
        .map(|f| {
            let t = Instant::now();
            let mut reps = 0;
            while t.elapsed().as_secs_f64() < 0.01 {
                f();
                reps += 1;
            }
            ((0.005 / (t.elapsed().as_secs_f64() / reps as f64)) as usize).max(1)
        })
        .collect();
    let mut times = vec![Vec::new(); fs.len()];
    for _ in 0..15 {
        for (v, f) in fs.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..inner[v] {
                f();
            }
            times[v].push(t.elapsed().as_secs_f64() * 1e6 / inner[v] as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (0..fs.len())
        .map(|v| {
            let ratios = (0..15).map(|r| times[0][r] / times[v][r]).collect();
            (median(times[v].clone()), median(ratios))
        })
        .collect()
}

fn pack_f32(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n.div_ceil(16) * k * 16];
    for r in 0..k {
        for c in 0..n {
            out[(c / 16) * k * 16 + r * 16 + c % 16] = w[r * n + c];
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let batches: Vec<usize> = if args.is_empty() {
        vec![1, 16, 256]
    } else {
        args.iter()
            .filter_map(|a| a.strip_prefix('b')?.parse().ok())
            .collect()
    };
    let simd = SimdLevel::detect();
    let levels = I8Level::available();
    println!("f32 kernel: {}; int8 levels: {levels:?}", simd.name());
    let mut seed = 1u64;
    let mut rnd = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    for &m in &batches {
        println!("\nbatch {m}");
        print!("{:<18} {:>9}", "layer", "f32 µs");
        for l in &levels[1..] {
            print!(" {:>13} {:>6}", format!("{} µs", l.name()), "ratio");
        }
        println!(" {:>9}", "quant µs");
        for &(name, k, n) in LAYERS {
            let w: Vec<f32> = (0..k * n).map(|_| rnd() * 0.1).collect();
            let a: Vec<f32> = (0..m * k).map(|_| rnd().max(0.0)).collect();
            let bias: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let panels = pack_f32(&w, k, n);
            let w8 = int8::quantize_weights(&w, k, n).unwrap();
            let mut c = vec![0f32; m * n];
            let ld = int8::row_bytes(k);
            let (w8, bias) = (&w8[..], &bias[..]);
            let mut f32_run = || {
                let g = Gemm {
                    m,
                    k,
                    n,
                    a: a.as_ptr(),
                    lda: k,
                    w: Panels::F32(&panels),
                    bias: Some(bias),
                    c: c.as_mut_ptr(),
                    ldc: n,
                    relu: true,
                };
                // SAFETY: buffers sized for m rows; the level was detected on this CPU.
                unsafe { kernels::gemm(simd, &g) };
            };
            let quantize = |level, codes: &mut [u8], scale: &mut [f32], zero: &mut [i32]| {
                // SAFETY: `a` holds m rows of k floats; the buffers hold m rows; the level is
                // available.
                unsafe {
                    int8::quantize_rows(level, m, k, a.as_ptr(), k, None, codes, ld, scale, zero)
                };
            };
            let int8_run = |level: I8Level| {
                let (mut codes, mut scale, mut zero) =
                    (vec![0u8; m * ld], vec![0f32; m], vec![0; m]);
                let mut out = vec![0f32; m * n];
                move || {
                    quantize(level, &mut codes, &mut scale, &mut zero);
                    let g = GemmI8 {
                        m,
                        k,
                        n,
                        a: Quantized {
                            codes: &codes,
                            ld,
                            scale: &scale,
                            zero: &zero,
                        },
                        w: w8,
                        bias: Some(bias),
                        c: out.as_mut_ptr(),
                        ldc: n,
                        relu: true,
                    };
                    // SAFETY: as above; the level is available.
                    unsafe { int8::gemm_i8(level, &g) };
                }
            };
            let best = *levels.last().unwrap();
            let (mut codes, mut scale, mut zero) = (vec![0u8; m * ld], vec![0f32; m], vec![0; m]);
            let mut quant_only = || quantize(best, &mut codes, &mut scale, &mut zero);
            let mut int8_runs: Vec<_> = levels[1..].iter().map(|&l| int8_run(l)).collect();
            let mut refs: Vec<&mut dyn FnMut()> = vec![&mut f32_run];
            for f in &mut int8_runs {
                refs.push(f);
            }
            refs.push(&mut quant_only);
            let t = paired_us(&mut refs);
            print!("{name:<18} {:>9.2}", t[0].0);
            for &(us, ratio) in &t[1..t.len() - 1] {
                print!(" {us:>13.2} {ratio:>6.2}");
            }
            println!(" {:>9.2}", t[t.len() - 1].0);
        }
    }
}
