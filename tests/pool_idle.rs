//! An idle pool costs no CPU: its workers sleep (after spinning for at most `Pool::spin`) until a
//! call wakes them. Measured as this process's CPU time (`getrusage`) over 1.5 s of idleness after
//! a burst of calls, against a margin (5% of one core) that only a pool spinning while idle could
//! exceed. Alone in its test binary, so no other test's work is counted.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ple::Pool;

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is valid (integers only) and getrusage writes one.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn an_idle_pool_uses_no_cpu() {
    let default = Pool::new(4).unwrap();
    let long_spin = Pool::new(3).unwrap();
    long_spin.set_spin(Duration::from_millis(5));
    let no_spin = Pool::new(2).unwrap();
    no_spin.set_spin(Duration::ZERO);
    let pools = [default, long_spin, no_spin];
    for pool in &pools {
        let sum = AtomicUsize::new(0);
        for _ in 0..200 {
            pool.run(pool.threads() * 4, &|i| {
                sum.fetch_add(i, Ordering::Relaxed);
            });
        }
    }
    // Past every spin window.
    std::thread::sleep(Duration::from_millis(100));
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    eprintln!(
        "idle pools of 4, 3 and 2 threads: {:.3} ms of CPU in {:.3} s",
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64()
    );
    assert!(
        cpu < wall / 20,
        "idle pools used {cpu:?} of CPU in {wall:?}: their workers do not sleep"
    );
    drop(pools);
}
