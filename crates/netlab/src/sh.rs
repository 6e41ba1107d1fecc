//! Running the host's network tools (`ip`, `wg`, `iptables`, ...) with errors
//! that name the command and quote what it printed.

use std::process::Stdio;

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
    Ok(testkit::command::output(program, args, input).await?)
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
