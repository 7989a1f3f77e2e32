//! Portable reference kernel: plain loops, no intrinsics. Every SIMD level is tested against it.

use super::{f16_to_f32, relu, Gemm, Panels};

/// # Safety
/// See [`super::gemm`].
pub unsafe fn gemm(g: &Gemm) {
    let k = g.k;
    for p in 0..g.panels() {
        let j0 = p * 16;
        let cols = (g.n - j0).min(16);
        let mut wrow = [0f32; 16];
        for i in 0..g.m {
            let mut acc = [0f32; 16];
            if let Some(b) = g.bias {
                acc[..cols].copy_from_slice(&b[j0..j0 + cols]);
            }
            // SAFETY: row i of A has k readable floats (caller contract).
            let a = unsafe { std::slice::from_raw_parts(g.a.add(i * g.lda), k) };
            for (r, &x) in a.iter().enumerate() {
                let at = p * k * 16 + r * 16;
                match g.w {
                    Panels::F32(w) => wrow.copy_from_slice(&w[at..at + 16]),
                    Panels::F16(w) => {
                        for (d, &s) in wrow.iter_mut().zip(&w[at..at + 16]) {
                            *d = f16_to_f32(s);
                        }
                    }
                }
                for (acc, &wv) in acc.iter_mut().zip(&wrow) {
                    *acc += x * wv;
                }
            }
            // SAFETY: row i of C has n writable floats, disjoint from A (caller contract).
            let c = unsafe { std::slice::from_raw_parts_mut(g.c.add(i * g.ldc + j0), cols) };
            c.copy_from_slice(&acc[..cols]);
            if g.relu {
                c.iter_mut().for_each(|x| *x = relu(*x));
            }
        }
    }
}
