//! Where a model's bytes live: a read-only map of the file, or 64-byte-aligned memory the model
//! owns; and how a file is opened safely. Only regular files are opened: a device, FIFO, socket or
//! directory is refused before anything is read from it. A file read into memory is read once,
//! and only as far as its header says; its tensor data are read, straight into their final
//! buffer, only after the header and metadata have been checked: a large file that is not a model
//! costs 64 bytes of reading.

use std::alloc::{self, Layout};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use super::memory;
use crate::error::{Error, Result};
use crate::format::{self, FileMeta, Header, HEADER_SIZE};

/// Bytes that stay put for the model's lifetime, 64-byte aligned at the start.
pub(crate) enum Storage {
    /// The file, mapped read-only; the open file is kept to check its size later (`verify_data`).
    Mapped {
        map: memmap2::Mmap,
        file: File,
    },
    Owned(AlignedBytes),
}

impl Storage {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped { map, .. } => map,
            Storage::Owned(bytes) => bytes.as_slice(),
        }
    }

    /// The length of the mapped file now, if the bytes are a map (it may have been truncated since
    /// the model was opened).
    pub(crate) fn mapped_file_len(&self) -> Option<io::Result<u64>> {
        match self {
            Storage::Mapped { file, .. } => Some(file.metadata().map(|m| m.len())),
            Storage::Owned(_) => None,
        }
    }

    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Storage::Mapped { .. })
    }

    /// Locks the bytes in RAM (`memory::lock`). A mapping is unlocked when it is unmapped; owned
    /// bytes are unlocked before they are freed.
    pub(crate) fn lock(&mut self) -> io::Result<()> {
        match self {
            Storage::Mapped { map, .. } => memory::lock(map),
            Storage::Owned(bytes) => {
                memory::lock(bytes.as_slice())?;
                bytes.locked = true;
                Ok(())
            }
        }
    }
}

/// A zero-initialised heap buffer whose first byte is 64-byte aligned.
///
/// It is allocated with `alloc_zeroed` at the allocator's ordinary alignment, 64 bytes larger, and
/// starts at the first 64-byte boundary inside: that is `calloc`, which gives a large buffer as
/// fresh zero pages that cost no memory until written. (`alloc_zeroed` with a 64-byte alignment
/// would write zeros over all of it first.)
pub(crate) struct AlignedBytes {
    /// The allocation; `None` for an empty buffer.
    raw: Option<NonNull<u8>>,
    start: usize,
    len: usize,
    /// Locked in RAM (`Storage::lock`): unlocked before being freed, so that the allocator's
    /// next user of these pages does not inherit the lock.
    locked: bool,
}

const ALIGN: usize = 64;
/// An alignment every allocator gives without a special path (`calloc`'s).
const RAW_ALIGN: usize = 8;

// SAFETY: the buffer is owned exclusively (like a `Box<[u8]>`), so moving it to another thread is
// fine, and shared references only read it.
unsafe impl Send for AlignedBytes {}
// SAFETY: as above: `&AlignedBytes` gives only `&[u8]`.
unsafe impl Sync for AlignedBytes {}

impl AlignedBytes {
    /// `len` zero bytes. Fails (never aborts) if the memory cannot be had.
    pub(crate) fn zeroed(len: usize) -> io::Result<AlignedBytes> {
        if len == 0 {
            return Ok(AlignedBytes {
                raw: None,
                start: 0,
                len,
                locked: false,
            });
        }
        let layout = Self::layout(len)?;
        // SAFETY: `layout` has a nonzero size.
        let raw = NonNull::new(unsafe { alloc::alloc_zeroed(layout) }).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes to hold the model"),
            )
        })?;
        let start = raw.as_ptr().align_offset(ALIGN);
        let bytes = AlignedBytes {
            raw: Some(raw),
            start,
            len,
            locked: false,
        };
        // Before anything is written, so that the pages are backed by huge pages from the start
        // where the kernel leaves it to the program (transparent huge pages in `madvise` mode):
        // random row lookups then miss the TLB far less. Only a hint; refused, nothing changes.
        let _ = memory::advise(bytes.as_slice(), memory::Advice::HugePage);
        Ok(bytes)
    }

    pub(crate) fn copy_of(bytes: &[u8]) -> io::Result<AlignedBytes> {
        let mut b = Self::zeroed(bytes.len())?;
        b.as_mut_slice().copy_from_slice(bytes);
        Ok(b)
    }

    fn layout(len: usize) -> io::Result<Layout> {
        len.checked_add(ALIGN)
            .and_then(|size| Layout::from_size_align(size, RAW_ALIGN).ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("{len} bytes is too large a model for this machine's address space"),
                )
            })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self.raw {
            // SAFETY: the allocation holds `len + 64` zeroed (or since written) bytes and
            // `start < 64`, so `start .. start + len` is inside it; `self` owns it.
            Some(raw) => unsafe {
                std::slice::from_raw_parts(raw.as_ptr().add(self.start), self.len)
            },
            None => &[],
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.raw {
            // SAFETY: as in `as_slice`; `&mut self` makes the access exclusive.
            Some(raw) => unsafe {
                std::slice::from_raw_parts_mut(raw.as_ptr().add(self.start), self.len)
            },
            None => &mut [],
        }
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        if self.locked {
            memory::unlock(self.as_slice());
        }
        if let Some(raw) = self.raw {
            let layout = Self::layout(self.len).expect("checked when allocated");
            // SAFETY: allocated in `zeroed` with this very layout, freed once.
            unsafe { alloc::dealloc(raw.as_ptr(), layout) };
        }
    }
}

/// What a file was when a model was opened from it: enough to notice later that the path now
/// names another file, or that the file was written to since.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    /// Device and inode (unix): which file the path named.
    identity: (u64, u64),
    len: u64,
    /// Modification and status-change times (seconds, nanoseconds). The status-change time
    /// cannot be set back by a tool that preserves modification times.
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    #[cfg(unix)]
    fn of(m: &Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            identity: (m.dev(), m.ino()),
            len: m.len(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    fn of(m: &Metadata) -> FileStamp {
        let since_epoch = |t: io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or((0, 0), |d| (d.as_secs() as i64, d.subsec_nanos() as i64))
        };
        FileStamp {
            identity: (0, 0),
            len: m.len(),
            modified: since_epoch(m.modified()),
            changed: (0, 0),
        }
    }
}

/// The file a model was opened from, as it was then.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// Absolute, so that a later change of the working directory does not matter.
    path: PathBuf,
    stamp: FileStamp,
}

impl Origin {
    /// Whether the path no longer names the file, unchanged, that the model was opened from: it
    /// names another file (renamed over, a symlink switched), none, or the same file with another
    /// size, modification time or status-change time (written to in place, truncated).
    pub(crate) fn changed(&self) -> bool {
        std::fs::metadata(&self.path).map_or(true, |m| FileStamp::of(&m) != self.stamp)
    }

    pub(crate) fn shown(&self) -> String {
        self.path.display().to_string()
    }
}

/// An opened model file, checked to be a regular file.
pub(crate) struct ModelFile {
    file: File,
    len: u64,
    origin: Origin,
    shown: String,
}

impl ModelFile {
    /// Opens `path` if it is a regular file. Devices, FIFOs, sockets and directories are refused
    /// before they are opened (opening a FIFO would block until a writer appears), and again
    /// after, in case the path was switched in between.
    pub(crate) fn open(path: &Path) -> Result<ModelFile> {
        let shown = path.display().to_string();
        let io = |source| Error::Io {
            path: shown.clone(),
            source,
        };
        let before = std::fs::metadata(path).map_err(io)?;
        check_regular(&before).map_err(io)?;
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        check_regular(&meta).map_err(io)?;
        let stamp = FileStamp::of(&meta);
        let origin = Origin {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            stamp,
        };
        Ok(ModelFile {
            file,
            len: meta.len(),
            origin,
            shown,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    fn io(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.shown.clone(),
            source,
        }
    }

    /// Maps the file read-only and parses its header and metadata. With `random`, the mapping is
    /// advised random access before anything is read, so that parsing the header does not make
    /// the kernel read ahead into the tables (on a disk with a large readahead, megabytes).
    pub(crate) fn map(self, random: bool) -> Result<(Storage, Header, FileMeta, Origin)> {
        // SAFETY: the map is read-only. Its contents can still change if another process writes
        // the file in place, and a truncation makes later reads fault (SIGBUS): docs/ROBUSTNESS.md
        // says what each kind of change does, the deploy pattern (write a new file, rename it
        // over) avoids both, and `Model::file_changed` / `verify_data` let a server notice.
        let map = unsafe { memmap2::Mmap::map(&self.file) }.map_err(|e| self.io(e))?;
        if random {
            // Only a hint: refused, the kernel keeps its default readahead.
            let _ = memory::advise(&map, memory::Advice::Random);
        }
        let (header, meta) = format::parse(&map)?;
        let storage = Storage::Mapped {
            map,
            file: self.file,
        };
        Ok((storage, header, meta, self.origin))
    }

    /// Reads the file into memory the model owns. The 64-byte header is read first and checked
    /// (magic, version, sizes against the file's length), then the metadata (checksum and every
    /// rule; at most 64 MiB), and only then is the buffer for the whole file allocated and the
    /// tensor data read into it: never more than the header declares, and only once.
    pub(crate) fn read(mut self) -> Result<(Storage, Header, FileMeta, Origin)> {
        let mut head = vec![0u8; HEADER_SIZE];
        let got = read_up_to(&mut self.file, &mut head).map_err(|e| self.io(e))?;
        let header = format::parse_header(&head[..got], self.len)?;
        // Both bounded by `parse_header`: data_offset <= 64 + META_SIZE (rounded up) and <= len.
        head.resize(header.data_offset as usize, 0);
        self.file
            .read_exact(&mut head[HEADER_SIZE..])
            .map_err(|e| self.io(e))?;
        let (header, meta) = format::parse_head(&head, self.len)?;
        let total = usize::try_from(header.file_size).map_err(|_| {
            self.io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the file is larger than this machine's address space",
            ))
        })?;
        let mut bytes = AlignedBytes::zeroed(total).map_err(|e| self.io(e))?;
        let buf = bytes.as_mut_slice();
        buf[..head.len()].copy_from_slice(&head);
        self.file
            .read_exact(&mut buf[head.len()..])
            .map_err(|e| self.io(e))?;
        Ok((Storage::Owned(bytes), header, meta, self.origin))
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn check_regular(m: &Metadata) -> io::Result<()> {
    if m.is_file() {
        return Ok(());
    }
    let ft = m.file_type();
    let what = if ft.is_dir() {
        "a directory"
    } else {
        file_kind(&ft)
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {what}, not a regular file (a model must be a regular file)"),
    ))
}

#[cfg(unix)]
fn file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn file_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}
