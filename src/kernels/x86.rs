//! x86-64 microkernels for the blocked driver (`super::driver`): AVX2+FMA+F16C (two 8-wide
//! registers per 16-column panel row) and AVX-512F (one 16-wide register). f16 panels are widened
//! with `vcvtph2ps` as they are loaded; accumulation is always f32.

use core::arch::x86_64::*;
use core::marker::PhantomData;

use super::driver::{self, Microkernel, Tile};
use super::{bias16, Gemm, Panels};

/// AVX2 tile rows: 6 rows × 2 registers = 12 accumulators of 16.
const MR_AVX2: usize = 6;
/// AVX2 panels per single-row pass: 8 accumulators.
const NP_AVX2: usize = 4;
/// AVX-512 tile rows: 8 rows × 1 register = 8 accumulators of 32.
const MR_AVX512: usize = 8;
/// AVX-512 panels per single-row pass.
const NP_AVX512: usize = 8;

/// A panel element type as one level loads it.
trait Panel {
    type E;
    /// Whether the one-panel tile loop takes two k-steps per iteration (f32 yes; f16 runs out
    /// of registers for the widened rows and halves its speed, DESIGN.md).
    const UNROLL_K: bool;
    /// One 16-wide panel row as two 8-wide vectors (AVX2).
    unsafe fn load_avx2(p: *const Self::E) -> (__m256, __m256);
    /// One 16-wide panel row as one vector (AVX-512).
    unsafe fn load_avx512(p: *const Self::E) -> __m512;
}

struct F32x16;
struct F16x16;

impl Panel for F32x16 {
    type E = f32;
    const UNROLL_K: bool = true;
    #[inline(always)]
    unsafe fn load_avx2(p: *const f32) -> (__m256, __m256) {
        // SAFETY: the caller passes a pointer to 16 readable floats; AVX is enabled in the
        // calling `#[target_feature]` function this is inlined into.
        unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
    #[inline(always)]
    unsafe fn load_avx512(p: *const f32) -> __m512 {
        // SAFETY: 16 readable floats; AVX-512F enabled in the calling function.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl Panel for F16x16 {
    type E = u16;
    const UNROLL_K: bool = false;
    #[inline(always)]
    unsafe fn load_avx2(p: *const u16) -> (__m256, __m256) {
        // SAFETY: 16 readable halves; F16C is enabled in the calling function.
        unsafe {
            (
                _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(8) as *const __m128i)),
            )
        }
    }
    #[inline(always)]
    unsafe fn load_avx512(p: *const u16) -> __m512 {
        // SAFETY: 16 readable halves; AVX-512F enabled in the calling function.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2

struct Avx2<'g, P>(PhantomData<(&'g (), P)>);

impl<'g, P: Panel> Microkernel for Avx2<'g, P> {
    type Problem = Gemm<'g>;
    type A = f32;
    type E = P::E;

    #[inline(always)]
    unsafe fn tile<const R: usize, const NP: usize>(g: &Gemm<'g>, t: &Tile<f32, P::E>) {
        // SAFETY: (whole body) the regions are those of `Microkernel::tile`'s contract; AVX2,
        // FMA and F16C are enabled by the `#[target_feature]` function this is inlined into.
        unsafe {
            let mut acc0 = [[_mm256_setzero_ps(); NP]; R];
            let mut acc1 = [[_mm256_setzero_ps(); NP]; R];
            if !t.first {
                for i in 0..R {
                    for q in 0..NP {
                        let src = t.c.add(i * t.ldc + q * 16);
                        (acc0[i][q], acc1[i][q]) = load16_avx2(src, t.cols_of(q, NP));
                    }
                }
            }
            // One base pointer per row, so each broadcast is a single (base + r·4) load rather
            // than a chain of stride additions recomputed every iteration.
            let rows: [*const f32; R] = std::array::from_fn(|i| t.a.add(i * t.lda));
            let panels: [*const P::E; NP] = std::array::from_fn(|q| t.w.add(q * t.panel_stride));
            macro_rules! step {
                ($r:expr) => {{
                    for q in 0..NP {
                        let (w0, w1) = P::load_avx2(panels[q].add($r * 16));
                        for i in 0..R {
                            let av = _mm256_broadcast_ss(&*rows[i].add($r));
                            acc0[i][q] = _mm256_fmadd_ps(av, w0, acc0[i][q]);
                            acc1[i][q] = _mm256_fmadd_ps(av, w1, acc1[i][q]);
                        }
                    }
                }};
            }
            // Unrolling changes the loop overhead only: each accumulator still sums over k in
            // order.
            let mut r = 0;
            if P::UNROLL_K && NP == 1 {
                while r + 2 <= t.k {
                    step!(r);
                    step!(r + 1);
                    r += 2;
                }
            }
            while r < t.k {
                step!(r);
                r += 1;
            }
            for q in 0..NP {
                let cols = t.cols_of(q, NP);
                let mut tmp = [0f32; 16];
                let bias = bias16(g, t.j0 + q * 16, cols, &mut tmp);
                for i in 0..R {
                    let (mut v0, mut v1) = (acc0[i][q], acc1[i][q]);
                    if t.last {
                        // `max(0, v)` returns v when v is NaN and keeps −0.0, as `super::relu`.
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias.as_ptr()));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias.as_ptr().add(8)));
                        if g.relu {
                            v0 = _mm256_max_ps(_mm256_setzero_ps(), v0);
                            v1 = _mm256_max_ps(_mm256_setzero_ps(), v1);
                        }
                    }
                    store16_avx2(t.c.add(i * t.ldc + q * 16), cols, v0, v1);
                }
            }
        }
    }
}

/// Loads `cols` (≤ 16) floats as two vectors, zeros past `cols`.
#[inline(always)]
pub(crate) unsafe fn load16_avx2(src: *const f32, cols: usize) -> (__m256, __m256) {
    // SAFETY: `src` has `cols` readable floats (caller); AVX enabled by the caller.
    unsafe {
        if cols == 16 {
            (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)))
        } else {
            let mut tmp = [0f32; 16];
            std::ptr::copy_nonoverlapping(src, tmp.as_mut_ptr(), cols);
            (
                _mm256_loadu_ps(tmp.as_ptr()),
                _mm256_loadu_ps(tmp.as_ptr().add(8)),
            )
        }
    }
}

/// Stores the first `cols` (≤ 16) lanes of two vectors.
#[inline(always)]
pub(crate) unsafe fn store16_avx2(dst: *mut f32, cols: usize, v0: __m256, v1: __m256) {
    // SAFETY: `dst` has `cols` writable floats (caller); AVX enabled by the caller.
    unsafe {
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

/// # Safety
/// See [`super::gemm`]; the CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_avx2(g: &Gemm) {
    // SAFETY: forwarded contract; features enabled by this function's attribute.
    unsafe {
        match g.w {
            Panels::F32(w) => {
                driver::run::<Avx2<F32x16>, MR_AVX2, NP_AVX2>(g, &g.operands(w.as_ptr()))
            }
            Panels::F16(w) => {
                driver::run::<Avx2<F16x16>, MR_AVX2, NP_AVX2>(g, &g.operands(w.as_ptr()))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512

struct Avx512<'g, P>(PhantomData<(&'g (), P)>);

impl<'g, P: Panel> Microkernel for Avx512<'g, P> {
    type Problem = Gemm<'g>;
    type A = f32;
    type E = P::E;

    #[inline(always)]
    unsafe fn tile<const R: usize, const NP: usize>(g: &Gemm<'g>, t: &Tile<f32, P::E>) {
        // SAFETY: (whole body) as in `Avx2::tile`; AVX-512F enabled by the calling function.
        unsafe {
            let mask = |q: usize| -> __mmask16 {
                match t.cols_of(q, NP) {
                    16 => 0xFFFF,
                    cols => (1u16 << cols) - 1,
                }
            };
            let mut acc = [[_mm512_setzero_ps(); NP]; R];
            if !t.first {
                for (i, acc) in acc.iter_mut().enumerate() {
                    for (q, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_maskz_loadu_ps(mask(q), t.c.add(i * t.ldc + q * 16));
                    }
                }
            }
            let rows: [*const f32; R] = std::array::from_fn(|i| t.a.add(i * t.lda));
            let panels: [*const P::E; NP] = std::array::from_fn(|q| t.w.add(q * t.panel_stride));
            for r in 0..t.k {
                for q in 0..NP {
                    let w = P::load_avx512(panels[q].add(r * 16));
                    for i in 0..R {
                        acc[i][q] = _mm512_fmadd_ps(_mm512_set1_ps(*rows[i].add(r)), w, acc[i][q]);
                    }
                }
            }
            for q in 0..NP {
                let mut tmp = [0f32; 16];
                let bias = bias16(g, t.j0 + q * 16, t.cols_of(q, NP), &mut tmp);
                for (i, acc) in acc.iter().enumerate() {
                    let mut v = acc[q];
                    if t.last {
                        // Operand order as in `Avx2::tile`.
                        v = _mm512_add_ps(v, _mm512_loadu_ps(bias.as_ptr()));
                        if g.relu {
                            v = _mm512_max_ps(_mm512_setzero_ps(), v);
                        }
                    }
                    _mm512_mask_storeu_ps(t.c.add(i * t.ldc + q * 16), mask(q), v);
                }
            }
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
            Panels::F32(w) => {
                driver::run::<Avx512<F32x16>, MR_AVX512, NP_AVX512>(g, &g.operands(w.as_ptr()))
            }
            Panels::F16(w) => {
                driver::run::<Avx512<F16x16>, MR_AVX512, NP_AVX512>(g, &g.operands(w.as_ptr()))
            }
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
