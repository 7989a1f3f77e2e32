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
/// Panel rows per k-block: 512 × 64 B = 32 KiB of f32 weights (16 KiB of f16), so the blocks
/// stay in L1/L2 while the row tiles pass over them, and the layers of the benchmark models
/// (k ≤ 660) need at most two blocks. Chosen by measurement, paired against ONNX Runtime on the
/// whole models at batch 256: 512 was 4–8% faster than 256, and ahead of 128, 384, 768 and 1024.
const KC: usize = 512;

// ---------------------------------------------------------------------------------------------
// AVX2

trait Avx2Panel {
    type E;
    /// Whether the tile loop takes two k-steps per iteration.
    const UNROLL_K: bool;
    /// Loads one 16-wide panel row as two f32 vectors.
    unsafe fn load(p: *const Self::E) -> (__m256, __m256);
}

struct F32x16;
struct F16x16;

impl Avx2Panel for F32x16 {
    type E = f32;
    const UNROLL_K: bool = true;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> (__m256, __m256) {
        // SAFETY: the caller passes a pointer to 16 readable floats; AVX is enabled in the
        // calling `#[target_feature]` function this is inlined into.
        unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
}

impl Avx2Panel for F16x16 {
    type E = u16;
    const UNROLL_K: bool = false;
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
/// stored in `c`; the last (`last` is `Some`) finishes the tile (bias, ReLU). Storing and reloading f32 partial sums changes nothing,
/// so every element is the same FMA chain over k as in the unblocked single-row path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const MR: usize, P: Avx2Panel>(
    k: usize,
    a: *const f32,
    lda: usize,
    wp: *const P::E,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    last: Option<&Finish>,
) {
    // SAFETY: (whole body) rows 0..MR of A have k readable floats at stride lda, the panel has
    // k·16 readable elements, rows 0..MR of C have `cols` writable floats at stride ldc; all
    // guaranteed by `gemm_avx2`'s caller. AVX2/FMA/F16C are enabled by the caller's attribute.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); MR];
        let mut acc1 = [_mm256_setzero_ps(); MR];
        if !first {
            for i in 0..MR {
                let src = c.add(i * ldc);
                if cols == 16 {
                    acc0[i] = _mm256_loadu_ps(src);
                    acc1[i] = _mm256_loadu_ps(src.add(8));
                } else {
                    let mut tmp = [0f32; 16];
                    std::ptr::copy_nonoverlapping(src, tmp.as_mut_ptr(), cols);
                    acc0[i] = _mm256_loadu_ps(tmp.as_ptr());
                    acc1[i] = _mm256_loadu_ps(tmp.as_ptr().add(8));
                }
            }
        }
        // One base pointer per row, so each broadcast is a single (base + r·4) load rather than
        // a chain of stride additions the compiler would otherwise recompute every iteration.
        let rows: [*const f32; MR] = std::array::from_fn(|i| a.add(i * lda));
        macro_rules! step {
            ($r:expr) => {{
                let (w0, w1) = P::load(wp.add($r * 16));
                for i in 0..MR {
                    let av = _mm256_broadcast_ss(&*rows[i].add($r));
                    acc0[i] = _mm256_fmadd_ps(av, w0, acc0[i]);
                    acc1[i] = _mm256_fmadd_ps(av, w1, acc1[i]);
                }
            }};
        }
        // f32: two k-steps per iteration cut the loop overhead (measured +5–10% at batch 256);
        // f16: the same unrolling runs out of registers for the widened rows and halves the
        // speed, so one step. Either way each accumulator sums over k in order.
        let mut r = 0;
        if P::UNROLL_K {
            while r + 2 <= k {
                step!(r);
                step!(r + 1);
                r += 2;
            }
        }
        while r < k {
            step!(r);
            r += 1;
        }
        for i in 0..MR {
            let (v0, v1) = match last {
                Some(f) => f.avx2(acc0[i], acc1[i]),
                None => (acc0[i], acc1[i]),
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
    // Panel by panel, and within a panel k-block by k-block: one block (KC rows of 16) stays in
    // cache while every row block of the tile streams past it (without k-blocks a panel of a
    // wide layer would be re-read from further out per row block), and the partial sums of the
    // panel's 16 columns stay in L1 from one k-block to the next. The weights are read as one
    // sequential stream, which the hardware prefetchers follow.
    for p in 0..g.panels() {
        let j0 = p * 16;
        let cols = (g.n - j0).min(16);
        let finish = Finish::new(g, j0, cols);
        let mut kb = 0;
        while kb < k {
            let kc = (k - kb).min(KC);
            let (first, last) = (kb == 0, (kb + kc == k).then_some(&finish));
            // SAFETY: panel p starts at p·k·16 inside the weight slice (its length is checked by
            // `super::gemm`'s debug assertion and by the loader); row kb of it is kb·16 further.
            let wp = unsafe { w.add(p * k * 16 + kb * 16) };
            let mut i = 0;
            // SAFETY: (all calls below) rows i..i+MR are within 0..m; columns kb..kb+kc of A
            // and j0..j0+cols of C are within the caller's regions (see `super::gemm`).
            unsafe {
                while i + MR_AVX2 <= g.m {
                    let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                    tile_avx2::<MR_AVX2, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last);
                    i += MR_AVX2;
                }
                let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                match g.m - i {
                    // A single row is done panel-parallel after this loop.
                    0 | 1 => {}
                    2 => tile_avx2::<2, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    3 => tile_avx2::<3, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    4 => tile_avx2::<4, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    _ => tile_avx2::<5, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                }
            }
            kb += kc;
        }
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
            let (v0, v1) = Finish::new(g, j0, cols).avx2(acc0[q], acc1[q]);
            if cols == 16 {
                _mm256_storeu_ps(c.add(j0), v0);
                _mm256_storeu_ps(c.add(j0 + 8), v1);
            } else {
                let mut tmp = [0f32; 16];
                _mm256_storeu_ps(tmp.as_mut_ptr(), v0);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), v1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), c.add(j0), cols);
            }
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

/// What the last k-block does to a 16-column tile before storing it: add the bias, then ReLU.
struct Finish {
    bias: [f32; 16],
    relu: bool,
}

impl Finish {
    fn new(g: &Gemm, j0: usize, cols: usize) -> Finish {
        let mut bias = [0f32; 16];
        match g.bias {
            // A fixed-size copy for full panels (a variable one is a memcpy call per panel).
            Some(b) if cols == 16 => bias.copy_from_slice(&b[j0..j0 + 16]),
            Some(b) => bias[..cols].copy_from_slice(&b[j0..j0 + cols]),
            None => {}
        }
        Finish { bias, relu: g.relu }
    }

    #[inline(always)]
    unsafe fn avx2(&self, v0: __m256, v1: __m256) -> (__m256, __m256) {
        // SAFETY: AVX is enabled in the calling `#[target_feature]` function; `bias` has 16
        // floats. `max(0, v)` returns v when v is NaN and keeps −0.0, as `super::relu` does.
        unsafe {
            let v0 = _mm256_add_ps(v0, _mm256_loadu_ps(self.bias.as_ptr()));
            let v1 = _mm256_add_ps(v1, _mm256_loadu_ps(self.bias.as_ptr().add(8)));
            if self.relu {
                let zero = _mm256_setzero_ps();
                (_mm256_max_ps(zero, v0), _mm256_max_ps(zero, v1))
            } else {
                (v0, v1)
            }
        }
    }

    #[inline(always)]
    unsafe fn avx512(&self, v: __m512) -> __m512 {
        // SAFETY: AVX-512F is enabled in the calling function; `bias` has 16 floats. Operand
        // order as in `avx2`.
        unsafe {
            let v = _mm512_add_ps(v, _mm512_loadu_ps(self.bias.as_ptr()));
            if self.relu {
                _mm512_max_ps(_mm512_setzero_ps(), v)
            } else {
                v
            }
        }
    }
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
    c: *mut f32,
    ldc: usize,
    cols: usize,
    first: bool,
    last: Option<&Finish>,
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
        for (i, acc) in acc.iter().enumerate() {
            let v = match last {
                Some(f) => f.avx512(*acc),
                None => *acc,
            };
            _mm512_mask_storeu_ps(c.add(i * ldc), mask, v);
        }
    }
}

#[inline(always)]
unsafe fn gemm_avx512_typed<P: Avx512Panel>(g: &Gemm, w: *const P::E) {
    let k = g.k;
    // Loop order as in `gemm_avx2_typed`.
    for p in 0..g.panels() {
        let j0 = p * 16;
        let cols = (g.n - j0).min(16);
        let finish = Finish::new(g, j0, cols);
        let mut kb = 0;
        while kb < k {
            let kc = (k - kb).min(KC);
            let (first, last) = (kb == 0, (kb + kc == k).then_some(&finish));
            // SAFETY: as in `gemm_avx2_typed`.
            let wp = unsafe { w.add(p * k * 16 + kb * 16) };
            let mut i = 0;
            // SAFETY: as in `gemm_avx2_typed`.
            unsafe {
                while i + MR_AVX512 <= g.m {
                    let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                    tile_avx512::<MR_AVX512, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last);
                    i += MR_AVX512;
                }
                let (a, c) = (g.a.add(i * g.lda + kb), g.c.add(i * g.ldc + j0));
                match g.m - i {
                    // A single row is done panel-parallel after this loop.
                    0 | 1 => {}
                    2 => tile_avx512::<2, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    3 => tile_avx512::<3, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    4 => tile_avx512::<4, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    5 => tile_avx512::<5, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    6 => tile_avx512::<6, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                    _ => tile_avx512::<7, P>(kc, a, g.lda, wp, c, g.ldc, cols, first, last),
                }
            }
            kb += kc;
        }
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
            let mask: __mmask16 = if cols == 16 {
                0xFFFF
            } else {
                (1u16 << cols) - 1
            };
            _mm512_mask_storeu_ps(c.add(j0), mask, Finish::new(g, j0, cols).avx512(*acc));
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
