//! Running a program to its end: its stdout returned, its exit status and
//! stderr in the error. For the tools the tests, the bench and the network
//! lab drive (`kubectl`, `ip`, `wg`, ...).

use std::{
    ffi::OsStr,
    process::{ExitStatus, Stdio},
};

use tokio::io::AsyncWriteExt;

/// Why a program did not give its output.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("running `{command}`: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Runs `program args`, with `input` on its stdin if given; returns its
/// stdout. The child is killed if the future is dropped.
pub async fn output<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    input: Option<&str>,
) -> Result<String, CommandError> {
    let command = std::iter::once(program.as_ref())
        .chain(args.iter().map(AsRef::as_ref))
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let io = |source| CommandError::Io {
        command: command.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading its input is judged by its
        // exit status, not by the broken pipe.
        match stdin.write_all(input.as_bytes()).await {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => return Err(io(error)),
            _ => {}
        }
    }
    let output = child.wait_with_output().await.map_err(io)?;
    if !output.status.success() {
        return Err(CommandError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
