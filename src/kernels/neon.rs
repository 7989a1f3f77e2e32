//! AArch64 NEON microkernel for the blocked driver (`super::driver`): four 4-wide registers per
//! 16-column panel row. f16 panels are widened with integer operations (exact for every value,
//! subnormals and inf/NaN included), so the kernel needs only baseline NEON, not the FP16
//! extension.

use core::arch::aarch64::*;
use core::marker::PhantomData;

use super::driver::{self, Microkernel, Tile};
use super::{bias16, Gemm, Panels};

/// Tile rows: 4 rows × 4 registers = 16 accumulators (of 32 registers).
const MR: usize = 4;
/// Panels per single-row pass: 16 accumulators as well.
const NP: usize = 4;

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

struct Neon<'g, P>(PhantomData<(&'g (), P)>);

impl<'g, P: NeonPanel> Microkernel for Neon<'g, P> {
    type Problem = Gemm<'g>;
    type A = f32;
    type E = P::E;

    #[inline(always)]
    unsafe fn tile<const R: usize, const NP: usize>(g: &Gemm<'g>, t: &Tile<f32, P::E>) {
        // SAFETY: (whole body) the regions are those of `Microkernel::tile`'s contract; NEON is
        // baseline on AArch64.
        unsafe {
            let mut acc = [[[vdupq_n_f32(0.0); 4]; NP]; R];
            if !t.first {
                for (i, acc) in acc.iter_mut().enumerate() {
                    for (q, acc) in acc.iter_mut().enumerate() {
                        let mut tmp = [0f32; 16];
                        let src = t.c.add(i * t.ldc + q * 16);
                        std::ptr::copy_nonoverlapping(src, tmp.as_mut_ptr(), t.cols_of(q, NP));
                        for (l, acc) in acc.iter_mut().enumerate() {
                            *acc = vld1q_f32(tmp.as_ptr().add(4 * l));
                        }
                    }
                }
            }
            let rows: [*const f32; R] = std::array::from_fn(|i| t.a.add(i * t.lda));
            let panels: [*const P::E; NP] = std::array::from_fn(|q| t.w.add(q * t.panel_stride));
            for r in 0..t.k {
                for q in 0..NP {
                    let w = P::load(panels[q].add(r * 16));
                    for i in 0..R {
                        let av = vdupq_n_f32(*rows[i].add(r));
                        for l in 0..4 {
                            acc[i][q][l] = vfmaq_f32(acc[i][q][l], av, w[l]);
                        }
                    }
                }
            }
            let zero = vdupq_n_f32(0.0);
            for q in 0..NP {
                let cols = t.cols_of(q, NP);
                let mut tmp = [0f32; 16];
                let bias = bias16(g, t.j0 + q * 16, cols, &mut tmp);
                for (i, acc) in acc.iter().enumerate() {
                    let mut tmp = [0f32; 16];
                    for (l, &v) in acc[q].iter().enumerate() {
                        let mut v = v;
                        if t.last {
                            v = vaddq_f32(v, vld1q_f32(bias.as_ptr().add(4 * l)));
                            if g.relu {
                                // `x < 0 ? 0 : x`, as `super::relu`: keeps NaN and −0.0.
                                v = vbslq_f32(vcltq_f32(v, zero), zero, v);
                            }
                        }
                        vst1q_f32(tmp.as_mut_ptr().add(4 * l), v);
                    }
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), t.c.add(i * t.ldc + q * 16), cols);
                }
            }
        }
    }
}

/// # Safety
/// See [`super::gemm`].
#[target_feature(enable = "neon")]
pub unsafe fn gemm(g: &Gemm) {
    // SAFETY: forwarded contract; NEON enabled by this function's attribute.
    unsafe {
        match g.w {
            Panels::F32(w) => driver::run::<Neon<F32x16>, MR, NP>(g, &g.operands(w.as_ptr())),
            Panels::F16(w) => driver::run::<Neon<F16x16>, MR, NP>(g, &g.operands(w.as_ptr())),
        }
    }
}
