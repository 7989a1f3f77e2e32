//! A small command-line parser: `--name value`, `--name=value`, short aliases (`-o FILE`),
//! boolean flags, repeatable options, `--` to end options, and `-h` / `--help` anywhere.
//!
//! Each command declares its options as a table of [`Opt`]; anything else is a usage error that
//! names the command and, when the option looks like a typo, suggests the closest one.

use super::CliError;

/// One option a command accepts.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// Long name without the dashes.
    pub name: &'static str,
    pub short: Option<char>,
    /// Takes a value (`--batch 16`); otherwise a flag.
    pub value: bool,
    /// May be given more than once (values accumulate).
    pub repeat: bool,
}

impl Opt {
    pub const fn flag(name: &'static str) -> Opt {
        Opt {
            name,
            short: None,
            value: false,
            repeat: false,
        }
    }
    pub const fn value(name: &'static str) -> Opt {
        Opt {
            name,
            short: None,
            value: true,
            repeat: false,
        }
    }
    pub const fn repeated(name: &'static str) -> Opt {
        Opt {
            name,
            short: None,
            value: true,
            repeat: true,
        }
    }
    pub const fn short(mut self, c: char) -> Opt {
        self.short = Some(c);
        self
    }
}

/// The result of parsing one command's arguments.
#[derive(Debug, Default)]
pub struct Parsed {
    pub help: bool,
    pub positionals: Vec<String>,
    opts: Vec<(&'static str, Option<String>)>,
}

impl Parsed {
    pub fn flag(&self, name: &str) -> bool {
        self.opts.iter().any(|(n, _)| *n == name)
    }
    /// The value of a single-valued option.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    /// Every value of a repeatable option, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.opts
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }
    /// Parses the value of `name` with `FromStr`, naming the option in the error.
    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>, CliError> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| CliError::usage(format!("--{name}: '{v}' is not {what}"))),
        }
    }
}

/// Parses `args` (the words after the command name) for command `cmd` against `opts`.
pub fn parse(cmd: &str, args: &[String], opts: &[Opt]) -> Result<Parsed, CliError> {
    let mut out = Parsed::default();
    let mut i = 0;
    let mut only_positionals = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positionals || arg == "-" || !arg.starts_with('-') {
            out.positionals.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positionals = true;
            continue;
        }
        if arg == "-h" || arg == "--help" {
            out.help = true;
            continue;
        }
        let (opt, inline) = if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let opt = opts
                .iter()
                .find(|o| o.name == name)
                .ok_or_else(|| unknown(cmd, arg, name, opts))?;
            (opt, inline)
        } else {
            // `-o FILE` or `-oFILE`.
            let mut chars = arg[1..].chars();
            let c = chars.next().expect("non-empty");
            let rest: String = chars.collect();
            let opt = opts
                .iter()
                .find(|o| o.short == Some(c))
                .ok_or_else(|| unknown(cmd, arg, &arg[1..], opts))?;
            (opt, (!rest.is_empty()).then_some(rest))
        };
        let value = if opt.value {
            match inline {
                Some(v) => Some(v),
                None if i < args.len() => {
                    i += 1;
                    Some(args[i - 1].clone())
                }
                None => {
                    return Err(CliError::usage(format!(
                        "option --{} needs a value; run 'ple {cmd} --help'",
                        opt.name
                    )))
                }
            }
        } else {
            if inline.is_some() {
                return Err(CliError::usage(format!(
                    "option --{} takes no value",
                    opt.name
                )));
            }
            None
        };
        if !opt.repeat && out.flag(opt.name) {
            return Err(CliError::usage(format!(
                "option --{} given more than once",
                opt.name
            )));
        }
        out.opts.push((opt.name, value));
    }
    Ok(out)
}

fn unknown(cmd: &str, arg: &str, name: &str, opts: &[Opt]) -> CliError {
    let close = opts
        .iter()
        .map(|o| (edit_distance(name, o.name), o.name))
        .filter(|&(d, n)| d <= 2 || n.starts_with(name))
        .min();
    match close {
        Some((_, n)) => CliError::usage(format!(
            "unknown option '{arg}' for 'ple {cmd}' (did you mean --{n}?)"
        )),
        None => CliError::usage(format!(
            "unknown option '{arg}' for 'ple {cmd}'; run 'ple {cmd} --help'"
        )),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Parses a comma-separated list of positive integers (`1,16,256`).
pub fn list_of_positive(name: &str, text: &str) -> Result<Vec<usize>, CliError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<usize>() {
            Ok(n) if n > 0 => out.push(n),
            _ => {
                return Err(CliError::usage(format!(
                    "--{name}: '{part}' is not a positive integer (expected e.g. 1,16,256)"
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(CliError::usage(format!("--{name}: empty list")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: &[Opt] = &[
        Opt::flag("json"),
        Opt::value("batch"),
        Opt::repeated("input").short('i'),
    ];

    fn p(args: &[&str]) -> Result<Parsed, CliError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse("test", &args, OPTS)
    }

    #[test]
    fn parses_forms() {
        let r = p(&[
            "m.ple",
            "--json",
            "--batch=4",
            "-i",
            "a",
            "-ib",
            "--input",
            "c",
            "--",
            "--x",
        ])
        .unwrap();
        assert!(r.flag("json"));
        assert_eq!(r.value("batch"), Some("4"));
        assert_eq!(r.values("input"), ["a", "b", "c"]);
        assert_eq!(r.positionals, ["m.ple", "--x"]);
        assert!(!r.help);
        assert!(p(&["-h"]).unwrap().help);
    }

    #[test]
    fn errors() {
        let e = p(&["--jsn"]).unwrap_err().to_string();
        assert!(e.contains("did you mean --json"), "{e}");
        assert!(p(&["--batch"])
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(p(&["--batch", "1", "--batch", "2"]).is_err());
        assert!(p(&["--json=1"]).is_err());
        assert_eq!(
            list_of_positive("batch", "1, 16,256").unwrap(),
            [1, 16, 256]
        );
        assert!(list_of_positive("batch", "0").is_err());
    }
}
