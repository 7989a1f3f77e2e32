//! int8 dense layers: `C = dequant(Q(A)·W8) + b`, run by the same blocked driver as f32.
//!
//! Weights are s8, symmetric, one f32 scale per output column, in the *panel16x4* layout
//! (FORMAT.md): per group of 16 output columns a 128-byte header (the 16 column scales as f32,
//! then the 16 column sums of the s8 codes as i32) and then `ceil(k/4)` rows of 64 bytes, where
//! bytes `4j..4j+4` of a row are the codes of column j for 4 consecutive k — one 32-bit lane of
//! what `vpdpbusd` / `vpmaddubsw` consume. Padding (k past the end, columns past n) is zero.
//!
//! Activations are quantized per sample (per row) as each int8 layer reads them: asymmetric,
//! `x ≈ scale·(code − zero)` with codes in 0..=127 (7 bits, DESIGN.md says why), so that AVX2's
//! `vpmaddubsw` (two u8·s8 products summed into a saturating s16) can never saturate:
//! 2·127·127 = 32258 < 32767. Products accumulate exactly in i32 (|Σ| ≤ 2·127·127·k < 2^31 for
//! k ≤ `MAX_K`, the subtraction of `zero·colsum` included), and the epilogue
//! `(acc − zero·colsum)·(scale_a·scale_w) + bias`, then ReLU, is the same sequence of IEEE
//! operations at every level. So every level returns bit-identical results and the scalar kernel
//! is the exact reference of all of them.

#[cfg(target_arch = "x86_64")]
mod amx;
mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::SimdLevel;

/// Bytes of a panel's header: 16 f32 column scales, then 16 i32 column sums.
pub const PANEL_HEADER: usize = 128;
/// Largest activation code (7 bits).
pub const CODE_MAX: i32 = 127;
/// Largest weight code magnitude (−127..=127; −128 is refused).
pub const WEIGHT_MAX: i32 = 127;
/// Largest k of an int8 layer: keeps `|acc − zero·colsum| ≤ 2·127·127·k` below 2^31.
pub const MAX_K: usize = 65536;

/// Writers' default: an int8 file keeps layers with fewer outputs than this in f32, because
/// quantizing their input costs about as much as their whole product (gates, the last tower
/// layer; DESIGN.md).
pub const INT8_MIN_OUTPUTS: usize = 32;

/// Bytes of one panel of an int8 layer with `k` inputs.
pub fn panel_bytes(k: usize) -> usize {
    PANEL_HEADER + k.div_ceil(4) * 64
}

/// Bytes of an int8 layer's weights: `ceil(n/16)` panels.
pub fn weight_bytes(k: usize, n: usize) -> usize {
    n.div_ceil(16) * panel_bytes(k)
}

/// Bytes of one quantized activation row: `k` codes padded to a multiple of 4.
pub fn row_bytes(k: usize) -> usize {
    k.div_ceil(4) * 4
}

/// Instruction set of the int8 kernels (a refinement of [`SimdLevel`]: VNNI is optional on both
/// AVX2 and AVX-512 CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum I8Level {
    Scalar,
    /// `vpmaddubsw` + `vpmaddwd` (AVX2 without VNNI).
    Avx2,
    /// `vpdpbusd` on 256-bit registers (AVX-VNNI, VEX encoded).
    AvxVnni,
    /// `vpdpbusd` on 512-bit registers (AVX512-VNNI).
    Avx512Vnni,
    /// AMX-INT8 tiles (`tdpbusd`) for full 16-row blocks of the batch, AVX512-VNNI for the rest.
    Amx,
}

impl I8Level {
    pub fn name(self) -> &'static str {
        match self {
            I8Level::Scalar => "scalar",
            I8Level::Avx2 => "avx2",
            I8Level::AvxVnni => "avx-vnni",
            I8Level::Avx512Vnni => "avx512-vnni",
            I8Level::Amx => "amx",
        }
    }

    /// Every int8 level this CPU can run, lowest first.
    pub fn available() -> Vec<I8Level> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // only x86 adds levels yet
        let mut v = vec![I8Level::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") {
                v.push(I8Level::Avx2);
                if has!("avxvnni") {
                    v.push(I8Level::AvxVnni);
                }
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    v.push(I8Level::Avx512Vnni);
                    if amx::available() {
                        v.push(I8Level::Amx);
                    }
                }
            }
        }
        v
    }

    /// The level named `name` ("scalar", "avx2", "avx-vnni", "avx512-vnni", "amx").
    pub fn from_name(name: &str) -> Option<I8Level> {
        [
            I8Level::Scalar,
            I8Level::Avx2,
            I8Level::AvxVnni,
            I8Level::Avx512Vnni,
            I8Level::Amx,
        ]
        .into_iter()
        .find(|l| l.name() == name)
    }

    /// The best int8 level within what the f32 level `simd` allows (so `PLE_SIMD=avx2` also
    /// keeps int8 off AVX-512, and `scalar` keeps it scalar), lowered by `PLE_INT8` if that
    /// names a lower level this CPU has (e.g. `PLE_INT8=avx512-vnni` to keep a Sapphire Rapids
    /// off AMX, as a benchmark comparing the two does).
    pub fn for_simd(simd: SimdLevel) -> I8Level {
        let best = Self::best_for_simd(simd);
        match std::env::var("PLE_INT8")
            .ok()
            .as_deref()
            .and_then(Self::from_name)
        {
            Some(wanted) if wanted <= best && Self::available().contains(&wanted) => wanted,
            _ => best,
        }
    }

    fn best_for_simd(simd: SimdLevel) -> I8Level {
        let allowed = |l: I8Level| match l {
            I8Level::Scalar => true,
            I8Level::Avx2 | I8Level::AvxVnni => simd >= SimdLevel::Avx2,
            I8Level::Avx512Vnni | I8Level::Amx => simd >= SimdLevel::Avx512,
        };
        Self::available()
            .into_iter()
            .filter(|&l| allowed(l))
            .max()
            .unwrap_or(I8Level::Scalar)
    }
}

/// Activations quantized by [`quantize_rows`]: `m` rows of codes `ld` bytes apart (each
/// [`row_bytes`]`(k)` long, zero-padded), and each row's scale and zero point.
#[derive(Clone, Copy)]
pub struct Quantized<'a> {
    pub codes: &'a [u8],
    pub ld: usize,
    pub scale: &'a [f32],
    pub zero: &'a [i32],
}

/// Quantizes rows `0..m` of A (`k` floats each, `lda` apart) to 7-bit codes, with the SIMD
/// level's vector instructions (every level gives the same codes: the operations are exact or
/// the same IEEE operation in the same order).
///
/// Per row, of the values `v = x` or, with column scales r, `v_j = x_j·r_j` (one f32 product;
/// the layer's weights were quantized from `diag(1/r)·W`, so `v·W' = x·W` in real arithmetic):
/// `lo = min(0, min v)`, `hi = max(0, max v)`, `scale = (hi − lo)/127`,
/// `zero = round(−lo·127/(hi − lo))`, `code = clamp(round(v·127/(hi − lo)) + zero, 0, 127)`
/// (rounding to nearest, ties to even), so 0.0 is exact. A row of zeros gets scale 0; a row
/// holding NaN or ±∞ (or whose range overflows) gets scale NaN, so its outputs are NaN.
///
/// # Safety
/// A must have `m` rows of `k` readable floats at stride `lda`; `col_scale`, if any, must hold
/// `k` values; `level` must be available.
#[allow(clippy::too_many_arguments)]
pub unsafe fn quantize_rows(
    level: I8Level,
    m: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    col_scale: Option<&[f32]>,
    codes: &mut [u8],
    ld: usize,
    scale: &mut [f32],
    zero: &mut [i32],
) {
    assert!(ld >= row_bytes(k) && codes.len() >= m.saturating_sub(1) * ld + row_bytes(k));
    assert!(scale.len() >= m && zero.len() >= m);
    assert!(col_scale.is_none_or(|r| r.len() == k));
    for i in 0..m {
        // SAFETY: row i of A has k readable floats (caller).
        let x = unsafe { std::slice::from_raw_parts(a.add(i * lda), k) };
        let row = &mut codes[i * ld..i * ld + row_bytes(k)];
        row[k..].fill(0);
        let row = &mut row[..k];
        (scale[i], zero[i]) = match (level, col_scale) {
            (I8Level::Scalar, None) => quantize_row(x, row, &Range::of(x), |v, _| v),
            (I8Level::Scalar, Some(r)) => {
                quantize_row(x, row, &Range::of_scaled(x, r), |v, j| v * r[j])
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: these levels imply AVX-512F (checked available by the caller).
            (I8Level::Avx512Vnni | I8Level::Amx, _) => unsafe {
                x86::quantize_row_avx512(x, col_scale, row)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: every x86 int8 level implies AVX2 (checked available by the caller).
            _ => unsafe { x86::quantize_row_avx2(x, col_scale, row) },
            #[cfg(not(target_arch = "x86_64"))]
            (_, None) => quantize_row(x, row, &Range::of(x), |v, _| v),
            #[cfg(not(target_arch = "x86_64"))]
            (_, Some(r)) => quantize_row(x, row, &Range::of_scaled(x, r), |v, j| v * r[j]),
        };
    }
}

/// Rounds to the nearest integer, ties to even, for |x| < 2^22 (what `cvtps2dq` does under the
/// default rounding mode): adding and removing 1.5·2^23 drops the fraction bits.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// A row's `min(0, ·)`, `max(0, ·)`, and a sum that is NaN when a value is NaN or infinite.
pub(crate) struct Range {
    pub lo: f32,
    pub hi: f32,
    pub poison: f32,
}

impl Range {
    pub(crate) const EMPTY: Range = Range {
        lo: 0.0,
        hi: 0.0,
        poison: 0.0,
    };

    /// Folds in `v` (the order of folding does not change the result).
    #[inline(always)]
    pub(crate) fn add(&mut self, v: f32) {
        self.lo = if v < self.lo { v } else { self.lo };
        self.hi = if v > self.hi { v } else { self.hi };
        self.poison += v * 0.0;
    }

    pub(crate) fn of(x: &[f32]) -> Range {
        let mut r = Range::EMPTY;
        for &v in x {
            r.add(v);
        }
        r
    }

    /// The range of `x_j·r_j`.
    pub(crate) fn of_scaled(x: &[f32], col_scale: &[f32]) -> Range {
        let mut r = Range::EMPTY;
        for (&v, &s) in x.iter().zip(col_scale) {
            r.add(v * s);
        }
        r
    }

    /// `(scale, 1/scale, zero)`, or the `(scale, zero)` of a row that quantizes to all zeros.
    #[inline(always)]
    pub(crate) fn params(&self) -> Result<(f32, f32, f32), (f32, i32)> {
        let range = self.hi - self.lo;
        if self.poison.is_nan() || !range.is_finite() {
            return Err((f32::NAN, 0));
        }
        if range == 0.0 {
            return Err((0.0, 0));
        }
        let inv = CODE_MAX as f32 / range;
        let zero = round_even(-self.lo * inv).clamp(0.0, CODE_MAX as f32);
        Ok((range / CODE_MAX as f32, inv, zero))
    }
}

/// The code of `v`: `clamp(round(v·inv) + zero, 0, 127)`.
#[inline(always)]
pub(crate) fn code(v: f32, inv: f32, zero: f32) -> u8 {
    (round_even(v * inv) + zero).clamp(0.0, CODE_MAX as f32) as u8
}

/// Codes of `value(x_j, j)` given their range (`value` applies the column scale, if any).
#[inline(always)]
fn quantize_row(
    x: &[f32],
    out: &mut [u8],
    r: &Range,
    value: impl Fn(f32, usize) -> f32,
) -> (f32, i32) {
    match r.params() {
        Err(degenerate) => {
            out.fill(0);
            degenerate
        }
        Ok((scale, inv, zero)) => {
            for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
                *o = code(value(v, j), inv, zero);
            }
            (scale, zero as i32)
        }
    }
}

/// `C[i, j] = dequant(Σ_r Q(A)[i, r]·W8[r, j]) + bias[j]` for `i < m`, `j < n`, then `relu` if
/// asked (other activations are a separate pass, as for f32).
pub struct GemmI8<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: Quantized<'a>,
    /// The layer's panels ([`weight_bytes`]`(k, n)` bytes).
    pub w: &'a [u8],
    pub bias: Option<&'a [f32]>,
    pub c: *mut f32,
    pub ldc: usize,
    pub relu: bool,
}

/// Four consecutive k of one quantized row or one panel column.
pub(crate) type Quad = [u8; 4];

impl GemmI8<'_> {
    fn operands(&self) -> super::driver::Operands<Quad, Quad> {
        super::driver::Operands {
            m: self.m,
            k: self.k.div_ceil(4),
            n: self.n,
            a: self.a.codes.as_ptr() as *const Quad,
            lda: self.a.ld / 4,
            // SAFETY: the weights hold at least one panel (checked by `gemm_i8`), so skipping
            // its header stays inside the slice.
            w: unsafe { self.w.as_ptr().add(PANEL_HEADER) } as *const Quad,
            panel_stride: panel_bytes(self.k) / 4,
            c: self.c,
            ldc: self.ldc,
        }
    }

    /// The 16 column scales and column sums of panel `p`.
    #[inline(always)]
    fn header(&self, p: usize) -> ([f32; 16], [i32; 16]) {
        let h = &self.w[p * panel_bytes(self.k)..][..PANEL_HEADER];
        let word = |i: usize| -> [u8; 4] { h[i * 4..i * 4 + 4].try_into().expect("4 bytes") };
        (
            std::array::from_fn(|j| f32::from_le_bytes(word(j))),
            std::array::from_fn(|j| i32::from_le_bytes(word(16 + j))),
        )
    }

    /// Per column of panel `p`: `scale_a·scale_w` and `zero·colsum` for batch row `row`, and
    /// the bias (zeros without one or past n).
    #[inline(always)]
    fn epilogue_terms(&self, row: usize, p: usize) -> Epilogue {
        let (scale, colsum) = self.header(p);
        let (sa, za) = (self.a.scale[row], self.a.zero[row]);
        let j0 = p * 16;
        let mut bias = [0f32; 16];
        if let Some(b) = self.bias {
            let cols = (self.n - j0).min(16);
            bias[..cols].copy_from_slice(&b[j0..j0 + cols]);
        }
        Epilogue {
            scale: std::array::from_fn(|j| sa * scale[j]),
            offset: std::array::from_fn(|j| za.wrapping_mul(colsum[j])),
            bias,
        }
    }
}

/// What turns one row's 16 i32 sums of one panel into outputs:
/// `((acc − offset) as f32 · scale) + bias`, then ReLU if asked.
pub(crate) struct Epilogue {
    pub scale: [f32; 16],
    pub offset: [i32; 16],
    pub bias: [f32; 16],
}

/// Runs `g` with the int8 kernel of `level`.
///
/// # Safety
/// `c` must be valid for writes of rows `0..m` (each `n` floats, stride `ldc`) and must not
/// overlap the codes; `g.a` must hold `m` rows of `row_bytes(k)` codes with `ld` a multiple of 4,
/// `w` `weight_bytes(k, n)` bytes whose codes are within ±127 (checked at load), `bias` (if any)
/// `n` values, `k ≤ MAX_K`, and `level` must be available on this CPU.
pub unsafe fn gemm_i8(level: I8Level, g: &GemmI8) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    assert!(g.k <= MAX_K && g.a.ld.is_multiple_of(4) && g.a.ld >= row_bytes(g.k));
    assert!(g.a.codes.len() >= (g.m - 1) * g.a.ld + row_bytes(g.k));
    assert!(g.a.scale.len() >= g.m && g.a.zero.len() >= g.m);
    assert_eq!(g.w.len(), weight_bytes(g.k, g.n));
    assert!(g.bias.is_none_or(|b| b.len() == g.n));
    match level {
        // SAFETY: the caller's contract is forwarded to each implementation.
        I8Level::Scalar => unsafe { scalar::gemm(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the caller guarantees AVX2.
        I8Level::Avx2 => unsafe { x86::gemm_avx2(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the caller guarantees AVX2 + AVX-VNNI.
        I8Level::AvxVnni => unsafe { x86::gemm_avx_vnni(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the caller guarantees AVX-512F/BW + AVX512-VNNI.
        I8Level::Avx512Vnni => unsafe { x86::gemm_avx512_vnni(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the caller guarantees AMX-INT8 granted and AVX512-VNNI.
        I8Level::Amx => unsafe { amx::gemm_amx(g) },
        #[allow(unreachable_patterns)]
        // SAFETY: a level this architecture cannot have is never detected; scalar needs nothing.
        _ => unsafe { scalar::gemm(g) },
    }
}

/// Quantizes a row-major `[k, n]` f32 matrix into int8 panels (symmetric, one scale per column:
/// `max|w|/127`, or 1 for an all-zero column). For writers and tests; allocates.
///
/// Fails on a non-finite weight or `k > MAX_K`.
pub fn quantize_weights(w: &[f32], k: usize, n: usize) -> Result<Vec<u8>, String> {
    if w.len() != k * n {
        return Err(format!("{} weights for a {k}x{n} matrix", w.len()));
    }
    if k > MAX_K {
        return Err(format!("k = {k} exceeds the int8 limit {MAX_K}"));
    }
    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
        return Err(format!("weight [{}, {}] is not finite", i / n, i % n));
    }
    let pb = panel_bytes(k);
    let mut out = vec![0u8; weight_bytes(k, n)];
    for j in 0..n {
        let (p, c) = (j / 16, j % 16);
        let amax = (0..k).map(|r| w[r * n + j].abs()).fold(0f32, f32::max);
        let scale = if amax > 0.0 {
            amax / WEIGHT_MAX as f32
        } else {
            1.0
        };
        let panel = &mut out[p * pb..(p + 1) * pb];
        let mut sum = 0i32;
        for r in 0..k {
            let q = (w[r * n + j] / scale)
                .round()
                .clamp(-WEIGHT_MAX as f32, WEIGHT_MAX as f32) as i8;
            sum += q as i32;
            panel[PANEL_HEADER + (r / 4) * 64 + c * 4 + r % 4] = q as u8;
        }
        panel[c * 4..c * 4 + 4].copy_from_slice(&scale.to_le_bytes());
        panel[64 + c * 4..64 + c * 4 + 4].copy_from_slice(&sum.to_le_bytes());
    }
    Ok(out)
}

/// What is wrong with an int8 layer's panels, if anything: a scale that is not finite and
/// positive (or not zero past n), a code of −128, a nonzero padding byte, or a column sum that
/// is not the sum of its codes. Reads every byte once.
pub fn check_weights(w: &[u8], k: usize, n: usize) -> Result<(), String> {
    if k > MAX_K {
        return Err(format!("k = {k} exceeds the int8 limit {MAX_K}"));
    }
    if w.len() != weight_bytes(k, n) {
        return Err(format!(
            "{} bytes of int8 weights, expected {} for {k}x{n}",
            w.len(),
            weight_bytes(k, n)
        ));
    }
    let pb = panel_bytes(k);
    for (p, panel) in w.chunks_exact(pb).enumerate() {
        let word = |i: usize| -> [u8; 4] { panel[i * 4..i * 4 + 4].try_into().expect("4") };
        let mut sums = [0i32; 16];
        for (g, row) in panel[PANEL_HEADER..].chunks_exact(64).enumerate() {
            for (idx, &b) in row.iter().enumerate() {
                let (c, r) = (idx / 4, g * 4 + idx % 4);
                let q = b as i8;
                if (p * 16 + c >= n || r >= k) && q != 0 {
                    return Err(format!(
                        "panel {p}: nonzero padding code at k {r}, column {c}"
                    ));
                }
                if q == i8::MIN {
                    return Err(format!(
                        "column {}: code -128 at k {r} (codes are -127..=127)",
                        p * 16 + c
                    ));
                }
                sums[c] += q as i32;
            }
        }
        for (c, &sum) in sums.iter().enumerate() {
            let j = p * 16 + c;
            let scale = f32::from_le_bytes(word(c));
            let colsum = i32::from_le_bytes(word(16 + c));
            if j < n && !(scale.is_finite() && scale > 0.0) {
                return Err(format!(
                    "column {j}: scale {scale} is not finite and positive"
                ));
            }
            if j >= n && scale.to_bits() != 0 {
                return Err(format!(
                    "panel {p}: padding column {c} has scale {scale}, not 0"
                ));
            }
            if colsum != sum {
                return Err(format!(
                    "column {j}: column sum {colsum}, but its codes sum to {sum}"
                ));
            }
        }
    }
    Ok(())
}
