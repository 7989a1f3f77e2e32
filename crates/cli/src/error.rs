//! Why a command stopped, and the exit code that says so.

/// A command's failure. Printed as one line, `ple: error: ...`, except [`CliError::BrokenPipe`].
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong (exit code 2).
    Usage(String),
    /// The work failed (exit code 1).
    Failed(String),
    /// Output went to a closed pipe (`ple score ... | head`): stop quietly (exit code 0).
    BrokenPipe,
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }

    pub fn failed(msg: impl Into<String>) -> CliError {
        CliError::Failed(msg.into())
    }

    /// An I/O error while writing output to `what`.
    pub fn write(what: &str, e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Failed(format!("cannot write {what}: {e}"))
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::BrokenPipe => 0,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<ple::Error> for CliError {
    fn from(e: ple::Error) -> CliError {
        CliError::Failed(e.to_string())
    }
}
