//! x86-64 kernels: AVX2+FMA+F16C (two 8-wide registers per 16-column panel row) and AVX-512F (one
//! 16-wide register). Register-blocked: a tile of MR rows × 16 columns stays in registers for the
//! whole k loop, so each panel row is loaded once per MR samples. f16 panels are widened with
//! `vcvtph2ps` as they are loaded; accumulation is always f32.

use core::arch::x86_64::*;

use super::{Gemm, Panels};

/// Rows per register tile. AVX2: 6 rows × 2 registers = 12 accumulators of 16.
const MR_AVX2: usize = 6;
/// AVX-512: 8 rows × 1 register = 8 accumulators of 32.
const MR_AVX512: usize = 8;
/// Panel rows per k-block: 256 × 64 B = 16 KiB of f32 weights, half of a 32 KiB L1.
const KC: usize = 256;

// ---------------------------------------------------------------------------------------------
// AVX2

trait Avx2Panel {
    type E;
    /// Loads one 16-wide panel row as two f32 vectors.
    unsafe fn load(p: *const Self::E) -> (__m256, __m256);
}

struct F32x16;
struct F16x16;

impl Avx2Panel for F32x16 {
    type E = f32;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> (__m256, __m256) {
        // SAFETY: the caller passes a pointer to 16 readable floats; AVX is enabled in the
        // calling `#[target_feature]` function this is inlined into.
        unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
}

impl Avx2Panel for F16x16 {
    type E = u16;
    #[inline(always)]
    unsafe fn load(p: *const u16) -> (__m256, __m256) {
        // SAFETY: 16 readable halves; F16C is enabled in the calling function.
        unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(8) as *const __m128i)),
            )
        }
    }
}

/// One MR × 16 tile over one k-block: rows `a[0..MR]`, panel rows `wp` (k of 16), result to `c`
/// (`cols` ≤ 16). The first k-block starts from zero, later ones continue from the partial sums
/// stored in `c`; the last adds the bias. Storing and reloading f32 partial sums changes nothing,
/// so every element is the same FMA chain over k as in the unblocked single-row path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const MR: usize, P: Avx2Panel>(
    k: usize,
    a: *const f32,
    lda: usize,
    wp: *const P::E,
    bias: &[f32; 16],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    last: bool,
) {
    // SAFETY: (whole body) rows 0..MR of A have k readable floats at stride lda, the panel has
    // k·16 readable elements, rows 0..MR of C have `cols` writable floats at stride ldc; all
    // guaranteed by `gemm_avx2`'s caller. AVX2/FMA/F16C are enabled by the caller's attribute.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); MR];
        let mut acc1 = [_mm256_setzero_ps(); MR];
        if !first {
            for i in 0..MR {
                let mut tmp = [0f32; 16];
                std::ptr::copy_nonoverlapping(c.add(i * ldc), tmp.as_mut_ptr(), cols);
                acc0[i] = _mm256_loadu_ps(tmp.as_ptr());
                acc1[i] = _mm256_loadu_ps(tmp.as_ptr().add(8));
            }
        }
        for r in 0..k {
            let (w0, w1) = P::load(wp.add(r * 16));
            for i in 0..MR {
                let av = _mm256_broadcast_ss(&*a.add(i * lda + r));
                acc0[i] = _mm256_fmadd_ps(av, w0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(av, w1, acc1[i]);
            }
        }
        let b0 = _mm256_loadu_ps(bias.as_ptr());
        let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
        for i in 0..MR {
            let (v0, v1) = if last {
                (_mm256_add_ps(acc0[i], b0), _mm256_add_ps(acc1[i], b1))
            } else {
                (acc0[i], acc1[i])
            };
            let dst = c.add(i * ldc);
            if cols == 16 {
                _mm256_storeu_ps(dst, v0);
                _mm256_storeu_ps(dst.add(8), v1);
            } else {
                let mut tmp = [0f32; 16];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
            }
        }
    }
}

#[inline(always)]
unsafe fn gemm_avx2_typed<P: Avx2Panel>(g: &Gemm, w: *const P::E) {
    let k = g.k;
    // k-blocks keep one block of a panel (KC rows of 16) in L1 while every row block of the tile
    // streams past it; without them a panel of a wide layer is re-read from L2 per row block.
    let mut kb = 0;
    while kb < k {
        let kc = (k - kb).min(KC);
        let (first, last) = (kb == 0, kb + kc == k);
        for p in 0..g.panels() {
            let j0 = p * 16;
            let cols = (g.n - j0).min(16);
            let bias = panel_bias(g.bias, j0, cols);
            // SAFETY: panel p starts at p·k·16 inside the weight slice (its length is checked by
            // `super::gemm`'s debug assertion and by the loader); row kb of it is kb·16 further.
            let wp = unsafe { w.add(p * k * 16 + kb * 16) };
            let mut i = 0;
            // SAFETY: (all calls below) rows i..i+MR are within 0..m; columns kb..kb+kc of A
            // and j0..j0+cols of C are within the caller's regions (see `super::gemm`).
            unsafe {
                while i + MR_AVX2 <= g.m {
                    let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                    tile_avx2::<MR_AVX2, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last);
                    i += MR_AVX2;
                }
                let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                match g.m - i {
                    // A single row is done panel-parallel after this loop.
                    0 | 1 => {}
                    2 => tile_avx2::<2, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    3 => tile_avx2::<3, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    4 => tile_avx2::<4, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    _ => tile_avx2::<5, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                }
            }
        }
        kb += kc;
    }
    if g.m % MR_AVX2 == 1 {
        let i = g.m - 1;
        // SAFETY: row i is within 0..m.
        let (a, c) = unsafe { (g.a.add(i * g.lda), g.c.add(i * g.ldc)) };
        let panels = g.panels();
        let mut p = 0;
        // SAFETY: (both loops) panels p..p+NP exist; same regions as above.
        unsafe {
            while p + 4 <= panels {
                row_avx2::<4, P>(g, a, w, p, c);
                p += 4;
            }
            while p < panels {
                row_avx2::<1, P>(g, a, w, p, c);
                p += 1;
            }
        }
    }
}

/// One row against NP panels at once. A single row has only two accumulators per panel, too few to
/// hide the FMA latency; NP panels give 2·NP independent chains while each output element still
/// sums over k in the same order as the tiled path, so a sample's result does not depend on the
/// batch it arrives in.
#[inline(always)]
unsafe fn row_avx2<const NP: usize, P: Avx2Panel>(
    g: &Gemm,
    a: *const f32,
    w: *const P::E,
    p0: usize,
    c: *mut f32,
) {
    let k = g.k;
    // SAFETY: (whole body) a has k readable floats; panels p0..p0+NP each have k·16 elements;
    // c has n writable floats; AVX2/FMA/F16C enabled by the calling function.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); NP];
        let mut acc1 = [_mm256_setzero_ps(); NP];
        for r in 0..k {
            let av = _mm256_broadcast_ss(&*a.add(r));
            for q in 0..NP {
                let (w0, w1) = P::load(w.add(((p0 + q) * k + r) * 16));
                acc0[q] = _mm256_fmadd_ps(av, w0, acc0[q]);
                acc1[q] = _mm256_fmadd_ps(av, w1, acc1[q]);
            }
        }
        for q in 0..NP {
            let j0 = (p0 + q) * 16;
            let cols = (g.n - j0).min(16);
            let bias = panel_bias(g.bias, j0, cols);
            let mut tmp = [0f32; 16];
            _mm256_storeu_ps(
                tmp.as_mut_ptr(),
                _mm256_add_ps(acc0[q], _mm256_loadu_ps(bias.as_ptr())),
            );
            _mm256_storeu_ps(
                tmp.as_mut_ptr().add(8),
                _mm256_add_ps(acc1[q], _mm256_loadu_ps(bias.as_ptr().add(8))),
            );
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), c.add(j0), cols);
        }
    }
}

/// # Safety
/// See [`super::gemm`]; the CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_avx2(g: &Gemm) {
    // SAFETY: forwarded contract; features enabled by this function's attribute.
    unsafe {
        match g.w {
            Panels::F32(w) => gemm_avx2_typed::<F32x16>(g, w.as_ptr()),
            Panels::F16(w) => gemm_avx2_typed::<F16x16>(g, w.as_ptr()),
        }
    }
}

fn panel_bias(bias: Option<&[f32]>, j0: usize, cols: usize) -> [f32; 16] {
    let mut b = [0f32; 16];
    if let Some(bias) = bias {
        b[..cols].copy_from_slice(&bias[j0..j0 + cols]);
    }
    b
}

// ---------------------------------------------------------------------------------------------
// AVX-512

trait Avx512Panel {
    type E;
    unsafe fn load(p: *const Self::E) -> __m512;
}

impl Avx512Panel for F32x16 {
    type E = f32;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: 16 readable floats; AVX-512F enabled in the calling function.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Avx512Panel for F16x16 {
    type E = u16;
    #[inline(always)]
    unsafe fn load(p: *const u16) -> __m512 {
        // SAFETY: 16 readable halves; AVX-512F enabled in the calling function.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<const MR: usize, P: Avx512Panel>(
    k: usize,
    a: *const f32,
    lda: usize,
    wp: *const P::E,
    bias: &[f32; 16],
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    last: bool,
) {
    // SAFETY: (whole body) same regions as `tile_avx2`; AVX-512F enabled by the caller.
    unsafe {
        let mask: __mmask16 = if cols == 16 {
            0xFFFF
        } else {
            (1u16 << cols) - 1
        };
        let mut acc = [_mm512_setzero_ps(); MR];
        if !first {
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_maskz_loadu_ps(mask, c.add(i * ldc));
            }
        }
        for r in 0..k {
            let w = P::load(wp.add(r * 16));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(i * lda + r)), w, *acc);
            }
        }
        let b = _mm512_loadu_ps(bias.as_ptr());
        for (i, acc) in acc.iter().enumerate() {
            let v = if last { _mm512_add_ps(*acc, b) } else { *acc };
            _mm512_mask_storeu_ps(c.add(i * ldc), mask, v);
        }
    }
}

#[inline(always)]
unsafe fn gemm_avx512_typed<P: Avx512Panel>(g: &Gemm, w: *const P::E) {
    let k = g.k;
    let mut kb = 0;
    while kb < k {
        let kc = (k - kb).min(KC);
        let (first, last) = (kb == 0, kb + kc == k);
        for p in 0..g.panels() {
            let j0 = p * 16;
            let cols = (g.n - j0).min(16);
            let bias = panel_bias(g.bias, j0, cols);
            // SAFETY: as in `gemm_avx2_typed`.
            let wp = unsafe { w.add(p * k * 16 + kb * 16) };
            let mut i = 0;
            // SAFETY: as in `gemm_avx2_typed`.
            unsafe {
                while i + MR_AVX512 <= g.m {
                    let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                    tile_avx512::<MR_AVX512, P>(
                        kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last,
                    );
                    i += MR_AVX512;
                }
                let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                match g.m - i {
                    // A single row is done panel-parallel after this loop.
                    0 | 1 => {}
                    2 => tile_avx512::<2, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    3 => tile_avx512::<3, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    4 => tile_avx512::<4, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    5 => tile_avx512::<5, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    6 => tile_avx512::<6, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                    _ => tile_avx512::<7, P>(kc, a, g.lda, wp, &bias, c, g.ldc, cols, first, last),
                }
            }
        }
        kb += kc;
    }
    if g.m % MR_AVX512 == 1 {
        let i = g.m - 1;
        // SAFETY: row i is within 0..m.
        let (a, c) = unsafe { (g.a.add(i * g.lda), g.c.add(i * g.ldc)) };
        let panels = g.panels();
        let mut p = 0;
        // SAFETY: (both loops) panels p..p+NP exist; same regions as above.
        unsafe {
            while p + 8 <= panels {
                row_avx512::<8, P>(g, a, w, p, c);
                p += 8;
            }
            while p < panels {
                row_avx512::<1, P>(g, a, w, p, c);
                p += 1;
            }
        }
    }
}

/// One row against NP panels at once (see `row_avx2`).
#[inline(always)]
unsafe fn row_avx512<const NP: usize, P: Avx512Panel>(
    g: &Gemm,
    a: *const f32,
    w: *const P::E,
    p0: usize,
    c: *mut f32,
) {
    let k = g.k;
    // SAFETY: (whole body) as in `row_avx2`; AVX-512F enabled by the calling function.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); NP];
        for r in 0..k {
            let av = _mm512_set1_ps(*a.add(r));
            for (q, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(av, P::load(w.add(((p0 + q) * k + r) * 16)), *acc);
            }
        }
        for (q, acc) in acc.iter().enumerate() {
            let j0 = (p0 + q) * 16;
            let cols = (g.n - j0).min(16);
            let bias = panel_bias(g.bias, j0, cols);
            let mask: __mmask16 = if cols == 16 {
                0xFFFF
            } else {
                (1u16 << cols) - 1
            };
            _mm512_mask_storeu_ps(
                c.add(j0),
                mask,
                _mm512_add_ps(*acc, _mm512_loadu_ps(bias.as_ptr())),
            );
        }
    }
}

/// # Safety
/// See [`super::gemm`]; the CPU must have AVX-512F, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub unsafe fn gemm_avx512(g: &Gemm) {
    // SAFETY: forwarded contract; features enabled by this function's attribute.
    unsafe {
        match g.w {
            Panels::F32(w) => gemm_avx512_typed::<F32x16>(g, w.as_ptr()),
            Panels::F16(w) => gemm_avx512_typed::<F16x16>(g, w.as_ptr()),
        }
    }
}

/// Widens binary16 to f32 with `vcvtph2ps`, 8 values at a time.
///
/// # Safety
/// The CPU must have AVX and F16C; `src` and `dst` must have equal lengths.
#[target_feature(enable = "avx,f16c")]
pub unsafe fn widen_f16(src: &[u16], dst: &mut [f32]) {
    let n = src.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n for both slices; unaligned loads and stores.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for j in i..n {
        dst[j] = super::f16_to_f32(src[j]);
    }
}
