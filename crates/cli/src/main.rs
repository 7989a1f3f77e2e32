//! The `ple` command-line tool; see `ple --help` and docs/CLI.md.

fn main() -> std::process::ExitCode {
    ple_cli::main()
}
