//! The blocking loop of every GEMM kernel, written once; each SIMD level supplies only its
//! microkernel (`Microkernel::tile`), which keeps an `R × 16·NP` block of outputs in registers.
//!
//! Order of work (DESIGN.md, "Kernels"): panel by panel, and within a panel k-block by k-block,
//! every MR-row tile of the batch passes over one block of `KC` panel rows while it is in cache;
//! between k-blocks the f32 partial sums wait in C (in L1). Rows left over after the full tiles
//! take one smaller tile, except a single leftover row (batch 1 in particular), which runs
//! against NP panels per pass over the whole k, so that enough accumulator chains are in flight.
//! Every output element is one accumulation chain over k in order, in every one of these paths,
//! so a sample's result does not depend on its batch or its position in it.

/// Panel rows per k-block: 512 × 64 B = 32 KiB of f32 weights (16 KiB of f16); measured best
/// (DESIGN.md).
pub(crate) const KC: usize = 512;

/// Where one microkernel call reads and writes. Rows are `lda`/`ldc` elements apart; the `NP`
/// panels of the call are `panel_stride` elements apart and each holds `k` rows of 16 at `w`
/// (already advanced to the k-block).
pub(crate) struct Tile<A, E> {
    /// Batch row of the tile's row 0 (int8 reads its rows' quantization parameters by it).
    pub i0: usize,
    /// Panel rows (steps of k) in this block.
    pub k: usize,
    /// Row 0 of the tile at the block's first k.
    pub a: *const A,
    pub lda: usize,
    /// Panel `p0` at the block's first k.
    pub w: *const E,
    pub panel_stride: usize,
    /// Row 0 of the tile at column `j0`.
    pub c: *mut f32,
    pub ldc: usize,
    /// First output column of panel `p0`.
    pub j0: usize,
    /// Valid columns of the call's last panel (1..=16); the others are full.
    pub cols: usize,
    /// First k-block: accumulators start from zero, not from the partial sums in C.
    pub first: bool,
    /// Last k-block: apply the epilogue (bias, activation) and store final values.
    pub last: bool,
}

impl<A, E> Tile<A, E> {
    /// Columns written for panel `q` of the call.
    #[inline(always)]
    pub fn cols_of(&self, q: usize, np: usize) -> usize {
        if q + 1 == np {
            self.cols
        } else {
            16
        }
    }
}

/// One SIMD level's microkernel for one operand type.
pub(crate) trait Microkernel {
    /// What the epilogue needs (bias, activation, scales).
    type Problem;
    /// Element of A.
    type A;
    /// Element of the packed panels.
    type E;

    /// `C[0..R, j0..j0+16·NP] (+)= A[0..R, 0..k]·W` over one k-block, then the epilogue if
    /// `t.last`.
    ///
    /// # Safety
    /// Rows `0..R` of A have `t.k` readable elements at stride `lda`; panels `0..NP` have `t.k`
    /// readable rows of 16; rows `0..R` of C have `16·(NP−1) + cols` writable floats at stride
    /// `ldc` (holding this tile's partial sums unless `first`); the CPU has the level's features.
    unsafe fn tile<const R: usize, const NP: usize>(g: &Self::Problem, t: &Tile<Self::A, Self::E>);
}

/// The operands of one call, as the driver walks them.
pub(crate) struct Operands<A, E> {
    pub m: usize,
    /// Panel rows (steps of k).
    pub k: usize,
    pub n: usize,
    pub a: *const A,
    pub lda: usize,
    /// Panel 0, row 0.
    pub w: *const E,
    /// Elements from one panel to the next.
    pub panel_stride: usize,
    pub c: *mut f32,
    pub ldc: usize,
}

/// Runs the whole GEMM with microkernel `K`, `MR`-row tiles and `NP` panels per single-row pass.
///
/// # Safety
/// A has `m` rows of `k` readable elements at stride `lda`, W has `ceil(n/16)` panels of `k`
/// rows, C has `m` rows of `n` writable floats at stride `ldc`, disjoint from A; the CPU has the
/// features `K` needs.
#[inline(always)]
pub(crate) unsafe fn run<K: Microkernel, const MR: usize, const NP: usize>(
    g: &K::Problem,
    o: &Operands<K::A, K::E>,
) {
    debug_assert!((2..=8).contains(&MR) && NP >= 1);
    let panels = o.n.div_ceil(16);
    let full_rows = o.m - o.m % MR;
    let rest = o.m % MR;
    // A single leftover row takes the panel-parallel pass below; 2..MR−1 take one small tile.
    let tiled_rows = if rest == 1 { full_rows } else { o.m };
    if tiled_rows > 0 {
        for p in 0..panels {
            let j0 = p * 16;
            let cols = (o.n - j0).min(16);
            let mut kb = 0;
            while kb < o.k {
                let kc = (o.k - kb).min(KC);
                let tile = |i: usize| {
                    // SAFETY: rows i.. are within 0..m, columns kb..kb+kc of A within 0..k,
                    // panel p's rows kb..kb+kc within the panel, columns j0..j0+cols of C
                    // within 0..n (caller contract).
                    let (a, w, c) = unsafe {
                        (
                            o.a.add(i * o.lda + kb),
                            o.w.add(p * o.panel_stride + kb * 16),
                            o.c.add(i * o.ldc + j0),
                        )
                    };
                    Tile {
                        i0: i,
                        k: kc,
                        a,
                        lda: o.lda,
                        w,
                        panel_stride: o.panel_stride,
                        c,
                        ldc: o.ldc,
                        j0,
                        cols,
                        first: kb == 0,
                        last: kb + kc == o.k,
                    }
                };
                let mut i = 0;
                while i + MR <= tiled_rows {
                    // SAFETY: MR rows from i exist; the tile's regions are as above.
                    unsafe { K::tile::<MR, 1>(g, &tile(i)) };
                    i += MR;
                }
                if i < tiled_rows {
                    // SAFETY: `tiled_rows − i` (2..MR−1) rows from i exist.
                    unsafe { tile_of::<K, MR>(tiled_rows - i, g, &tile(i)) };
                }
                kb += kc;
            }
        }
    }
    if rest == 1 {
        let i = o.m - 1;
        let mut p = 0;
        while p < panels {
            let np = if p + NP <= panels { NP } else { 1 };
            let j0 = p * 16;
            let last_j0 = j0 + (np - 1) * 16;
            // SAFETY: row i is within 0..m; panels p..p+np exist; the whole k is read.
            let t = unsafe {
                Tile {
                    i0: i,
                    k: o.k,
                    a: o.a.add(i * o.lda),
                    lda: o.lda,
                    w: o.w.add(p * o.panel_stride),
                    panel_stride: o.panel_stride,
                    c: o.c.add(i * o.ldc + j0),
                    ldc: o.ldc,
                    j0,
                    cols: (o.n - last_j0).min(16),
                    first: true,
                    last: true,
                }
            };
            // SAFETY: as above.
            unsafe {
                if np == NP {
                    K::tile::<1, NP>(g, &t)
                } else {
                    K::tile::<1, 1>(g, &t)
                }
            }
            p += np;
        }
    }
}

/// One tile of `rows` (1..=MR) rows against one panel.
#[inline(always)]
unsafe fn tile_of<K: Microkernel, const MR: usize>(
    rows: usize,
    g: &K::Problem,
    t: &Tile<K::A, K::E>,
) {
    // SAFETY: forwarded contract of `Microkernel::tile`.
    unsafe {
        match rows {
            r if r == MR => K::tile::<MR, 1>(g, t),
            1 => K::tile::<1, 1>(g, t),
            2 => K::tile::<2, 1>(g, t),
            3 => K::tile::<3, 1>(g, t),
            4 => K::tile::<4, 1>(g, t),
            5 => K::tile::<5, 1>(g, t),
            6 => K::tile::<6, 1>(g, t),
            _ => K::tile::<7, 1>(g, t),
        }
    }
}
