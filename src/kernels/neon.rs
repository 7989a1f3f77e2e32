//! AArch64 NEON kernel: four 4-wide registers per 16-column panel row, MR = 4 rows. f16 panels are
//! widened with integer operations (exact for every value, subnormals and inf/NaN included), so
//! the kernel needs only baseline NEON, not the FP16 extension.

use core::arch::aarch64::*;

use super::{relu, Gemm, Panels};

const MR: usize = 4;

trait NeonPanel {
    type E;
    unsafe fn load(p: *const Self::E) -> [float32x4_t; 4];
}

struct F32x16;
struct F16x16;

impl NeonPanel for F32x16 {
    type E = f32;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [float32x4_t; 4] {
        // SAFETY: 16 readable floats (caller).
        unsafe {
            [
                vld1q_f32(p),
                vld1q_f32(p.add(4)),
                vld1q_f32(p.add(8)),
                vld1q_f32(p.add(12)),
            ]
        }
    }
}

/// Exact binary16 → binary32 on four lanes (F. Giesen's method): shift the exponent and mantissa
/// into place, rescale by 2^112 (which also normalises subnormals), then restore inf/NaN and sign.
#[inline(always)]
unsafe fn widen4(h: uint16x4_t) -> float32x4_t {
    // SAFETY: pure register arithmetic; NEON is baseline on AArch64.
    unsafe {
        let h = vmovl_u16(h);
        let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
        let bits = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7FFF)));
        let scaled = vmulq_f32(
            vreinterpretq_f32_u32(bits),
            vdupq_n_f32(f32::from_bits(0x7780_0000)),
        );
        let infnan = vcgeq_f32(scaled, vdupq_n_f32(65536.0));
        let fixed = vorrq_u32(
            vreinterpretq_u32_f32(scaled),
            vandq_u32(infnan, vdupq_n_u32(0x7F80_0000)),
        );
        vreinterpretq_f32_u32(vorrq_u32(fixed, sign))
    }
}

impl NeonPanel for F16x16 {
    type E = u16;
    #[inline(always)]
    unsafe fn load(p: *const u16) -> [float32x4_t; 4] {
        // SAFETY: 16 readable halves (caller).
        unsafe {
            [
                widen4(vld1_u16(p)),
                widen4(vld1_u16(p.add(4))),
                widen4(vld1_u16(p.add(8))),
                widen4(vld1_u16(p.add(12))),
            ]
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, P: NeonPanel>(
    k: usize,
    a: *const f32,
    lda: usize,
    wp: *const P::E,
    bias: &[f32; 16],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    apply_relu: bool,
) {
    // SAFETY: (whole body) same regions as the x86 tiles, guaranteed by `gemm`'s caller.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        for r in 0..k {
            let w = P::load(wp.add(r * 16));
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = vdupq_n_f32(*a.add(i * lda + r));
                for q in 0..4 {
                    acc[q] = vfmaq_f32(acc[q], av, w[q]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let mut tmp = [0f32; 16];
            for q in 0..4 {
                let b = vld1q_f32(bias.as_ptr().add(4 * q));
                vst1q_f32(tmp.as_mut_ptr().add(4 * q), vaddq_f32(acc[q], b));
            }
            if apply_relu {
                tmp.iter_mut().for_each(|x| *x = relu(*x));
            }
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), c.add(i * ldc), cols);
        }
    }
}

#[inline(always)]
unsafe fn gemm_typed<P: NeonPanel>(g: &Gemm, w: *const P::E) {
    let k = g.k;
    for p in 0..g.panels() {
        let j0 = p * 16;
        let cols = (g.n - j0).min(16);
        let mut bias = [0f32; 16];
        if let Some(b) = g.bias {
            bias[..cols].copy_from_slice(&b[j0..j0 + cols]);
        }
        // SAFETY: panel p lies inside the weight slice.
        let wp = unsafe { w.add(p * k * 16) };
        let mut i = 0;
        // SAFETY: rows stay within 0..m; pointers within the caller's regions.
        unsafe {
            while i + MR <= g.m {
                tile::<MR, P>(
                    k,
                    g.a.add(i * g.lda),
                    g.lda,
                    wp,
                    &bias,
                    g.c.add(i * g.ldc + j0),
                    g.ldc,
                    cols,
                    g.relu,
                );
                i += MR;
            }
            let (a, c) = (g.a.add(i * g.lda), g.c.add(i * g.ldc + j0));
            match g.m - i {
                0 => {}
                1 => tile::<1, P>(k, a, g.lda, wp, &bias, c, g.ldc, cols, g.relu),
                2 => tile::<2, P>(k, a, g.lda, wp, &bias, c, g.ldc, cols, g.relu),
                _ => tile::<3, P>(k, a, g.lda, wp, &bias, c, g.ldc, cols, g.relu),
            }
        }
    }
}

/// # Safety
/// See [`super::gemm`].
#[target_feature(enable = "neon")]
pub unsafe fn gemm(g: &Gemm) {
    // SAFETY: forwarded contract.
    unsafe {
        match g.w {
            Panels::F32(w) => gemm_typed::<F32x16>(g, w.as_ptr()),
            Panels::F16(w) => gemm_typed::<F16x16>(g, w.as_ptr()),
        }
    }
}
