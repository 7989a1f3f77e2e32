//! Every SIMD level against the scalar kernel, and the scalar kernel against an independent GEMM
//! (matrixmultiply on the unpacked matrix), over shapes that hit every remainder path.

use super::*;

/// Small deterministic generator (no rand dependency).
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

/// Packs a row-major `[k, n]` matrix into panel16 layout.
fn pack(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let panels = n.div_ceil(16);
    let mut out = vec![0.0; panels * k * 16];
    for r in 0..k {
        for c in 0..n {
            out[(c / 16) * k * 16 + r * 16 + c % 16] = w[r * n + c];
        }
    }
    out
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    lda: usize,
    ldc: usize,
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
}

fn case(m: usize, k: usize, n: usize, seed: u64) -> Case {
    let mut g = Lcg(seed);
    let (lda, ldc) = (k + 3, n + 5);
    Case {
        m,
        k,
        n,
        lda,
        ldc,
        a: (0..m * lda).map(|_| g.next()).collect(),
        w: (0..k * n).map(|_| g.next()).collect(),
        bias: (0..n).map(|_| g.next()).collect(),
    }
}

fn run(level: SimdLevel, c: &Case, w: Panels, bias: bool) -> Vec<f32> {
    run_with(level, c, w, bias, false)
}

fn run_with(level: SimdLevel, c: &Case, w: Panels, bias: bool, relu: bool) -> Vec<f32> {
    // Sentinel values show any write outside the n columns of each row.
    let mut out = vec![f32::NAN; c.m * c.ldc];
    let g = Gemm {
        m: c.m,
        k: c.k,
        n: c.n,
        a: c.a.as_ptr(),
        lda: c.lda,
        w,
        bias: bias.then_some(&c.bias[..]),
        c: out.as_mut_ptr(),
        ldc: c.ldc,
        relu,
    };
    // SAFETY: buffers sized for m rows at their strides; the level is available (callers check).
    unsafe { gemm(level, &g) };
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

fn max_rel_err(x: &[f32], y: &[f32], c: &Case) -> f32 {
    let mut worst = 0.0f32;
    for i in 0..c.m {
        for j in 0..c.n {
            let (a, b) = (x[i * c.ldc + j], y[i * c.ldc + j]);
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
    }
    worst
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
    (13, 64, 70),
    (17, 3, 5),
    (64, 128, 64),
    (19, 600, 35),
    (7, 513, 16),
    // Single leftover rows against groups of NP panels (4 or 8) plus a partial panel, with two
    // k-blocks in the tiles: 13 = 2·6+1 = 3·4+1, 17 = 2·8+1.
    (13, 530, 200),
    (17, 600, 260),
    (1, 40, 130),
];

#[test]
fn scalar_matches_matrixmultiply() {
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let c = case(m, k, n, s as u64 + 1);
        let ours = run(SimdLevel::Scalar, &c, Panels::F32(&pack(&c.w, k, n)), true);
        let mut reference = vec![f32::NAN; m * c.ldc];
        for i in 0..m {
            reference[i * c.ldc..i * c.ldc + n].copy_from_slice(&c.bias);
        }
        // SAFETY: dimensions and strides describe the buffers exactly.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                c.a.as_ptr(),
                c.lda as isize,
                1,
                c.w.as_ptr(),
                n as isize,
                1,
                1.0,
                reference.as_mut_ptr(),
                c.ldc as isize,
                1,
            );
        }
        let err = max_rel_err(&ours, &reference, &c);
        assert!(err < 1e-5, "shape {m}x{k}x{n}: error {err}");
    }
}

#[test]
fn every_level_matches_scalar_f32_and_f16() {
    let levels = SimdLevel::available();
    eprintln!("SIMD levels tested against scalar: {levels:?}");
    for &level in &levels[1..] {
        for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
            let c = case(m, k, n, 100 + s as u64);
            let packed = pack(&c.w, k, n);
            let halves: Vec<u16> = packed
                .iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect();
            for (bias, relu) in [(true, false), (false, false), (true, true)] {
                let want = run_with(SimdLevel::Scalar, &c, Panels::F32(&packed), bias, relu);
                let got = run_with(level, &c, Panels::F32(&packed), bias, relu);
                let err = max_rel_err(&got, &want, &c);
                assert!(err < 1e-5, "{level:?} f32 {m}x{k}x{n}: error {err}");
                let want = run_with(SimdLevel::Scalar, &c, Panels::F16(&halves), bias, relu);
                let got = run_with(level, &c, Panels::F16(&halves), bias, relu);
                let err = max_rel_err(&got, &want, &c);
                assert!(err < 1e-5, "{level:?} f16 {m}x{k}x{n}: error {err}");
            }
        }
    }
}

#[test]
fn fused_relu_equals_relu_applied_after() {
    // The kernels apply ReLU as tiles leave the registers; that must give, bit for bit, the
    // plain GEMM followed by `relu` on every element, NaN included (torch keeps NaN).
    for &level in &SimdLevel::available() {
        let mut clamped = 0;
        for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
            let mut c = case(m, k, n, 700 + s as u64);
            c.a[0] = f32::NAN; // row 0 becomes all NaN
            let packed = pack(&c.w, k, n);
            let plain = run(level, &c, Panels::F32(&packed), true);
            let fused = run_with(level, &c, Panels::F32(&packed), true, true);
            for i in 0..m {
                for j in 0..n {
                    let (want, got) = (relu(plain[i * c.ldc + j]), fused[i * c.ldc + j]);
                    assert!(
                        want.to_bits() == got.to_bits(),
                        "{level:?} {m}x{k}x{n} [{i},{j}]: {got} instead of {want}"
                    );
                }
            }
            assert!(
                fused[0].is_nan(),
                "{level:?}: ReLU turned NaN into a number"
            );
            clamped += (0..m * c.ldc)
                .filter(|&x| plain[x] < 0.0 && fused[x] == 0.0)
                .count();
        }
        assert!(clamped > 1000, "{level:?}: only {clamped} outputs clamped");
    }
}

#[test]
fn f16_widening_is_exact_for_every_value() {
    // The SIMD levels widen f16 in their own way (vcvtph2ps, or integer ops on NEON); every one
    // of the 65536 bit patterns must give the same f32 as the scalar path (NaNs stay NaN).
    let levels = SimdLevel::available();
    let k = 4096;
    let n = 16;
    let a_one = [1.0f32; 1];
    for &level in &levels {
        for start in (0..65536usize).step_by(k * n) {
            // A 1×1 "matrix" times a row of 16 halves, repeated: use k=1 per call for clarity.
            for chunk in 0..k {
                let base = start + chunk * n;
                if base >= 65536 {
                    break;
                }
                let halves: Vec<u16> = (base..base + n).map(|v| v as u16).collect();
                let mut out = [0f32; 16];
                let g = Gemm {
                    m: 1,
                    k: 1,
                    n,
                    a: a_one.as_ptr(),
                    lda: 1,
                    w: Panels::F16(&halves),
                    bias: None,
                    c: out.as_mut_ptr(),
                    ldc: n,
                    relu: false,
                };
                // SAFETY: 1 row of 1 float in, 16 floats out, 16 halves of weights.
                unsafe { gemm(level, &g) };
                for (j, &h) in halves.iter().enumerate() {
                    let want = f16_to_f32(h);
                    let got = out[j];
                    assert!(
                        (want.is_nan() && got.is_nan())
                            || want.to_bits() == got.to_bits()
                            || (want == 0.0 && got == 0.0),
                        "{level:?}: f16 {h:#06x} widened to {got}, expected {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_batch() {
    // Row i of an m-row call must equal, bit for bit, the same row scored alone: a sample's score
    // must not depend on which batch (or tile position) it arrives in.
    for &level in &SimdLevel::available() {
        for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
            let c = case(m, k, n, 500 + s as u64);
            let packed = pack(&c.w, k, n);
            let halves: Vec<u16> = packed
                .iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect();
            for w in [Panels::F32(&packed), Panels::F16(&halves)] {
                let all = run(level, &c, w, true);
                for i in 0..m {
                    let one = Case {
                        m: 1,
                        a: c.a[i * c.lda..(i + 1) * c.lda].to_vec(),
                        w: c.w.clone(),
                        bias: c.bias.clone(),
                        ..c
                    };
                    let alone = run(level, &one, w, true);
                    let (x, y) = (&all[i * c.ldc..i * c.ldc + n], &alone[..n]);
                    assert!(
                        x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{level:?} {m}x{k}x{n}: row {i} differs when scored alone"
                    );
                }
            }
        }
    }
}

#[test]
fn expected_levels_are_present() {
    // CI names the levels it means to exercise (PLE_EXPECT_SIMD=neon under qemu); a machine
    // without them must fail here instead of quietly testing the scalar path alone.
    let available = SimdLevel::available();
    if let Ok(list) = std::env::var("PLE_EXPECT_SIMD") {
        for name in list.split(',').filter(|s| !s.trim().is_empty()) {
            let level =
                SimdLevel::from_name(name).unwrap_or_else(|| panic!("unknown level {name}"));
            assert!(
                available.contains(&level),
                "{name} expected but not available: {available:?}"
            );
        }
    }
}

#[test]
fn activations_propagate_nan_like_torch() {
    use super::activation::{apply_row, ActArgs};
    let alpha = [0.3f32; 3];
    for act in [
        ActArgs::Relu,
        ActArgs::Sigmoid,
        ActArgs::Tanh,
        ActArgs::LeakyRelu(0.01),
        ActArgs::PRelu(&alpha[..1]),
        ActArgs::Softmax,
        ActArgs::DicePerSample {
            alpha: 0.3,
            eps: 1e-3,
        },
        ActArgs::DiceBn {
            scale: &alpha,
            shift: &alpha,
            alpha: &alpha,
        },
    ] {
        let mut row = [f32::NAN, 1.0, -1.0];
        apply_row(&act, &mut row);
        assert!(row[0].is_nan(), "NaN must stay NaN");
    }
}

#[test]
fn widen_f16_matches_scalar_for_every_value_at_every_level() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for &level in &SimdLevel::available() {
        // Odd lengths exercise the remainder path.
        for chunk in all.chunks(37) {
            let mut got = vec![0f32; chunk.len()];
            widen_f16(level, chunk, &mut got);
            for (&h, &g) in chunk.iter().zip(&got) {
                let want = f16_to_f32(h);
                assert!(
                    want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan()),
                    "{level:?} {h:#06x}"
                );
            }
        }
    }
}
