//! What the operating system does with a model's pages: access advice (`madvise`), the warm-up
//! pass that brings every page into memory before the first requests, locking (`mlock`) and
//! residency (`mincore`). Unix only; elsewhere advice is skipped, warming still touches every
//! page, and locking and residency report that the platform lacks them.
//!
//! Every function takes a byte range the caller owns (a mapping or an allocation) and only reads
//! it or changes how the kernel manages its pages: none of them writes the bytes, so they are
//! safe while other threads score from the same range.

use std::io;
use std::ops::ControlFlow;

/// Advice for a range of pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Advice {
    /// The kernel's default: read ahead around a fault.
    Normal,
    /// Rows are read at random: fault in only the page touched, no readahead.
    Random,
    /// Start reading these pages now (asynchronously for a file).
    WillNeed,
    /// Back this anonymous memory with huge pages where possible (fewer TLB misses).
    HugePage,
    /// Fault the pages in now, reading them if needed (Linux 5.14+), without a fault per page.
    PopulateRead,
}

/// The page size (4 KiB on x86-64, 4 or 16 or 64 KiB on ARM).
pub(crate) fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            return n as usize;
        }
    }
    4096
}

/// The whole pages covering `bytes`: (first page's address, length), widened outward.
fn pages_around(bytes: &[u8]) -> (usize, usize) {
    let page = page_size();
    let start = bytes.as_ptr() as usize;
    let first = start & !(page - 1);
    let end = (start + bytes.len()).next_multiple_of(page);
    (first, end - first)
}

/// The whole pages inside `bytes` (narrowed inward): advice that changes how memory is backed
/// must not reach a neighbouring allocation.
fn pages_within(bytes: &[u8]) -> (usize, usize) {
    let page = page_size();
    let start = (bytes.as_ptr() as usize).next_multiple_of(page);
    let end = (bytes.as_ptr() as usize + bytes.len()) & !(page - 1);
    (start, end.saturating_sub(start))
}

/// Gives the kernel `advice` for the pages of `bytes`. Pages only partly inside `bytes` get it
/// too (advice is per page), except huge-page advice, which is given to whole pages inside only.
pub(crate) fn advise(bytes: &[u8], advice: Advice) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        let (addr, len) = if advice == Advice::HugePage {
            pages_within(bytes)
        } else {
            pages_around(bytes)
        };
        if len == 0 {
            return Ok(());
        }
        let code = match advice {
            Advice::Normal => libc::MADV_NORMAL,
            Advice::Random => libc::MADV_RANDOM,
            Advice::WillNeed => libc::MADV_WILLNEED,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Advice::HugePage => libc::MADV_HUGEPAGE,
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Advice::HugePage => return Ok(()),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Advice::PopulateRead => libc::MADV_POPULATE_READ,
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Advice::PopulateRead => return Err(io::ErrorKind::Unsupported.into()),
        };
        // SAFETY: `addr..addr + len` are whole pages of memory the caller has mapped or
        // allocated (widened to page boundaries; the neighbouring bytes of a page are mapped
        // with it). Advice changes how the kernel pages them, never their contents.
        if unsafe { libc::madvise(addr as *mut libc::c_void, len, code) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    let _ = advice;
    Ok(())
}

/// Bytes the warm-up pass touches between progress reports and cancellation checks.
pub(crate) const WARM_CHUNK: usize = 8 << 20;
/// How far ahead of the pass the warm-up asks the kernel to read (`WillNeed`): enough queued
/// reads to keep a disk busy while the pages behind are mapped, whatever the device's own
/// readahead (this machine's is 8 MiB, most are 128 KiB), and a bounded amount, so that a file
/// larger than RAM does not evict its own start before the pass reaches it.
const WARM_AHEAD: usize = 256 << 20;

/// Brings every page of `bytes` into memory: asks the kernel to read ahead of the pass (`WillNeed`,
/// `WARM_AHEAD` bytes ahead) and maps each chunk into this process (`PopulateRead`, or where the
/// kernel lacks it, a read of one byte per page), so that each page is both in the page cache and
/// mapped (no fault left for the first requests). Calls
/// `progress(done, total)` after each chunk of `WARM_CHUNK` bytes (and once at the start); it
/// stops early, returning `Break`, when `progress` does.
pub(crate) fn touch(
    bytes: &[u8],
    file_backed: bool,
    progress: &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let total = bytes.len() as u64;
    progress(0, total)?;
    let page = page_size();
    let mut asked = 0;
    let mut done = 0;
    while done < bytes.len() {
        if file_backed && asked < bytes.len() && asked < done + WARM_AHEAD {
            let end = (done + WARM_AHEAD).min(bytes.len());
            // Advice is only a hint: a refusal leaves the touching below to fault the pages in.
            let _ = advise(&bytes[asked..end], Advice::WillNeed);
            asked = end;
        }
        let end = (done + WARM_CHUNK).min(bytes.len());
        // One call maps the whole chunk instead of a page fault per page (over a cold 4 GiB file
        // the two were equal within this machine's noise, docs/PERFORMANCE.md); refused (an older
        // kernel, an interrupting signal), the pages are touched instead.
        if advise(&bytes[done..end], Advice::PopulateRead).is_err() {
            let mut sum = 0u8;
            let mut at = done;
            while at < end {
                // A volatile read, so the compiler keeps every page's load.
                // SAFETY: `at < end <= bytes.len()`: in bounds of a live slice.
                sum ^= unsafe { std::ptr::read_volatile(bytes.as_ptr().add(at)) };
                at += page;
            }
            std::hint::black_box(sum);
        }
        done = end;
        progress(done as u64, total)?;
    }
    ControlFlow::Continue(())
}

/// Locks the pages of `bytes` in RAM (`mlock`): they are read in now if they are not resident,
/// and never paged out while locked. A refusal names `RLIMIT_MEMLOCK`, the usual cause.
pub(crate) fn lock(bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        let (addr, len) = pages_around(bytes);
        // SAFETY: whole pages of memory the caller has mapped or allocated; mlock only pins them.
        if unsafe { sys_mlock(addr, len) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        let limit = match memlock_limit() {
            Some(u64::MAX) => "unlimited".to_string(),
            Some(n) => format!("{n} bytes"),
            None => "unknown".to_string(),
        };
        Err(io::Error::new(
            err.kind(),
            format!(
                "mlock of {len} bytes refused ({err}); RLIMIT_MEMLOCK is {limit} for this \
                 process: raise it (`ulimit -l`, systemd LimitMEMLOCK=, docker --ulimit memlock=) \
                 or grant CAP_IPC_LOCK, or open without locking"
            ),
        ))
    }
    #[cfg(not(unix))]
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "locking memory is not supported on this platform",
    ))
}

/// Undoes `lock` for memory about to be freed (a mapping is unlocked when it is unmapped).
pub(crate) fn unlock(bytes: &[u8]) {
    #[cfg(unix)]
    if !bytes.is_empty() {
        let (addr, len) = pages_around(bytes);
        // SAFETY: as in `lock`; unlocking only unpins the pages.
        unsafe { sys_munlock(addr, len) };
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// `mlock` as the system call itself on Linux: AddressSanitizer replaces the libc function with
/// one that does nothing and succeeds, which would hide a refusal from a C program built with it.
///
/// # Safety
/// `addr..addr + len` are whole pages of the caller's memory.
#[cfg(unix)]
unsafe fn sys_mlock(addr: usize, len: usize) -> libc::c_long {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: per this function's contract.
    return unsafe { libc::syscall(libc::SYS_mlock, addr, len) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: per this function's contract.
    return unsafe { libc::mlock(addr as *const libc::c_void, len) }.into();
}

/// `munlock`, like `sys_mlock`.
///
/// # Safety
/// As `sys_mlock`.
#[cfg(unix)]
unsafe fn sys_munlock(addr: usize, len: usize) -> libc::c_long {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: per this function's contract.
    return unsafe { libc::syscall(libc::SYS_munlock, addr, len) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: per this function's contract.
    return unsafe { libc::munlock(addr as *const libc::c_void, len) }.into();
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` for unlimited).
#[cfg(unix)]
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return None;
    }
    Some(if lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
        {
            lim.rlim_cur as u64
        }
    })
}

/// Major page faults (pages read from disk) this thread has taken so far; `None` where the
/// count is not available (not Linux).
pub(crate) fn thread_major_faults() -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: an all-zero rusage is a valid value (integers and timevals).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid rusage to write.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0 {
            return Some(usage.ru_majflt as u64);
        }
    }
    None
}

/// Bytes of `bytes` whose pages are resident in RAM now (`mincore`). A page counts whole, except
/// the parts of the first and last page outside `bytes`.
pub(crate) fn resident(bytes: &[u8]) -> io::Result<u64> {
    if bytes.is_empty() {
        return Ok(0);
    }
    #[cfg(unix)]
    {
        let page = page_size();
        let (first, len) = pages_around(bytes);
        let start = bytes.as_ptr() as usize;
        let end = start + bytes.len();
        // Pages per call: a 4 KiB vector covers 16 MiB of 4 KiB pages.
        const PAGES_PER_CALL: usize = 4096;
        let mut vec = vec![0u8; PAGES_PER_CALL];
        let mut total = 0u64;
        let mut addr = first;
        while addr < first + len {
            let n = ((first + len - addr) / page).min(PAGES_PER_CALL);
            // SAFETY: `addr..addr + n * page` are whole pages of the caller's mapping or
            // allocation; `vec` holds `n` bytes (one per page) for the answer.
            let r = unsafe {
                libc::mincore(addr as *mut libc::c_void, n * page, vec.as_mut_ptr().cast())
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            for (i, &v) in vec[..n].iter().enumerate() {
                if v & 1 == 1 {
                    let p = addr + i * page;
                    total += ((p + page).min(end) - p.max(start)) as u64;
                }
            }
            addr += n * page;
        }
        Ok(total)
    }
    #[cfg(not(unix))]
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "residency (mincore) is not available on this platform",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_ranges_widen_and_narrow() {
        let page = page_size();
        let buf = vec![0u8; 5 * page];
        let base = buf.as_ptr() as usize;
        let off = base.next_multiple_of(page) - base + 10;
        let s = &buf[off..off + 2 * page];
        let (a, l) = pages_around(s);
        assert!(a <= s.as_ptr() as usize && a + l >= s.as_ptr() as usize + s.len());
        assert_eq!(l, 3 * page);
        let (a, l) = pages_within(s);
        assert!(a >= s.as_ptr() as usize && a + l <= s.as_ptr() as usize + s.len());
        assert_eq!(l, page);
    }

    #[test]
    fn touch_reports_progress_and_stops_when_asked() {
        let buf = vec![1u8; 3 * WARM_CHUNK + 5];
        let mut seen = Vec::new();
        let r = touch(&buf, false, &mut |d, t| {
            seen.push((d, t));
            ControlFlow::Continue(())
        });
        assert_eq!(r, ControlFlow::Continue(()));
        let n = buf.len() as u64;
        let c = WARM_CHUNK as u64;
        assert_eq!(seen, [(0, n), (c, n), (2 * c, n), (3 * c, n), (n, n)]);
        let mut calls = 0;
        let r = touch(&buf, false, &mut |_, _| {
            calls += 1;
            if calls == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((r, calls), (ControlFlow::Break(()), 2));
    }

    #[cfg(unix)]
    #[test]
    fn touched_memory_is_resident() {
        let buf = vec![7u8; 64 * page_size()];
        let _ = touch(&buf, false, &mut |_, _| ControlFlow::Continue(()));
        assert_eq!(resident(&buf).unwrap(), buf.len() as u64);
        assert_eq!(resident(&buf[3..100]).unwrap(), 97);
    }
}
