//! Portable int8 microkernel: plain integer loops, run by the blocked driver. Every SIMD level
//! must equal it bit for bit (the integer sums are exact and the epilogue is the same IEEE
//! operations), and it is itself tested against a float64 product of the dequantized operands.

use core::marker::PhantomData;

use super::super::driver::{self, Microkernel, Tile};
use super::super::relu;
use super::{Epilogue, GemmI8, Quad};

/// Tile rows and panels per single-row pass (a fallback; not tuned).
const MR: usize = 4;
const NP: usize = 4;

/// Between k-blocks the i32 partial sums wait in C as raw bits (C has the room, and the final
/// block overwrites them with the outputs).
#[inline(always)]
pub(crate) fn to_bits(x: i32) -> f32 {
    f32::from_bits(x as u32)
}

#[inline(always)]
pub(crate) fn from_bits(x: f32) -> i32 {
    x.to_bits() as i32
}

/// The epilogue of one output, the order every level follows.
#[inline(always)]
pub(crate) fn finish(e: &Epilogue, j: usize, acc: i32, relu_on: bool) -> f32 {
    let v = acc.wrapping_sub(e.offset[j]) as f32 * e.scale[j] + e.bias[j];
    if relu_on {
        relu(v)
    } else {
        v
    }
}

struct Scalar<'g>(PhantomData<&'g ()>);

impl<'g> Microkernel for Scalar<'g> {
    type Problem = GemmI8<'g>;
    type A = Quad;
    type E = Quad;

    #[inline(always)]
    unsafe fn tile<const R: usize, const NP: usize>(g: &GemmI8<'g>, t: &Tile<Quad, Quad>) {
        let mut acc = [[[0i32; 16]; NP]; R];
        if !t.first {
            for (i, acc) in acc.iter_mut().enumerate() {
                for (q, acc) in acc.iter_mut().enumerate() {
                    let cols = t.cols_of(q, NP);
                    // SAFETY: C holds this tile's partial sums (contract of `Microkernel::tile`).
                    let c =
                        unsafe { std::slice::from_raw_parts(t.c.add(i * t.ldc + q * 16), cols) };
                    for (a, &c) in acc.iter_mut().zip(c) {
                        *a = from_bits(c);
                    }
                }
            }
        }
        for r in 0..t.k {
            for q in 0..NP {
                // SAFETY: panel q has t.k rows of 16 quads (contract).
                let w =
                    unsafe { std::slice::from_raw_parts(t.w.add(q * t.panel_stride + r * 16), 16) };
                for (i, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: row i of A has t.k readable quads (contract).
                    let x = unsafe { *t.a.add(i * t.lda + r) };
                    for (acc, w) in acc[q].iter_mut().zip(w) {
                        for b in 0..4 {
                            *acc += x[b] as i32 * w[b] as i8 as i32;
                        }
                    }
                }
            }
        }
        for q in 0..NP {
            let cols = t.cols_of(q, NP);
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: row i of C has these `cols` writable floats (contract).
                let c =
                    unsafe { std::slice::from_raw_parts_mut(t.c.add(i * t.ldc + q * 16), cols) };
                if t.last {
                    let e = g.epilogue_terms(t.i0 + i, t.j0 / 16 + q);
                    for (j, c) in c.iter_mut().enumerate() {
                        *c = finish(&e, j, acc[q][j], g.relu);
                    }
                } else {
                    for (c, &a) in c.iter_mut().zip(&acc[q]) {
                        *c = to_bits(a);
                    }
                }
            }
        }
    }
}

/// # Safety
/// See [`super::gemm_i8`].
pub unsafe fn gemm(g: &GemmI8) {
    // SAFETY: forwarded contract; no CPU features needed.
    unsafe { driver::run::<Scalar, MR, NP>(g, &g.operands()) }
}
