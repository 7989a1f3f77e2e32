//! AMX-INT8 kernel (Intel Sapphire Rapids and later): `tdpbusd` multiplies a 16×64 tile of u8
//! activation codes by a 16×(16·4) tile of s8 weights into a 16×16 tile of i32 sums — 16,384
//! multiply-adds per instruction, 16× one AVX512-VNNI `vpdpbusd`.
//!
//! The panel16x4 layout is already AMX's: one 64-byte panel row holds the 4 consecutive k codes
//! of each of the 16 columns, which is one row of a B tile, so 16 consecutive panel rows (64 k)
//! are one B tile read straight from the file at a stride of 64 bytes. A tiles are 16 batch rows
//! of 64 codes at the code rows' stride. The k left over after the last full 64 (`tail` groups
//! of 4) is copied, zero-padded to a whole tile, into buffers on the stack (the A rows once per
//! row block, the panel rows once per panel), so no tile load reads past a row or a panel and
//! every tile has one shape.
//!
//! Each call configures the tiles once (`ldtilecfg`) and releases them at the end
//! (`tilerelease`, so a thread that stops scoring does not keep the 8 KiB of tile state in every
//! context switch). Full 16-row blocks of the batch run on AMX, 32 rows × 32 columns at a time
//! (four accumulator tiles, so four `tdpbusd` chains are in flight), the rows' codes staying in
//! L1 while the panels stream past them; the rows after the last full block (and batches under 16) run on the AVX512-VNNI
//! kernel. The i32 sums are exact and the epilogue is `x86::PanelTerms::finish_row`, so the
//! results equal the scalar kernel's bit for bit like every other level.
//!
//! Rust has no stable AMX intrinsics; the instructions are written as inline assembly on fixed
//! tile registers (the compiler never allocates tile registers, so none are clobbered behind
//! its back).

use core::arch::asm;
use core::arch::x86_64::*;

use super::x86::PanelTerms;
use super::{panel_bytes, GemmI8, Quantized, PANEL_HEADER};

/// Batch rows of one A and C tile.
const TILE_ROWS: usize = 16;
/// Bytes of one tile row (64 u8 codes, or 16 i32 sums).
const TILE_BYTES: usize = 64;

/// Whether this CPU has AMX-TILE and AMX-INT8 and the OS lets this process use the tile state
/// (Linux: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once per process).
pub fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| cpu_has_amx_int8() && os_grants_tile_data())
}

fn cpu_has_amx_int8() -> bool {
    // Leaf 7 is read only if the CPU reports it.
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    // Bit 24: AMX-TILE, bit 25: AMX-INT8.
    edx & (1 << 24) != 0 && edx & (1 << 25) != 0
}

#[cfg(target_os = "linux")]
fn os_grants_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this request only changes whether this process may use the AMX tile state; it
    // takes no pointers. A kernel without AMX support returns an error, and we stay off AMX.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Other systems: not enabled (Windows and macOS manage the tile state differently; untested).
#[cfg(not(target_os = "linux"))]
fn os_grants_tile_data() -> bool {
    false
}

/// The 64-byte tile configuration (palette 1): tmm0..tmm3 the sums of rows blocks 0/1 × panels
/// 0/1 (16 × 16 i32), tmm4, tmm5 the codes of row blocks 0 and 1 (16 × 64 u8), tmm6, tmm7 panels
/// 0 and 1 (16 rows of 64 bytes).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    let mut tile = 0;
    while tile < 8 {
        c[16 + 2 * tile] = TILE_BYTES as u8;
        c[48 + tile] = TILE_ROWS as u8;
        tile += 1;
    }
    TileConfig(c)
};

/// 64-byte aligned scratch on the stack.
#[repr(C, align(64))]
struct Aligned<const N: usize>([u8; N]);

/// # Safety
/// See [`super::gemm_i8`]; [`available`] must be true (which implies AVX-512F/BW and
/// AVX512-VNNI, checked by `I8Level::available`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
pub unsafe fn gemm_amx(g: &GemmI8) {
    let blocks = g.m / TILE_ROWS;
    if blocks > 0 {
        // SAFETY: forwarded contract; rows 0..blocks·16 exist.
        unsafe { tiles(g, blocks) };
    }
    let done = blocks * TILE_ROWS;
    if done < g.m {
        let ld = g.a.ld;
        let rest = GemmI8 {
            m: g.m - done,
            a: Quantized {
                codes: &g.a.codes[done * ld..],
                ld,
                scale: &g.a.scale[done..],
                zero: &g.a.zero[done..],
            },
            // SAFETY: row `done` of C is inside C (done < m).
            c: unsafe { g.c.add(done * g.ldc) },
            ..*g
        };
        // SAFETY: the same contract for rows done..m; AVX512-VNNI is implied by AMX here.
        unsafe { super::x86::gemm_avx512_vnni(&rest) };
    }
}

/// `tdpbusd` of the row blocks and panels present: `tmm(2i + j) += tmm(4 + i) · tmm(6 + j)`.
macro_rules! products {
    ($rows2:expr, $panels2:expr) => {
        asm!("tdpbusd tmm0, tmm4, tmm6", options(nostack, nomem));
        if $panels2 {
            asm!("tdpbusd tmm1, tmm4, tmm7", options(nostack, nomem));
        }
        if $rows2 {
            asm!("tdpbusd tmm2, tmm5, tmm6", options(nostack, nomem));
            if $panels2 {
                asm!("tdpbusd tmm3, tmm5, tmm7", options(nostack, nomem));
            }
        }
    };
}

/// Loads tile `$t` (a literal register name) from `$ptr` at `$stride` bytes per row.
macro_rules! load {
    ($t:literal, $ptr:expr, $stride:expr) => {
        asm!(
            concat!("tileloadd ", $t, ", [{p} + {s} * 1]"),
            p = in(reg) $ptr,
            s = in(reg) $stride,
            options(nostack, readonly),
        )
    };
}

/// Stores tile `$t` to `$ptr`, 64 bytes per row.
macro_rules! store {
    ($t:literal, $ptr:expr) => {
        asm!(
            concat!("tilestored [{p} + {s} * 1], ", $t),
            p = in(reg) $ptr,
            s = in(reg) TILE_BYTES,
            options(nostack),
        )
    };
}

/// Rows `0..blocks·16` on AMX.
///
/// # Safety
/// As [`gemm_amx`], with `blocks ≥ 1` full 16-row blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
unsafe fn tiles(g: &GemmI8, blocks: usize) {
    let quads = g.k.div_ceil(4);
    let (steps, tail) = (quads / 16, quads % 16);
    let (ld, pb, panels) = (g.a.ld, panel_bytes(g.k), g.n.div_ceil(16));
    // The last partial group of 64 k, zero-padded: rows of the two row blocks, and the panel
    // rows of the two panels.
    let mut a_tail = Aligned([0u8; 2 * TILE_ROWS * TILE_BYTES]);
    let mut w_tail = Aligned([0u8; 2 * 16 * TILE_BYTES]);
    // Sums of row block i, panel j at rows 16·(2i + j)...
    let mut sums = Aligned([0u8; 4 * TILE_ROWS * TILE_BYTES]);
    let out = sums.0.as_mut_ptr();
    let codes = g.a.codes.as_ptr();
    // SAFETY: (whole body) full-step tile loads read rows b·16..b·16+32 < m at bytes
    // s·64..s·64+64 ≤ steps·64 ≤ row_bytes(k) ≤ ld of the codes, and panel rows
    // s·16..s·16+16 ≤ steps·16 ≤ ceil(k/4) of panels that exist; the tail copies read the
    // rest of each row (up to row_bytes(k) = 4·quads) and of each panel (up to quads rows);
    // tail loads and stores touch only the stack buffers above. The tiles are configured by
    // `ldtilecfg` before use and released at the end; AMX use was granted (`available`, the
    // caller's contract); AVX-512F is enabled by this function's attribute.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
        let mut b = 0;
        while b < blocks {
            let rows2 = b + 1 < blocks;
            let a0 = codes.add(b * TILE_ROWS * ld);
            let a1 = a0.add(TILE_ROWS * ld);
            if tail > 0 {
                for r in 0..if rows2 { 2 * TILE_ROWS } else { TILE_ROWS } {
                    std::ptr::copy_nonoverlapping(
                        a0.add(r * ld + steps * TILE_BYTES),
                        a_tail.0.as_mut_ptr().add(r * TILE_BYTES),
                        tail * 4,
                    );
                }
            }
            let mut p = 0;
            while p < panels {
                let panels2 = p + 1 < panels;
                let w0 = g.w.as_ptr().add(p * pb + PANEL_HEADER);
                let w1 = w0.add(pb);
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for s in 0..steps {
                    let (a, w) = (s * TILE_BYTES, s * 16 * TILE_BYTES);
                    load!("tmm4", a0.add(a), ld);
                    load!("tmm6", w0.add(w), TILE_BYTES);
                    if panels2 {
                        load!("tmm7", w1.add(w), TILE_BYTES);
                    }
                    if rows2 {
                        load!("tmm5", a1.add(a), ld);
                    }
                    products!(rows2, panels2);
                }
                if tail > 0 {
                    let wt = w_tail.0.as_mut_ptr();
                    let from = steps * 16 * TILE_BYTES;
                    std::ptr::copy_nonoverlapping(w0.add(from), wt, tail * TILE_BYTES);
                    if panels2 {
                        let wt1 = wt.add(16 * TILE_BYTES);
                        std::ptr::copy_nonoverlapping(w1.add(from), wt1, tail * TILE_BYTES);
                    }
                    load!("tmm4", a_tail.0.as_ptr(), TILE_BYTES);
                    load!("tmm6", wt, TILE_BYTES);
                    if panels2 {
                        load!("tmm7", wt.add(16 * TILE_BYTES), TILE_BYTES);
                    }
                    if rows2 {
                        load!(
                            "tmm5",
                            a_tail.0.as_ptr().add(TILE_ROWS * TILE_BYTES),
                            TILE_BYTES
                        );
                    }
                    products!(rows2, panels2);
                }
                store!("tmm0", out);
                store!("tmm1", out.add(TILE_ROWS * TILE_BYTES));
                store!("tmm2", out.add(2 * TILE_ROWS * TILE_BYTES));
                store!("tmm3", out.add(3 * TILE_ROWS * TILE_BYTES));
                for j in 0..if panels2 { 2 } else { 1 } {
                    let q = p + j;
                    let terms = PanelTerms::load(g, q);
                    let mask: __mmask16 = match (g.n - q * 16).min(16) {
                        16 => 0xFFFF,
                        cols => (1u16 << cols) - 1,
                    };
                    for i in 0..if rows2 { 2 } else { 1 } {
                        for r in 0..TILE_ROWS {
                            let row = (b + i) * TILE_ROWS + r;
                            let at = ((2 * i + j) * TILE_ROWS + r) * TILE_BYTES;
                            let acc = _mm512_load_si512(out.add(at) as *const __m512i);
                            terms.finish_row(g, row, acc, g.c.add(row * g.ldc + q * 16), mask);
                        }
                    }
                }
                p += if panels2 { 2 } else { 1 };
            }
            b += if rows2 { 2 } else { 1 };
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}
