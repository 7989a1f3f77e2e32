//! Number formatting for people: thousands separators, byte sizes, durations.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let first = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(&digits[..first]);
    for group in digits.as_bytes()[first..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).expect("ascii digits"));
    }
    out
}

/// `52544` → `51.3 KiB`; below 1 KiB the exact count (`900 B`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A duration in seconds with a unit that keeps 3–4 significant digits: `812 ns`, `18.1 µs`,
/// `2.35 ms`, `1.20 s`.
pub fn duration(secs: f64) -> String {
    let (v, unit) = if secs < 1e-6 {
        (secs * 1e9, "ns")
    } else if secs < 1e-3 {
        (secs * 1e6, "µs")
    } else if secs < 1.0 {
        (secs * 1e3, "ms")
    } else {
        (secs, "s")
    };
    if v >= 100.0 {
        format!("{v:.0} {unit}")
    } else if v >= 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// A rate with thousands separators (`55,102`), or one decimal below 100.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 100.0 {
        thousands(per_sec.round() as u64)
    } else {
        format!("{per_sec:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(bytes(900), "900 B");
        assert_eq!(bytes(52544), "51.3 KiB");
        assert_eq!(duration(18.14e-6), "18.1 µs");
        assert_eq!(duration(2.346e-3), "2.35 ms");
        assert_eq!(duration(812e-9), "812 ns");
        assert_eq!(rate(55101.6), "55,102");
    }
}
