//! Every code the `.ple` file stores as a bare integer (FORMAT.md §3), in one typed table.
//!
//! The reader decodes each field with `TryFrom<u8>`: an integer that names no code is an
//! [`UnknownCode`] error naming the field, the value and the codes that exist. The writer stores
//! `u8::from(code)`. The Python package keeps the same table in `python/ple_runtime/codes.py`;
//! `tests/cross_writer.rs` and `python/tests/test_cross_writer.py` check both against the committed
//! `tests/fixtures/cross_writer/codes.txt`.

use std::fmt;

/// A byte that names no code of its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCode {
    /// The field as FORMAT.md names it ("dtype", "pooling", "activation code", ...).
    pub field: &'static str,
    pub value: u8,
    /// The codes that exist, with their names.
    pub known: &'static [(u8, &'static str)],
}

impl fmt::Display for UnknownCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {} (known:", self.field, self.value)?;
        for (i, (code, name)) in self.known.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{code} {name}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownCode {}

/// Declares one code table: a `#[repr(u8)]` enum, its `TryFrom<u8>`, `From<Self> for u8`, the
/// name of each code (the one FORMAT.md and error messages use) and the list of all codes.
macro_rules! codes {
    ($(
        $(#[$doc:meta])*
        $ty:ident ($field:literal) {
            $($(#[$vdoc:meta])* $variant:ident = $code:literal => $name:literal,)+
        }
    )+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $ty {
            $($(#[$vdoc])* $variant = $code,)+
        }

        impl $ty {
            /// The field's name in FORMAT.md.
            pub const FIELD: &'static str = $field;
            /// Every code of the field with its name, in code order.
            pub const KNOWN: &'static [(u8, &'static str)] = &[$(($code, $name)),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl TryFrom<u8> for $ty {
            type Error = UnknownCode;
            fn try_from(value: u8) -> Result<Self, UnknownCode> {
                match value {
                    $($code => Ok($ty::$variant),)+
                    _ => Err(UnknownCode { field: $field, value, known: Self::KNOWN }),
                }
            }
        }

        impl From<$ty> for u8 {
            fn from(code: $ty) -> u8 {
                code as u8
            }
        }
    )+};
}

codes! {
    /// Element type of a tensor (§3.2).
    DType("dtype") {
        F32 = 1 => "f32",
        /// IEEE 754 binary16, widened to f32 as it is read.
        F16 = 2 => "f16",
        /// Signed 8-bit codes with one f32 scale per output column (dense weights only, in the
        /// panel16x4 layout; format 1.1).
        I8 = 3 => "i8",
    }

    /// Storage order of a tensor (§3.2).
    Layout("layout") {
        /// Row-major `[rows, cols]`.
        Plain = 0 => "plain",
        /// Dense-layer weight `[k, n]` stored as `ceil(n/16)` panels of `k × 16`.
        Panel16 = 1 => "panel16",
        /// int8 dense-layer weight: `ceil(n/16)` panels of a 128-byte header (column scales and
        /// code sums) and `ceil(k/4)` rows of 16 columns × 4 consecutive k (format 1.1).
        Panel16x4 = 2 => "panel16x4",
    }

    /// What a caller passes for one input feature (§3.4 `kind`).
    InputKind("kind") {
        /// `width` floats per sample.
        Dense = 1 => "dense",
        /// One id per sample, looked up in an embedding table.
        Sparse = 2 => "sparse",
        /// `max_len` ids per sample, looked up and pooled.
        Sequence = 3 => "sequence",
    }

    /// How a sequence feature's embeddings are reduced to one vector (§3.4 `pooling`; the file
    /// stores 0 on features that do not pool).
    Pooling("pooling") {
        Sum = 1 => "sum",
        Mean = 2 => "mean",
        Max = 3 => "max",
    }

    /// Which positions of a sequence count (§3.4 `mask`).
    Mask("mask") {
        /// Every position counts.
        None = 0 => "none",
        /// Positions holding the feature's pad id do not count.
        PadId = 1 => "pad id",
    }

    /// A layer's activation (§3.6 `act`).
    Activation("activation code") {
        Identity = 0 => "identity",
        Relu = 1 => "relu",
        Sigmoid = 2 => "sigmoid",
        Tanh = 3 => "tanh",
        /// `act_scalar` is the slope.
        LeakyRelu = 4 => "leaky_relu",
        /// `act_param` is one `a` or one per channel.
        PRelu = 5 => "prelu",
        /// Dice normalised per sample over the layer's outputs; `act_scalar` is eps, `act_param` α.
        DicePerSample = 6 => "dice_rechub",
        /// Dice with a per-channel eval BatchNorm; `act_param` rows are scale, shift, α.
        DiceBn = 7 => "dice_bn",
        Softmax = 8 => "softmax",
    }

    /// What a tower reads (§3.7 `input`).
    TowerInput("tower input code") {
        X0 = 0 => "x0",
        Bottom = 1 => "bottom",
        /// This task's output of the last level.
        LastLevel = 2 => "level",
        /// A graph node's output (format 1.3; the node is named in the node section).
        Node = 3 => "node",
    }

    /// What a graph node computes (§3.10 `op`, format 1.3).
    NodeOp("node op") {
        /// One MLP over one input.
        Mlp = 1 => "mlp",
        /// Attention over a small set of same-width vectors: per input j, `q_j`, `k_j`, `v_j`
        /// from three MLPs; `out = Σ_j softmax_j(q_j·k_j / temperature) v_j`.
        Attention = 2 => "attention",
    }

    /// What a tower applies after its MLP (§3.7 `out_act`).
    TowerActivation("output activation code") {
        Identity = 0 => "identity",
        Sigmoid = 2 => "sigmoid",
    }

    /// How an output is formed from the towers (§3.7 `kind`).
    OutputCode("output kind") {
        /// Tower `a`.
        Tower = 0 => "tower",
        /// The element-wise product of towers `a` and `b` (ESMM's ctcvr).
        Product = 1 => "product",
    }
}

/// Feature flag bit 0: ids pass through f32 before the lookup (DeepCTR-Torch); §3.4 `flags`.
pub const FEATURE_FLAG_IDS_F32: u8 = 1;
/// Feature flag bit 1: a sparse or sequence feature without a table in the file (table NONE):
/// the caller passes its embedding vectors; set exactly when such a feature's table is NONE.
pub const FEATURE_FLAG_CALLER_VECTORS: u8 = 2;

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
            DType::I8 => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_decodes_to_its_code_or_an_error_naming_the_field() {
        for byte in 0..=255u8 {
            match Activation::try_from(byte) {
                Ok(code) => assert_eq!(u8::from(code), byte),
                Err(e) => {
                    assert_eq!(e.value, byte);
                    assert!(!Activation::KNOWN.iter().any(|&(c, _)| c == byte));
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with(&format!(
                            "unknown activation code {byte} (known: 0 identity, 1 relu"
                        )),
                        "{msg}"
                    );
                }
            }
        }
        assert_eq!(
            TowerActivation::try_from(1).unwrap_err().to_string(),
            "unknown output activation code 1 (known: 0 identity, 2 sigmoid)"
        );
    }
}
