//! The `.ple` file: header, metadata and tensor table, exactly as docs/FORMAT.md specifies.
//!
//! This module only parses and checks file-level rules (sizes, offsets, checksums, codes, limits).
//! Whether the graph makes sense (widths, references) is checked in `model::graph`.

pub mod codes;
mod meta;

pub use codes::{DType, Layout};
/// CRC-32 (ISO-HDLC, zlib's and PNG's): crc32fast folds with carry-less multiplies where the CPU
/// has them (PCLMULQDQ, ARMv8 CRC); ~6–8× the slicing-by-8 table code it replaced, which matters
/// for `verify_data` on multi-GB tables (measurements in docs/DESIGN.md, "Memory").
pub use crc32fast::{hash as crc32, Hasher as Crc32};
pub use meta::{
    FeatureRecord, FileMeta, InputScaleRecord, LayerRecord, LevelRecord, NodeRecord, OutputRecord,
    SourceRecord, TensorRecord, TowerRecord,
};

use crate::error::{invalid, Error, Result};

pub const MAGIC: [u8; 8] = *b"\x89PLE\r\n\x1a\n";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 3;
/// The first minor whose files may hold i8 tensors; writers give files without them minor 0, so
/// that every 1.x reader loads them.
pub const MINOR_INT8: u16 = 1;
/// The first minor whose metadata has the input-scales section (FORMAT.md §3.9); writers
/// give it only to files whose int8 layers have input scales.
pub const MINOR_INPUT_SCALES: u16 = 2;
/// The first minor whose files have a node section (graph nodes: MLPs and attention over values
/// of the structure; towers reading a node). Writers give files without nodes a lower minor.
pub const MINOR_NODES: u16 = 3;
pub const HEADER_SIZE: usize = 64;
pub const ALIGN: u64 = 64;
pub const NONE: u32 = u32::MAX;

/// Caps that stop a small hostile file from asking for a huge allocation (FORMAT.md §3.8).
pub mod limits {
    pub const META_SIZE: u64 = 64 << 20;
    pub const STRINGS: usize = 1_000_000;
    pub const STRING_LEN: usize = 255;
    pub const TENSORS: usize = 1_000_000;
    pub const TENSOR_DIM: u32 = 1 << 31;
    pub const FEATURES: usize = 65_536;
    pub const MAX_LEN: u32 = 65_536;
    pub const DENSE_WIDTH: u32 = 1 << 20;
    pub const MLP_LAYERS: usize = 64;
    pub const MLPS: usize = 1_000_000;
    pub const LEVELS: usize = 16;
    pub const TASKS: usize = 64;
    pub const EXPERTS: usize = 4_096;
    pub const OUTPUTS: usize = 256;
    /// Graph nodes (format 1.3).
    pub const NODES: usize = 4_096;
    /// Inputs of one graph node.
    pub const NODE_INPUTS: usize = 64;
    /// Floats of working memory per sample (the session arena width).
    pub const SCRATCH_PER_SAMPLE: usize = 1 << 20;
}

/// The fixed 64-byte header.
#[derive(Debug, Clone)]
pub struct Header {
    pub major: u16,
    pub minor: u16,
    pub file_size: u64,
    pub meta_size: u64,
    pub data_offset: u64,
    pub data_size: u64,
    pub meta_crc: u32,
    pub data_crc: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub fn align64(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// Parses and checks the header, the first 64 bytes of `head`, against the file's actual length
/// `file_len`.
pub fn parse_header(head: &[u8], file_len: u64) -> Result<Header> {
    if head.len() < HEADER_SIZE {
        return Err(Error::NotPle("shorter than the 64-byte header"));
    }
    if head[..8] != MAGIC {
        return Err(Error::NotPle("wrong magic bytes"));
    }
    let h = Header {
        major: u16_at(head, 8),
        minor: u16_at(head, 10),
        file_size: u64_at(head, 16),
        meta_size: u64_at(head, 32),
        data_offset: u64_at(head, 40),
        data_size: u64_at(head, 48),
        meta_crc: u32_at(head, 56),
        data_crc: u32_at(head, 60),
    };
    if h.major != MAJOR {
        return Err(Error::UnsupportedVersion {
            major: h.major,
            minor: h.minor,
            supported: MAJOR,
        });
    }
    let header_size = u32_at(head, 12);
    if header_size as usize != HEADER_SIZE {
        return Err(invalid!("header_size is {header_size}, expected 64"));
    }
    if h.file_size != file_len {
        return Err(invalid!(
            "header says the file has {} bytes but it has {file_len} (truncated or appended to?)",
            h.file_size,
        ));
    }
    let meta_offset = u64_at(head, 24);
    if meta_offset != HEADER_SIZE as u64 {
        return Err(invalid!("meta_offset is {meta_offset}, expected 64"));
    }
    if h.meta_size > limits::META_SIZE {
        return Err(invalid!(
            "meta_size {} exceeds the {} byte limit",
            h.meta_size,
            limits::META_SIZE
        ));
    }
    let meta_end = 64 + h.meta_size;
    if meta_end > h.file_size {
        return Err(invalid!(
            "metadata ends at byte {meta_end}, past the end of the file ({})",
            h.file_size
        ));
    }
    let expected_data = align64(meta_end).expect("bounded by META_SIZE");
    if h.data_offset != expected_data {
        return Err(invalid!(
            "data_offset is {}, expected {expected_data} (metadata end rounded up to 64)",
            h.data_offset
        ));
    }
    if h.data_offset > h.file_size || h.data_size != h.file_size - h.data_offset {
        return Err(invalid!(
            "data_size is {}, expected file_size − data_offset = {}",
            h.data_size,
            h.file_size.saturating_sub(h.data_offset)
        ));
    }
    Ok(h)
}

/// The header/metadata checksum (FORMAT.md §2): CRC-32 of header bytes `[0, 56)` followed by the
/// metadata.
pub fn meta_crc(header: &[u8], meta: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(&header[..56]);
    c.update(meta);
    c.finalize()
}

fn check_crc(section: &'static str, stored: u32, computed: u32) -> Result<()> {
    if computed != stored {
        return Err(Error::Checksum {
            section,
            stored,
            computed,
        });
    }
    Ok(())
}

/// Verifies the header+metadata checksum; always done at load.
pub fn verify_meta_crc(file: &[u8], h: &Header) -> Result<()> {
    let meta_end = 64 + h.meta_size as usize;
    let computed = meta_crc(file, &file[64..meta_end]);
    check_crc("header/metadata", h.meta_crc, computed)?;
    if file[meta_end..h.data_offset as usize]
        .iter()
        .any(|&b| b != 0)
    {
        return Err(invalid!("padding between metadata and data is not zero"));
    }
    Ok(())
}

/// Verifies the data checksum; touches every page of the file, so only on request.
pub fn verify_data_crc(file: &[u8], h: &Header, mut progress: impl FnMut(u64, u64)) -> Result<()> {
    let data = &file[h.data_offset as usize..];
    let mut c = Crc32::new();
    let total = data.len() as u64;
    let mut done = 0u64;
    for chunk in data.chunks(8 << 20) {
        c.update(chunk);
        done += chunk.len() as u64;
        progress(done, total);
    }
    check_crc("tensor data", h.data_crc, c.finalize())
}

/// Parses the metadata and checks every file-level rule of FORMAT.md §3.
pub fn parse(file: &[u8]) -> Result<(Header, FileMeta)> {
    parse_head(file, file.len() as u64)
}

/// As [`parse`], from the file's first bytes only: `head` runs at least to the data offset the
/// header gives, and `file_len` is the length of the whole file. Lets a reader refuse a file
/// before it reads the tensor data.
pub fn parse_head(head: &[u8], file_len: u64) -> Result<(Header, FileMeta)> {
    let h = parse_header(head, file_len)?;
    if (head.len() as u64) < h.data_offset {
        return Err(invalid!(
            "only {} bytes given to the metadata parser; the metadata ends at {}",
            head.len(),
            h.data_offset
        ));
    }
    verify_meta_crc(head, &h)?;
    let meta_bytes = &head[64..64 + h.meta_size as usize];
    let meta = meta::parse_meta(meta_bytes, h.minor)?;
    meta::check_tensor_layout(&meta.tensors, &meta.strings, h.data_size, h.minor)?;
    Ok((h, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_zlibs_crc32() {
        // The CRC-32/ISO-HDLC catalogue check value and zlib.crc32 of a pangram (FORMAT.md §2).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let fox = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(crc32(fox), 0x414F_A339);
        let mut c = Crc32::new();
        fox.chunks(7).for_each(|part| c.update(part));
        assert_eq!(c.finalize(), 0x414F_A339);
    }
}
