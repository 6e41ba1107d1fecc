//! Running the host's network tools (`ip`, `wg`, `iptables`, ...) with errors
//! that name the command and quote what it printed.

use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

/// Runs `program args`, returns its stdout; fails with its stderr.
pub async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_with_input(program, args, None).await
}

/// Runs `program args` with `input` on its stdin.
pub async fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> anyhow::Result<String> {
    let line = command_line(program, args);
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
        .with_context(|| format!("starting `{line}`"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading its input is judged by its
        // exit status, not by the broken pipe.
        match stdin.write_all(input.as_bytes()).await {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(error).with_context(|| format!("writing the input of `{line}`"));
            }
            _ => {}
        }
    }
    let output = child
        .wait_with_output()
        .await
        .with_context(|| format!("running `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `program args` and ignores a failure: for cleanup, where what is
/// being removed may already be gone.
pub fn run_quietly(program: &str, args: &[&str]) {
    let _ = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
