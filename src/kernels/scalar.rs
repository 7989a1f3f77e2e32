//! Portable microkernel: plain loops, no intrinsics, run by the same blocked driver as the SIMD
//! levels. It is the reference every SIMD level is tested against, and is itself tested against an
//! independent GEMM (matrixmultiply).

use core::marker::PhantomData;

use super::driver::{self, Microkernel, Tile};
use super::{bias16, f16_to_f32, relu, Gemm, Panels};

/// Tile rows and panels per single-row pass (the scalar level is a fallback; not tuned).
const MR: usize = 4;
const NP: usize = 4;

/// A panel element widened to f32.
trait Element: Copy {
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_to_f32(self)
    }
}

struct Scalar<'g, E>(PhantomData<(&'g (), E)>);

impl<'g, E: Element> Microkernel for Scalar<'g, E> {
    type Problem = Gemm<'g>;
    type A = f32;
    type E = E;

    #[inline(always)]
    unsafe fn tile<const R: usize, const NP: usize>(g: &Gemm<'g>, t: &Tile<f32, E>) {
        let mut acc = [[[0f32; 16]; NP]; R];
        if !t.first {
            for (i, acc) in acc.iter_mut().enumerate() {
                for (q, acc) in acc.iter_mut().enumerate() {
                    let cols = t.cols_of(q, NP);
                    // SAFETY: C holds this tile's partial sums (contract of `Microkernel::tile`).
                    let c =
                        unsafe { std::slice::from_raw_parts(t.c.add(i * t.ldc + q * 16), cols) };
                    acc[..cols].copy_from_slice(c);
                }
            }
        }
        let mut wrow = [0f32; 16];
        for r in 0..t.k {
            for q in 0..NP {
                // SAFETY: panel q has t.k rows of 16 (contract).
                let w =
                    unsafe { std::slice::from_raw_parts(t.w.add(q * t.panel_stride + r * 16), 16) };
                for (d, &s) in wrow.iter_mut().zip(w) {
                    *d = s.to_f32();
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: row i of A has t.k readable floats (contract).
                    let x = unsafe { *t.a.add(i * t.lda + r) };
                    for (acc, &w) in acc[q].iter_mut().zip(&wrow) {
                        *acc += x * w;
                    }
                }
            }
        }
        for q in 0..NP {
            let cols = t.cols_of(q, NP);
            let mut tmp = [0f32; 16];
            let bias = bias16(g, t.j0 + q * 16, cols, &mut tmp);
            for (i, acc) in acc.iter_mut().enumerate() {
                let v = &mut acc[q];
                if t.last {
                    for (v, b) in v.iter_mut().zip(bias) {
                        *v += b;
                        if g.relu {
                            *v = relu(*v);
                        }
                    }
                }
                // SAFETY: row i of C has these `cols` writable floats (contract).
                let c =
                    unsafe { std::slice::from_raw_parts_mut(t.c.add(i * t.ldc + q * 16), cols) };
                c.copy_from_slice(&v[..cols]);
            }
        }
    }
}

/// # Safety
/// See [`super::gemm`].
pub unsafe fn gemm(g: &Gemm) {
    // SAFETY: forwarded contract; no CPU features needed.
    unsafe {
        match g.w {
            Panels::F32(w) => driver::run::<Scalar<f32>, MR, NP>(g, &g.operands(w.as_ptr())),
            Panels::F16(w) => driver::run::<Scalar<u16>, MR, NP>(g, &g.operands(w.as_ptr())),
        }
    }
}
