//! x86-64 int8 microkernels: AVX2 (`vpmaddubsw` + `vpmaddwd`), AVX-VNNI (`vpdpbusd` on 256-bit
//! registers; both share one 256-bit kernel) and AVX512-VNNI (`vpdpbusd` on 512-bit registers).
//! A tile row's four codes for one k-group are broadcast to every 32-bit lane and multiplied
//! with the panel row's 16 columns × 4 codes; the epilogue is `scalar::finish`, vectorized.

use core::arch::x86_64::*;
use core::marker::PhantomData;

use super::super::driver::{self, Microkernel, Tile};
use super::super::x86::{load16_avx2, store16_avx2};
use super::{panel_bytes, GemmI8, Quad};

/// AVX2 tile rows: 4 rows × 2 registers = 8 accumulators (the products need a temporary and
/// a register of ones).
const MR_AVX2: usize = 4;
const NP_AVX2: usize = 4;
/// AVX-VNNI tile rows: 6 rows × 2 registers = 12 accumulators.
const MR_VNNI256: usize = 6;
const NP_VNNI256: usize = 4;
/// AVX512-VNNI tile rows: 8 rows × 1 register.
const MR_VNNI512: usize = 8;
const NP_VNNI512: usize = 8;

/// `acc + Σ_{b<4} a[4l+b]·w[4l+b]` per 32-bit lane l (a unsigned ≤ 127, w signed).
trait Dot256 {
    unsafe fn dot(acc: __m256i, a: __m256i, w: __m256i) -> __m256i;
}

struct MaddUbs;
struct Vnni256;

impl Dot256 for MaddUbs {
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, w: __m256i) -> __m256i {
        // SAFETY: AVX2 is enabled in the calling function. The s16 pair sums cannot saturate:
        // codes ≤ 127 and |w| ≤ 127 give at most 2·127·127 = 32258.
        unsafe {
            let pairs = _mm256_maddubs_epi16(a, w);
            _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }
}

impl Dot256 for Vnni256 {
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, w: __m256i) -> __m256i {
        // SAFETY: AVX-VNNI is enabled in the calling function.
        unsafe { _mm256_dpbusd_avx_epi32(acc, a, w) }
    }
}

/// Loads a quad as one 32-bit value (any alignment).
#[inline(always)]
unsafe fn quad(p: *const Quad) -> i32 {
    // SAFETY: the caller passes a readable quad; `Quad` has alignment 1.
    i32::from_le_bytes(unsafe { *p })
}

struct Avx256<'g, D>(PhantomData<(&'g (), D)>);

impl<'g, D: Dot256> Microkernel for Avx256<'g, D> {
    type Problem = GemmI8<'g>;
    type A = Quad;
    type E = Quad;

    #[inline(always)]
    unsafe fn tile<const R: usize, const NP: usize>(g: &GemmI8<'g>, t: &Tile<Quad, Quad>) {
        // SAFETY: (whole body) the regions are those of `Microkernel::tile`'s contract, the
        // headers those of panels j0/16.. of `g.w` (length checked by `gemm_i8`); AVX2 (and
        // AVX-VNNI for `Vnni256`) are enabled by the `#[target_feature]` function this is
        // inlined into.
        unsafe {
            let mut acc0 = [[_mm256_setzero_si256(); NP]; R];
            let mut acc1 = [[_mm256_setzero_si256(); NP]; R];
            if !t.first {
                for i in 0..R {
                    for q in 0..NP {
                        let (c0, c1) = load16_avx2(t.c.add(i * t.ldc + q * 16), t.cols_of(q, NP));
                        acc0[i][q] = _mm256_castps_si256(c0);
                        acc1[i][q] = _mm256_castps_si256(c1);
                    }
                }
            }
            let rows: [*const Quad; R] = std::array::from_fn(|i| t.a.add(i * t.lda));
            let panels: [*const Quad; NP] = std::array::from_fn(|q| t.w.add(q * t.panel_stride));
            for r in 0..t.k {
                for q in 0..NP {
                    let p = panels[q].add(r * 16) as *const __m256i;
                    let (w0, w1) = (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)));
                    for i in 0..R {
                        let a = _mm256_set1_epi32(quad(rows[i].add(r)));
                        acc0[i][q] = D::dot(acc0[i][q], a, w0);
                        acc1[i][q] = D::dot(acc1[i][q], a, w1);
                    }
                }
            }
            for q in 0..NP {
                let cols = t.cols_of(q, NP);
                if !t.last {
                    for i in 0..R {
                        let (v0, v1) = (acc0[i][q], acc1[i][q]);
                        let c = t.c.add(i * t.ldc + q * 16);
                        store16_avx2(c, cols, _mm256_castsi256_ps(v0), _mm256_castsi256_ps(v1));
                    }
                    continue;
                }
                let p = t.j0 / 16 + q;
                let h = g.w.as_ptr().add(p * panel_bytes(g.k));
                let sw = [
                    _mm256_loadu_ps(h as *const f32),
                    _mm256_loadu_ps(h.add(32) as _),
                ];
                let cs = [
                    _mm256_loadu_si256(h.add(64) as _),
                    _mm256_loadu_si256(h.add(96) as _),
                ];
                let mut bias = [0f32; 16];
                if let Some(b) = g.bias {
                    bias[..cols].copy_from_slice(&b[p * 16..p * 16 + cols]);
                }
                let b = [
                    _mm256_loadu_ps(bias.as_ptr()),
                    _mm256_loadu_ps(bias.as_ptr().add(8)),
                ];
                for i in 0..R {
                    let row = t.i0 + i;
                    let sa = _mm256_set1_ps(g.a.scale[row]);
                    let za = _mm256_set1_epi32(g.a.zero[row]);
                    let acc = [acc0[i][q], acc1[i][q]];
                    let v: [__m256; 2] = std::array::from_fn(|h| {
                        let d = _mm256_sub_epi32(acc[h], _mm256_mullo_epi32(za, cs[h]));
                        let s = _mm256_mul_ps(sa, sw[h]);
                        let v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), s), b[h]);
                        if g.relu {
                            // `max(0, v)` keeps NaN and −0.0, as `super::super::relu`.
                            _mm256_max_ps(_mm256_setzero_ps(), v)
                        } else {
                            v
                        }
                    });
                    store16_avx2(t.c.add(i * t.ldc + q * 16), cols, v[0], v[1]);
                }
            }
        }
    }
}

/// # Safety
/// See [`super::gemm_i8`]; the CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn gemm_avx2(g: &GemmI8) {
    // SAFETY: forwarded contract; features enabled by this function's attribute.
    unsafe { driver::run::<Avx256<MaddUbs>, MR_AVX2, NP_AVX2>(g, &g.operands()) }
}

/// # Safety
/// See [`super::gemm_i8`]; the CPU must have AVX2 and AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn gemm_avx_vnni(g: &GemmI8) {
    // SAFETY: forwarded contract; features enabled by this function's attribute.
    unsafe { driver::run::<Avx256<Vnni256>, MR_VNNI256, NP_VNNI256>(g, &g.operands()) }
}

struct Avx512<'g>(PhantomData<&'g ()>);

impl<'g> Microkernel for Avx512<'g> {
    type Problem = GemmI8<'g>;
    type A = Quad;
    type E = Quad;

    #[inline(always)]
    unsafe fn tile<const R: usize, const NP: usize>(g: &GemmI8<'g>, t: &Tile<Quad, Quad>) {
        // SAFETY: (whole body) as in `Avx256::tile`; AVX-512F/BW and AVX512-VNNI are enabled by
        // the calling function.
        unsafe {
            let mask = |q: usize| -> __mmask16 {
                match t.cols_of(q, NP) {
                    16 => 0xFFFF,
                    cols => (1u16 << cols) - 1,
                }
            };
            let mut acc = [[_mm512_setzero_si512(); NP]; R];
            if !t.first {
                for (i, acc) in acc.iter_mut().enumerate() {
                    for (q, acc) in acc.iter_mut().enumerate() {
                        let c = t.c.add(i * t.ldc + q * 16) as *const i32;
                        *acc = _mm512_maskz_loadu_epi32(mask(q), c);
                    }
                }
            }
            let rows: [*const Quad; R] = std::array::from_fn(|i| t.a.add(i * t.lda));
            let panels: [*const Quad; NP] = std::array::from_fn(|q| t.w.add(q * t.panel_stride));
            for r in 0..t.k {
                for q in 0..NP {
                    let w = _mm512_loadu_si512(panels[q].add(r * 16) as *const __m512i);
                    for i in 0..R {
                        let a = _mm512_set1_epi32(quad(rows[i].add(r)));
                        acc[i][q] = _mm512_dpbusd_epi32(acc[i][q], a, w);
                    }
                }
            }
            for q in 0..NP {
                if !t.last {
                    for (i, acc) in acc.iter().enumerate() {
                        let c = t.c.add(i * t.ldc + q * 16) as *mut i32;
                        _mm512_mask_storeu_epi32(c, mask(q), acc[q]);
                    }
                    continue;
                }
                let terms = PanelTerms::load(g, t.j0 / 16 + q);
                for (i, acc) in acc.iter().enumerate() {
                    terms.finish_row(g, t.i0 + i, acc[q], t.c.add(i * t.ldc + q * 16), mask(q));
                }
            }
        }
    }
}

/// One panel's epilogue operands in AVX-512 registers: the 16 weight scales and column sums and
/// the bias (zero past n or without one).
pub(super) struct PanelTerms {
    sw: __m512,
    cs: __m512i,
    bias: __m512,
}

impl PanelTerms {
    /// # Safety
    /// Panel `p` exists in `g.w`; the CPU has AVX-512F.
    #[inline(always)]
    pub(super) unsafe fn load(g: &GemmI8, p: usize) -> PanelTerms {
        let cols = (g.n - p * 16).min(16);
        let mut bias = [0f32; 16];
        if let Some(b) = g.bias {
            bias[..cols].copy_from_slice(&b[p * 16..p * 16 + cols]);
        }
        // SAFETY: the panel's 128-byte header is inside `g.w` (caller); AVX-512F (caller).
        unsafe {
            let h = g.w.as_ptr().add(p * panel_bytes(g.k));
            PanelTerms {
                sw: _mm512_loadu_ps(h as *const f32),
                cs: _mm512_loadu_si512(h.add(64) as *const __m512i),
                bias: _mm512_loadu_ps(bias.as_ptr()),
            }
        }
    }

    /// Writes batch row `row`'s outputs for this panel from its 16 i32 sums: the IEEE operations
    /// of `scalar::finish`, in its order, 16 lanes at a time.
    ///
    /// # Safety
    /// `c` is writable for the columns in `mask`; `row < g.m`; the CPU has AVX-512F.
    #[inline(always)]
    pub(super) unsafe fn finish_row(
        &self,
        g: &GemmI8,
        row: usize,
        acc: __m512i,
        c: *mut f32,
        mask: __mmask16,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe {
            let za = _mm512_set1_epi32(g.a.zero[row]);
            let d = _mm512_sub_epi32(acc, _mm512_mullo_epi32(za, self.cs));
            let s = _mm512_mul_ps(_mm512_set1_ps(g.a.scale[row]), self.sw);
            let mut v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), s), self.bias);
            if g.relu {
                v = _mm512_max_ps(_mm512_setzero_ps(), v);
            }
            _mm512_mask_storeu_ps(c, mask, v);
        }
    }
}

/// # Safety
/// See [`super::gemm_i8`]; the CPU must have AVX-512F/BW, AVX512-VNNI and AVX2.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
pub unsafe fn gemm_avx512_vnni(g: &GemmI8) {
    // SAFETY: forwarded contract; features enabled by this function's attribute.
    unsafe { driver::run::<Avx512, MR_VNNI512, NP_VNNI512>(g, &g.operands()) }
}

/// `super::quantize_row` with AVX2: 8-wide range, 32 codes per step (the same codes: min/max are
/// exact, the column-scale product is the same single f32 multiply, and `vcvtps2dq` rounds to
/// nearest even like `super::round_even` in this range).
///
/// # Safety
/// The CPU must have AVX2; `out` (and `col_scale`, if any) must be as long as `x`.
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_row_avx2(
    x: &[f32],
    col_scale: Option<&[f32]>,
    out: &mut [u8],
) -> (f32, i32) {
    assert_eq!(x.len(), out.len());
    assert!(col_scale.is_none_or(|r| r.len() == x.len()));
    let n = x.len();
    // SAFETY: (whole body) every load reads x[i..i + 8] (and col_scale[i..i + 8]) with
    // i + 8 ≤ n and every store writes out[i..i + 32] with i + 32 ≤ n; AVX2 is enabled by this
    // function's attribute.
    unsafe {
        // x[at..at + 8], times the column scales if there are any.
        let load = |at: usize| -> __m256 {
            let v = _mm256_loadu_ps(x.as_ptr().add(at));
            match col_scale {
                Some(r) => _mm256_mul_ps(v, _mm256_loadu_ps(r.as_ptr().add(at))),
                None => v,
            }
        };
        let value = |at: usize| -> f32 {
            match col_scale {
                Some(r) => x[at] * r[at],
                None => x[at],
            }
        };
        let (mut lo, mut hi, mut poison) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i + 8 <= n {
            let v = load(i);
            // `min_ps(v, lo)` is `v < lo ? v : lo`, as `Range::add`.
            lo = _mm256_min_ps(v, lo);
            hi = _mm256_max_ps(v, hi);
            poison = _mm256_add_ps(poison, _mm256_mul_ps(v, _mm256_setzero_ps()));
            i += 8;
        }
        let lanes = |v: __m256| -> [f32; 8] { std::mem::transmute(v) };
        let mut range = super::Range::EMPTY;
        for ((l, h), p) in lanes(lo).into_iter().zip(lanes(hi)).zip(lanes(poison)) {
            range.add(l);
            range.add(h);
            range.poison += p;
        }
        for at in i..n {
            range.add(value(at));
        }
        let (scale, inv, zero) = match range.params() {
            Ok(p) => p,
            Err(degenerate) => {
                out.fill(0);
                return degenerate;
            }
        };
        let (inv_v, zero_v) = (_mm256_set1_ps(inv), _mm256_set1_epi32(zero as i32));
        let (floor, ceil) = (_mm256_setzero_si256(), _mm256_set1_epi32(super::CODE_MAX));
        let codes = |at: usize| {
            let q = _mm256_cvtps_epi32(_mm256_mul_ps(load(at), inv_v));
            _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(q, zero_v), floor), ceil)
        };
        let mut i = 0;
        while i + 32 <= n {
            let ab = _mm256_packs_epi32(codes(i), codes(i + 8));
            let cd = _mm256_packs_epi32(codes(i + 16), codes(i + 24));
            // The packs interleave the two 128-bit halves; this puts the 4-byte groups in order.
            let bytes = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(ab, cd),
                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
            );
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, bytes);
            i += 32;
        }
        for (at, o) in out.iter_mut().enumerate().skip(i) {
            *o = super::code(value(at), inv, zero);
        }
        (scale, zero as i32)
    }
}

/// `super::quantize_row` with AVX-512: the range over 64 floats per step in four independent
/// chains (one chain of dependent `min`/`max`/`add` would bound it at a few floats per
/// cycle), then 16 codes per step narrowed with `vpmovdb`. The same codes as every level: min,
/// max and the poison sum are exact and order-free, the column-scale product is the same single
/// f32 multiply, and each code is the same IEEE operations.
///
/// # Safety
/// The CPU must have AVX-512F; `out` (and `col_scale`, if any) must be as long as `x`.
#[target_feature(enable = "avx512f,avx2")]
pub unsafe fn quantize_row_avx512(
    x: &[f32],
    col_scale: Option<&[f32]>,
    out: &mut [u8],
) -> (f32, i32) {
    assert_eq!(x.len(), out.len());
    assert!(col_scale.is_none_or(|r| r.len() == x.len()));
    let n = x.len();
    // SAFETY: (whole body) loads read x[i..i + 16] (and col_scale[i..i + 16]) with i + 16 ≤ n,
    // stores write out[i..i + 16] with i + 16 ≤ n; AVX-512F is enabled by this function's
    // attribute.
    unsafe {
        // x[at..at + 16], times the column scales if there are any.
        let load = |at: usize| -> __m512 {
            let v = _mm512_loadu_ps(x.as_ptr().add(at));
            match col_scale {
                Some(r) => _mm512_mul_ps(v, _mm512_loadu_ps(r.as_ptr().add(at))),
                None => v,
            }
        };
        let value = |at: usize| -> f32 {
            match col_scale {
                Some(r) => x[at] * r[at],
                None => x[at],
            }
        };
        let zero = _mm512_setzero_ps();
        let (mut lo, mut hi, mut poison) = ([zero; 4], [zero; 4], [zero; 4]);
        let mut i = 0;
        while i + 64 <= n {
            for c in 0..4 {
                let v = load(i + 16 * c);
                // `min_ps(v, lo)` is `v < lo ? v : lo`, as `Range::add`.
                lo[c] = _mm512_min_ps(v, lo[c]);
                hi[c] = _mm512_max_ps(v, hi[c]);
                poison[c] = _mm512_add_ps(poison[c], _mm512_mul_ps(v, zero));
            }
            i += 64;
        }
        while i + 16 <= n {
            let v = load(i);
            lo[0] = _mm512_min_ps(v, lo[0]);
            hi[0] = _mm512_max_ps(v, hi[0]);
            poison[0] = _mm512_add_ps(poison[0], _mm512_mul_ps(v, zero));
            i += 16;
        }
        // Chains, then lanes, folded with vector operations (exact: min and max hold no NaN,
        // NaN and ±∞ having gone into the poison sum, whose lanes are each 0 or NaN).
        for c in 1..4 {
            lo[0] = _mm512_min_ps(lo[c], lo[0]);
            hi[0] = _mm512_max_ps(hi[c], hi[0]);
            poison[0] = _mm512_add_ps(poison[c], poison[0]);
        }
        let mut range = super::Range {
            lo: _mm512_reduce_min_ps(lo[0]),
            hi: _mm512_reduce_max_ps(hi[0]),
            poison: _mm512_reduce_add_ps(poison[0]),
        };
        for at in i..n {
            range.add(value(at));
        }
        let (scale, inv, zero_point) = match range.params() {
            Ok(p) => p,
            Err(degenerate) => {
                out.fill(0);
                return degenerate;
            }
        };
        let (inv_v, zero_v) = (_mm512_set1_ps(inv), _mm512_set1_epi32(zero_point as i32));
        let (floor, ceil) = (_mm512_setzero_si512(), _mm512_set1_epi32(super::CODE_MAX));
        let mut i = 0;
        while i + 16 <= n {
            // `vcvtps2dq` rounds to nearest even, as `super::round_even` in this range.
            let q = _mm512_cvtps_epi32(_mm512_mul_ps(load(i), inv_v));
            let q = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(q, zero_v), floor), ceil);
            _mm_storeu_si128(
                out.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(q),
            );
            i += 16;
        }
        for (at, o) in out.iter_mut().enumerate().skip(i) {
            *o = super::code(value(at), inv, zero_point);
        }
        (scale, zero_point as i32)
    }
}
