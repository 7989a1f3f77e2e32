//! Matrix kernels over the panel16 weight layout, chosen once per model at load.
//!
//! One operation carries almost all the work: `C = A·W + b` for a tile of `m` samples, where `W` is
//! a dense layer's weight in panel16 layout (FORMAT.md §3.2), f32 or f16. Each SIMD level has one
//! implementation of it; `scalar` is the portable reference every other level is tested against.
//!
//! Detection happens once (`SimdLevel::detect`) and the result is stored in the model, so scoring
//! does no feature detection; `PLE_SIMD=scalar|avx2|avx512|neon` may lower the level, never raise it.

mod driver;
#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

pub mod activation;
pub mod int8;

/// Instruction-set level used by the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable Rust, no intrinsics.
    Scalar,
    /// AArch64 Advanced SIMD.
    Neon,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512F (plus AVX2 + FMA + F16C).
    Avx512,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    pub fn from_name(name: &str) -> Option<SimdLevel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "neon" => Some(SimdLevel::Neon),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// Every level this CPU can run, lowest first (always starts with `Scalar`).
    pub fn available() -> Vec<SimdLevel> {
        let mut v = vec![SimdLevel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                v.push(SimdLevel::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f") {
                    v.push(SimdLevel::Avx512);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                v.push(SimdLevel::Neon);
            }
        }
        v
    }

    /// The best level available, lowered by `PLE_SIMD` if that names a lower available level.
    pub fn detect() -> SimdLevel {
        let available = Self::available();
        let best = *available.last().expect("scalar is always available");
        match std::env::var("PLE_SIMD")
            .ok()
            .as_deref()
            .and_then(Self::from_name)
        {
            Some(wanted) if available.contains(&wanted) && wanted <= best => wanted,
            _ => best,
        }
    }

    /// This level if the CPU has it.
    pub fn if_available(self) -> Option<SimdLevel> {
        Self::available().contains(&self).then_some(self)
    }
}

/// A dense layer's weight in panel16 layout: `ceil(n/16)` panels of `k × 16`.
#[derive(Clone, Copy)]
pub enum Panels<'a> {
    F32(&'a [f32]),
    /// IEEE binary16 bit patterns.
    F16(&'a [u16]),
}

impl Panels<'_> {
    fn len(&self) -> usize {
        match self {
            Panels::F32(w) => w.len(),
            Panels::F16(w) => w.len(),
        }
    }
}

/// `C[i, j] = bias[j] + Σ_r A[i, r]·W[r, j]` for `i < m`, `j < n`, then `relu` if asked.
///
/// ReLU (the expert layers' usual activation) is applied by the kernel as each tile leaves the
/// registers, saving a pass over the output; every other activation is a separate pass.
///
/// `a` and `c` are raw pointers because both usually point into the same session arena (different
/// columns of the same rows), which Rust slices cannot express.
pub struct Gemm<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: *const f32,
    pub lda: usize,
    pub w: Panels<'a>,
    pub bias: Option<&'a [f32]>,
    pub c: *mut f32,
    pub ldc: usize,
    pub relu: bool,
}

impl Gemm<'_> {
    fn panels(&self) -> usize {
        self.n.div_ceil(16)
    }

    /// The operands as the blocked driver walks them, with panel 0 at `w`.
    fn operands<E>(&self, w: *const E) -> driver::Operands<f32, E> {
        driver::Operands {
            m: self.m,
            k: self.k,
            n: self.n,
            a: self.a,
            lda: self.lda,
            w,
            panel_stride: self.k * 16,
            c: self.c,
            ldc: self.ldc,
        }
    }
}

/// The bias of the 16 columns from `j0` (`cols` of them real): straight from the bias slice for a
/// full panel (no copy per tile), else zero-padded in `tmp` (all zeros without a bias).
#[inline(always)]
fn bias16<'t>(g: &'t Gemm, j0: usize, cols: usize, tmp: &'t mut [f32; 16]) -> &'t [f32; 16] {
    match g.bias {
        Some(b) if cols == 16 => b[j0..j0 + 16].try_into().expect("16 bias values"),
        Some(b) => {
            tmp[..cols].copy_from_slice(&b[j0..j0 + cols]);
            tmp
        }
        None => tmp,
    }
}

/// Runs `g` with the kernel of `level`.
///
/// # Safety
/// `a` must be valid for reads of rows `0..m` (each `k` floats, stride `lda`), `c` valid for
/// writes of rows `0..m` (each `n` floats, stride `ldc`), the two regions must not overlap, `w`
/// must hold `ceil(n/16)·k·16` elements, `bias` (if any) `n`, and `level` must be available on
/// this CPU.
pub unsafe fn gemm(level: SimdLevel, g: &Gemm) {
    debug_assert_eq!(g.w.len(), g.panels() * g.k * 16);
    debug_assert!(g.bias.is_none_or(|b| b.len() == g.n));
    if g.m == 0 || g.n == 0 {
        return;
    }
    match level {
        // SAFETY: the caller's contract is forwarded unchanged to each implementation.
        SimdLevel::Scalar => unsafe { scalar::gemm(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the caller guarantees AVX2+FMA+F16C are present.
        SimdLevel::Avx2 => unsafe { x86::gemm_avx2(g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the caller guarantees AVX-512F (and AVX2) are present.
        SimdLevel::Avx512 => unsafe { x86::gemm_avx512(g) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above; the caller guarantees NEON is present.
        SimdLevel::Neon => unsafe { neon::gemm(g) },
        #[allow(unreachable_patterns)]
        // SAFETY: a level this architecture cannot have is never detected; fall back to scalar.
        _ => unsafe { scalar::gemm(g) },
    }
}

/// `max(x, 0)` that keeps NaN (as torch does) and −0.0: the select every kernel applies.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Hints the CPU to fetch the cache line at `ptr`. Never faults, whatever the address.
#[inline(always)]
pub fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that never faults, for any address; SSE is baseline on x86-64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Widens binary16 bits to f32 (exact), 8 at a time with F16C where the level has it.
pub fn widen_f16(level: SimdLevel, src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if matches!(level, SimdLevel::Avx2 | SimdLevel::Avx512) {
        // SAFETY: the level was checked available at load, so F16C and AVX are present; the
        // slices have equal lengths (asserted above).
        unsafe { x86::widen_f16(src, dst) };
        return;
    }
    let _ = level;
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = f16_to_f32(h);
    }
}

/// Converts IEEE binary16 bits to f32 (exact).
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

#[cfg(test)]
mod tests;
