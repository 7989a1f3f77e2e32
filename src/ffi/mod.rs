//! The C ABI (include/ple.h). Owned by the C-ABI work; see docs/C_API.md.
