//! The scalar int8 kernel against a float64 product of the dequantized operands, every SIMD level
//! against the scalar one bit for bit, extreme codes (no overflow, no saturation), batch
//! invariance, the activation quantizer and the weight checks.

use super::*;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A layer and a batch: f32 inputs (stride `lda`), row-major `[k, n]` weights, bias.
struct Case {
    m: usize,
    k: usize,
    n: usize,
    lda: usize,
    ldc: usize,
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    /// Column scales of the quantizer (equalization), if any.
    r: Option<Vec<f32>>,
}

fn case(m: usize, k: usize, n: usize, seed: u64) -> Case {
    let mut g = Lcg(seed);
    let lda = k + 3;
    // Rows of every sign pattern: mixed, all positive (zero point 0, as after ReLU), all negative.
    let a = (0..m * lda)
        .map(|x| match (x / lda) % 3 {
            0 => g.next() * 3.0,
            1 => g.next().abs(),
            _ => -g.next().abs() * 0.5,
        })
        .collect();
    Case {
        m,
        k,
        n,
        lda,
        ldc: n + 5,
        a,
        w: (0..k * n).map(|_| g.next() * 0.2).collect(),
        bias: (0..n).map(|_| g.next()).collect(),
        r: None,
    }
}

/// `case` with column scales spanning 2^-8..2^8 (and an input with as uneven columns, as x0 is).
fn scaled_case(m: usize, k: usize, n: usize, seed: u64) -> Case {
    let mut c = case(m, k, n, seed);
    let r: Vec<f32> = (0..k)
        .map(|j| (((j * 7) % 17) as f32 - 8.0).exp2())
        .collect();
    for row in c.a.chunks_exact_mut(c.lda) {
        for (x, r) in row.iter_mut().zip(&r) {
            *x /= r;
        }
    }
    c.r = Some(r);
    c
}

struct Quant {
    ld: usize,
    codes: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

fn quantize(c: &Case) -> Quant {
    quantize_at(I8Level::Scalar, c)
}

fn quantize_at(level: I8Level, c: &Case) -> Quant {
    let ld = row_bytes(c.k) + 8;
    let mut q = Quant {
        ld,
        codes: vec![0xAA; c.m * ld],
        scale: vec![0.0; c.m],
        zero: vec![0; c.m],
    };
    // SAFETY: `a` holds m rows of k floats at stride lda.
    unsafe {
        quantize_rows(
            level,
            c.m,
            c.k,
            c.a.as_ptr(),
            c.lda,
            c.r.as_deref(),
            &mut q.codes,
            ld,
            &mut q.scale,
            &mut q.zero,
        )
    };
    q
}

fn run(level: I8Level, c: &Case, q: &Quant, w: &[u8], bias: bool, relu: bool) -> Vec<f32> {
    // Sentinel values show any write outside the n columns of each row.
    let mut out = vec![f32::NAN; c.m * c.ldc];
    let g = GemmI8 {
        m: c.m,
        k: c.k,
        n: c.n,
        a: Quantized {
            codes: &q.codes,
            ld: q.ld,
            scale: &q.scale,
            zero: &q.zero,
        },
        w,
        bias: bias.then_some(&c.bias[..]),
        c: out.as_mut_ptr(),
        ldc: c.ldc,
        relu,
    };
    // SAFETY: buffers sized for m rows at their strides; the level is available (callers check).
    unsafe { gemm_i8(level, &g) };
    for i in 0..c.m {
        assert!(
            out[i * c.ldc + c.n..(i + 1) * c.ldc]
                .iter()
                .all(|x| x.is_nan()),
            "wrote past n"
        );
    }
    out
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 16),
    (1, 33, 17),
    (2, 64, 31),
    (3, 5, 48),
    (5, 100, 1),
    (6, 16, 16),
    (7, 429, 40),
    (8, 13, 33),
    (9, 3, 2),
    (13, 64, 70),
    (17, 3, 5),
    (64, 128, 64),
    (19, 600, 35),
    // Two and three k-blocks (512 groups of 4 = 2048 k per block).
    (7, 2049, 16),
    (13, 4100, 50),
    // Single leftover rows against groups of NP panels (4 or 8) plus a partial panel.
    (13, 530, 200),
    (17, 600, 260),
    (25, 40, 130),
    (1, 40, 130),
    // AMX: full 16-row blocks in pairs and alone, rows left after them, k under 64, k a multiple
    // of 64, k with 1..15 leftover groups of 4, several panels and a partial one.
    (16, 3, 5),
    (16, 64, 16),
    (32, 660, 40),
    (33, 130, 33),
    (48, 63, 17),
    (47, 2049, 20),
    (64, 1024, 64),
    (100, 429, 70),
];

#[test]
fn scalar_matches_float64_of_the_dequantized_operands() {
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let c = case(m, k, n, s as u64 + 1);
        let w = quantize_weights(&c.w, k, n).unwrap();
        let q = quantize(&c);
        let ours = run(I8Level::Scalar, &c, &q, &w, true, false);
        let pb = panel_bytes(k);
        for i in 0..m {
            for j in 0..n {
                let panel = &w[(j / 16) * pb..];
                let at = |o: usize| <[u8; 4]>::try_from(&panel[o..o + 4]).unwrap();
                let sw = f32::from_le_bytes(at((j % 16) * 4)) as f64;
                let mut want = c.bias[j] as f64;
                for r in 0..k {
                    let code = q.codes[i * q.ld + r] as f64 - q.zero[i] as f64;
                    let wq = panel[PANEL_HEADER + (r / 4) * 64 + (j % 16) * 4 + r % 4] as i8;
                    want += code * q.scale[i] as f64 * wq as f64 * sw;
                }
                let got = ours[i * c.ldc + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{m}x{k}x{n} [{i},{j}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn int8_is_close_to_f32() {
    // The quantization error itself, against the unquantized float64 product: each term's error
    // is at most half a step of either operand, so the sum's is below
    // Σ_r (|a_r|·Δw/2 + |w_r|·Δa/2 + Δa·Δw/4).
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let c = case(m, k, n, 50 + s as u64);
        let w = quantize_weights(&c.w, k, n).unwrap();
        let q = quantize(&c);
        let ours = run(I8Level::Scalar, &c, &q, &w, true, false);
        for i in 0..m {
            let da = q.scale[i] as f64;
            for j in 0..n {
                let amax = (0..k).map(|r| c.w[r * n + j].abs()).fold(0f32, f32::max) as f64;
                let dw = amax / 127.0;
                let (mut want, mut bound) = (c.bias[j] as f64, 1e-5);
                for r in 0..k {
                    let (x, y) = (c.a[i * c.lda + r] as f64, c.w[r * n + j] as f64);
                    want += x * y;
                    bound += x.abs() * dw / 2.0 + y.abs() * da / 2.0 + da * dw / 4.0;
                }
                let got = ours[i * c.ldc + j] as f64;
                assert!(
                    (got - want).abs() <= bound * 1.001,
                    "{m}x{k}x{n} [{i},{j}]: {got} vs {want} (bound {bound})"
                );
            }
        }
    }
}

#[test]
fn every_level_equals_scalar_bit_for_bit() {
    let levels = I8Level::available();
    eprintln!("int8 levels tested against scalar: {levels:?}");
    for missing in [
        I8Level::Avx2,
        I8Level::AvxVnni,
        I8Level::Avx512Vnni,
        I8Level::Amx,
    ] {
        if !levels.contains(&missing) {
            eprintln!(
                "note: this CPU lacks {}; its int8 kernel is not tested here",
                missing.name()
            );
        }
    }
    for (&level, scaled) in levels[1..].iter().flat_map(|l| [(l, false), (l, true)]) {
        for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
            let c = if scaled {
                scaled_case(m, k, n, 100 + s as u64)
            } else {
                case(m, k, n, 100 + s as u64)
            };
            let w = quantize_weights(&c.w, k, n).unwrap();
            let q = quantize(&c);
            let ql = quantize_at(level, &c);
            assert!(
                q.codes == ql.codes && q.zero == ql.zero && q.scale == ql.scale,
                "{level:?} {m}x{k}x{n} scaled {scaled}: activation codes differ from scalar"
            );
            for (bias, relu) in [(true, false), (false, false), (true, true)] {
                let want = run(I8Level::Scalar, &c, &q, &w, bias, relu);
                let got = run(level, &c, &ql, &w, bias, relu);
                for x in 0..want.len() {
                    assert!(
                        want[x].to_bits() == got[x].to_bits(),
                        "{level:?} {m}x{k}x{n} bias {bias} relu {relu} at {x}: {} vs {}",
                        got[x],
                        want[x]
                    );
                }
            }
        }
    }
}

#[test]
fn extreme_codes_neither_overflow_nor_saturate() {
    // Every code at its extreme (activations 127, weights ±127) over the largest k: the s16 pair
    // sums of `vpmaddubsw` reach 2·127·127 = 32258 and the i32 sums 127·127·65536 ≈ 1.06e9.
    // Any saturation or overflow would move the result far from the exact value.
    let (m, k, n) = (3, MAX_K, 20);
    let mut c = case(m, k, n, 9);
    for i in 0..m {
        let v = [1.0, -1.0, 0.5][i];
        c.a[i * c.lda..i * c.lda + k].fill(v);
    }
    for r in 0..k {
        for j in 0..n {
            // Columns alternate all +1, all −1, and ±1 by k parity.
            c.w[r * n + j] = match j % 3 {
                0 => 1.0,
                1 => -1.0,
                _ => [1.0, -1.0][r % 2],
            };
        }
    }
    let w = quantize_weights(&c.w, k, n).unwrap();
    let q = quantize(&c);
    assert_eq!(q.codes[0], 127);
    assert_eq!((q.codes[q.ld], q.zero[1]), (0, 127));
    for &level in &I8Level::available() {
        let got = run(level, &c, &q, &w, false, false);
        for i in 0..m {
            let v = [1.0, -1.0, 0.5][i];
            for j in 0..n {
                let want = match j % 3 {
                    0 => v * k as f64,
                    1 => -v * k as f64,
                    _ => 0.0,
                };
                let got = got[i * c.ldc + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{level:?} [{i},{j}]: {got} instead of {want}"
                );
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_batch() {
    for &level in &I8Level::available() {
        for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
            let c = case(m, k, n, 500 + s as u64);
            let w = quantize_weights(&c.w, k, n).unwrap();
            let all = run(level, &c, &quantize_at(level, &c), &w, true, true);
            for i in 0..m {
                let one = Case {
                    m: 1,
                    a: c.a[i * c.lda..(i + 1) * c.lda].to_vec(),
                    w: Vec::new(),
                    bias: c.bias.clone(),
                    r: c.r.clone(),
                    ..c
                };
                let alone = run(level, &one, &quantize_at(level, &one), &w, true, true);
                let (x, y) = (&all[i * c.ldc..i * c.ldc + n], &alone[..n]);
                assert!(
                    x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{level:?} {m}x{k}x{n}: row {i} differs when scored alone"
                );
            }
        }
    }
}

#[test]
fn quantizer_rows_zero_nan_and_round_trip() {
    let k = 37;
    let mut c = case(4, k, 3, 77);
    c.a[c.lda..c.lda + k].fill(0.0);
    c.a[2 * c.lda + 5] = f32::NAN;
    c.a[3 * c.lda + 1] = f32::INFINITY;
    let q = quantize(&c);
    // Row 0 round-trips within half a step; 0.0 maps to a code exactly.
    let (s, z) = (q.scale[0], q.zero[0]);
    assert!(s > 0.0 && (0..=127).contains(&z));
    for r in 0..k {
        let x = c.a[r];
        let back = (q.codes[r] as i32 - z) as f32 * s;
        assert!((back - x).abs() <= s * 0.5001, "{x} came back as {back}");
    }
    assert!(
        q.codes[k..row_bytes(k)].iter().all(|&b| b == 0),
        "padding not zero"
    );
    assert_eq!((q.scale[1], q.zero[1]), (0.0, 0));
    assert!(q.scale[2].is_nan() && q.scale[3].is_nan());
    let w = quantize_weights(&c.w, k, c.n).unwrap();
    for &level in &I8Level::available() {
        let out = run(level, &c, &quantize_at(level, &c), &w, true, false);
        for j in 0..c.n {
            assert_eq!(
                out[c.ldc + j],
                c.bias[j],
                "{level:?}: a zero row gives the bias"
            );
            assert!(out[2 * c.ldc + j].is_nan() && out[3 * c.ldc + j].is_nan());
        }
    }
}

#[test]
fn weight_checks_accept_the_quantizer_and_refuse_each_corruption() {
    let (k, n) = (10, 20);
    let c = case(1, k, n, 3);
    let good = quantize_weights(&c.w, k, n).unwrap();
    check_weights(&good, k, n).unwrap();
    let pb = panel_bytes(k);
    let put = |w: &mut Vec<u8>, at: usize, v: [u8; 4]| w[at..at + 4].copy_from_slice(&v);
    let code_at =
        move |p: usize, r: usize, c: usize| p * pb + PANEL_HEADER + (r / 4) * 64 + c * 4 + r % 4;
    type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "zero scale",
            Box::new(move |w| put(w, 4, 0f32.to_le_bytes())),
        ),
        (
            "NaN scale",
            Box::new(move |w| put(w, 4, f32::NAN.to_le_bytes())),
        ),
        (
            "infinite scale",
            Box::new(move |w| put(w, 4, f32::INFINITY.to_le_bytes())),
        ),
        (
            "negative scale",
            Box::new(move |w| put(w, 4, (-0.5f32).to_le_bytes())),
        ),
        // Column 19 is the last real one; panel 1 columns 4.. are padding.
        (
            "padding scale",
            Box::new(move |w| put(w, pb + 4 * 4, 1f32.to_le_bytes())),
        ),
        (
            "column sum",
            Box::new(move |w| {
                let at = 64 + 8;
                let s = i32::from_le_bytes(w[at..at + 4].try_into().unwrap());
                put(w, at, (s + 1).to_le_bytes())
            }),
        ),
        ("code -128", Box::new(move |w| w[code_at(0, 3, 5)] = 0x80)),
        ("padding k", Box::new(move |w| w[code_at(0, 11, 5)] = 1)),
        ("padding column", Box::new(move |w| w[code_at(1, 2, 7)] = 1)),
        (
            "length",
            Box::new(|w| {
                w.pop();
            }),
        ),
    ];
    for (what, mutate) in cases {
        let mut w = good.clone();
        mutate(&mut w);
        let err = check_weights(&w, k, n).expect_err(what);
        eprintln!("{what}: {err}");
    }
    assert!(check_weights(&good, MAX_K + 1, n).is_err());
    assert!(quantize_weights(&[f32::NAN], 1, 1).is_err());
}

#[test]
fn column_scales_quantize_the_scaled_values() {
    // Independent reference: the unscaled quantizer run on x∘r, computed here in f32 (the same
    // single product); codes, scales and zero points must be identical at every level. Includes
    // a column whose product overflows (scale NaN) and a NaN input.
    let levels = I8Level::available();
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let mut c = scaled_case(m.max(3), k, n, 700 + s as u64);
        c.a[c.lda + k / 2] = f32::NAN;
        let r = c.r.clone().unwrap();
        // Column 2 has r = 64: f32::MAX times it overflows, so the row's scale is NaN.
        let overflow = k > 2;
        if overflow {
            c.a[2 * c.lda + 2] = f32::MAX;
        }
        let mut pre = Case {
            r: None,
            a: c.a.clone(),
            w: Vec::new(),
            bias: Vec::new(),
            ..c
        };
        for row in pre.a.chunks_exact_mut(c.lda) {
            for (x, r) in row.iter_mut().zip(&r) {
                *x *= r;
            }
        }
        let want = quantize(&pre);
        assert!(want.scale[1].is_nan() && (!overflow || want.scale[2].is_nan()));
        for &level in &levels {
            let got = quantize_at(level, &c);
            assert!(
                got.codes == want.codes
                    && got.zero == want.zero
                    && got
                        .scale
                        .iter()
                        .zip(&want.scale)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{level:?} {m}x{k}x{n}: scaled codes differ from the codes of x∘r"
            );
        }
    }
}

#[test]
fn equalization_keeps_small_columns_that_one_scale_erases() {
    // x0-like rows: half the columns ~100 (raw dense features), half ~0.01 (embeddings). One
    // scale per row gives the small columns a step of ~1.6, so their contribution is lost;
    // with r = 1/(column magnitude) and weights diag(1/r)·W, every column keeps 7 bits.
    let (m, k, n) = (8, 64, 32);
    let mut c = case(m, k, n, 11);
    let mag: Vec<f32> = (0..k)
        .map(|j| if j % 2 == 0 { 100.0 } else { 0.01 })
        .collect();
    for row in c.a.chunks_exact_mut(c.lda) {
        for (x, g) in row.iter_mut().zip(&mag) {
            *x *= g;
        }
    }
    // Weights that make both halves matter equally.
    for (row, g) in c.w.chunks_exact_mut(n).zip(&mag) {
        for w in row {
            *w /= g;
        }
    }
    let exact = |i: usize, o: usize| -> f64 {
        let mut y = c.bias[o] as f64;
        for j in 0..k {
            y += c.a[i * c.lda + j] as f64 * c.w[j * n + o] as f64;
        }
        y
    };
    let mean_err = |c: &Case, w: &[f32]| -> f64 {
        let w8 = quantize_weights(w, k, n).unwrap();
        let out = run(I8Level::Scalar, c, &quantize(c), &w8, true, false);
        let mut e = 0.0;
        for i in 0..m {
            for o in 0..n {
                e += (out[i * c.ldc + o] as f64 - exact(i, o)).abs();
            }
        }
        e / (m * n) as f64
    };
    let plain = mean_err(&c, &c.w);
    let r: Vec<f32> = mag.iter().map(|&x| 1.0 / x).collect();
    let scaled_w: Vec<f32> = (0..k * n).map(|x| c.w[x] / r[x / n]).collect();
    let eq = Case {
        r: Some(r),
        a: c.a.clone(),
        w: Vec::new(),
        bias: c.bias.clone(),
        ..c
    };
    let equalized = mean_err(&eq, &scaled_w);
    eprintln!("mean |error|: one scale per row {plain:.3e}, equalized {equalized:.3e}");
    assert!(equalized * 20.0 < plain, "{equalized} vs {plain}");
}

#[test]
fn level_names_round_trip() {
    for &level in &I8Level::available() {
        assert_eq!(I8Level::from_name(level.name()), Some(level));
    }
    assert_eq!(I8Level::from_name("amx"), Some(I8Level::Amx));
    assert_eq!(I8Level::from_name("avx512"), None);
}
