//! Library version (compile-time macros and a runtime function) and the SIMD level.

use std::ffi::c_char;

use super::guard;
use crate::kernels::SimdLevel;

/// Major version of the library this header belongs to (the Cargo package version).
pub const PLE_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const PLE_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const PLE_VERSION_PATCH: u32 = 0;
/// The version as one comparable number: major × 1000000 + minor × 1000 + patch.
pub const PLE_VERSION_NUMBER: u32 =
    PLE_VERSION_MAJOR * 1_000_000 + PLE_VERSION_MINOR * 1_000 + PLE_VERSION_PATCH;

/// The version of the loaded library as "MAJOR.MINOR.PATCH" (static, never NULL). It can differ
/// from the `PLE_VERSION_*` macros the caller was compiled with when a shared library is swapped.
#[no_mangle]
pub extern "C" fn ple_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    guard("ple_version", VERSION.as_ptr().cast(), || {
        VERSION.as_ptr().cast()
    })
}

/// The version of the loaded library as one number, as `PLE_VERSION_NUMBER` encodes it.
#[no_mangle]
pub extern "C" fn ple_version_number() -> u32 {
    guard("ple_version_number", 0, || {
        let part = |s: &str| s.parse::<u32>().unwrap_or(0);
        part(env!("CARGO_PKG_VERSION_MAJOR")) * 1_000_000
            + part(env!("CARGO_PKG_VERSION_MINOR")) * 1_000
            + part(env!("CARGO_PKG_VERSION_PATCH"))
    })
}

/// The SIMD level a model opened now would use: the best this CPU supports, lowered by the
/// `PLE_SIMD` environment variable (`scalar`, `avx2`, `avx512`, `neon`). Static, never NULL.
/// `ple_model_simd_level` gives the level a given model uses.
#[no_mangle]
pub extern "C" fn ple_simd_level() -> *const c_char {
    guard("ple_simd_level", c"scalar".as_ptr(), || {
        simd_name(SimdLevel::detect())
    })
}

pub(crate) fn simd_name(level: SimdLevel) -> *const c_char {
    match level {
        SimdLevel::Scalar => c"scalar".as_ptr(),
        SimdLevel::Neon => c"neon".as_ptr(),
        SimdLevel::Avx2 => c"avx2".as_ptr(),
        SimdLevel::Avx512 => c"avx512".as_ptr(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo_toml() {
        let v = format!("{PLE_VERSION_MAJOR}.{PLE_VERSION_MINOR}.{PLE_VERSION_PATCH}");
        assert_eq!(
            v,
            env!("CARGO_PKG_VERSION"),
            "update PLE_VERSION_* in src/ffi/version.rs and regenerate include/ple.h"
        );
        assert_eq!(ple_version_number(), PLE_VERSION_NUMBER);
    }
}
