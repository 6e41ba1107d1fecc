//! The user guides' `sh` blocks, found by page and heading and run with bash
//! as a user would: the pinned kubectl and helm, the operator's binary on
//! PATH, from the repository root.

use std::path::{Path, PathBuf};

pub const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The air-gapped install: the image and the chart through a registry of
/// one's own, then `helm install` from it. `tests/install.rs` runs them.
pub const FROM_YOUR_OWN_REGISTRY: &[(&str, &str)] = &[(
    "docs/install.md",
    "## Air-gapped: from a registry of your own",
)];

/// Waiting for the operator's pod after the air-gapped install.
pub const THE_OPERATORS_POD: &[(&str, &str)] = &[("docs/install.md", "### The operator's pod")];

/// Connecting a remote, declaring the mesh and checking it.
pub const CONNECT_AND_CHECK: &[(&str, &str)] = &[
    ("docs/connect.md", "## 1. Connect the remote"),
    ("docs/connect.md", "## 2. Declare the mesh"),
    ("docs/connect.md", "## 3. Check it"),
];

/// The air-gapped upgrade, to `$VERSION`.
pub const UPGRADE_FROM_YOUR_OWN_REGISTRY: &[(&str, &str)] =
    &[("docs/install.md", "### Upgrade from your registry")];

/// The air-gapped uninstall, the ClusterMesh first.
pub const UNINSTALL_FROM_YOUR_OWN_REGISTRY: &[(&str, &str)] =
    &[("docs/install.md", "### Uninstall from your registry")];

/// Every section of install.md that `tests/install.rs` runs.
pub const INSTALL_PATH: &[(&str, &str)] = &[
    FROM_YOUR_OWN_REGISTRY[0],
    THE_OPERATORS_POD[0],
    UPGRADE_FROM_YOUR_OWN_REGISTRY[0],
    UNINSTALL_FROM_YOUR_OWN_REGISTRY[0],
];

/// Each `sh` block of a markdown page with the heading it is under.
pub fn sh_blocks(page: &str) -> Vec<(String, String)> {
    blocks(page, "```sh")
}

/// Each block opening with `fence` (` ```sh `, ` ```yaml `) of a markdown
/// page, with the heading it is under.
pub fn blocks(page: &str, fence: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{REPO}/{page}")).unwrap();
    let mut blocks = Vec::new();
    let mut heading = String::new();
    // Inside any fenced block: its opening line and its body so far.
    let mut block: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut block {
            Some((opening, body)) if line.starts_with("```") => {
                if opening.starts_with(fence) {
                    blocks.push((heading.clone(), std::mem::take(body)));
                }
                block = None;
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None if line.starts_with("```") => block = Some((line.to_owned(), String::new())),
            None if line.starts_with('#') => heading = line.to_owned(),
            None => {}
        }
    }
    blocks
}

/// The commands of each `(page, heading)` section, in that order.
pub fn script(sections: &[(&str, &str)]) -> String {
    sections
        .iter()
        .flat_map(|(page, section)| {
            let blocks = sh_blocks(page);
            assert!(
                blocks.iter().any(|(h, _)| h.starts_with(section)),
                "{page} has no commands under {section:?}"
            );
            blocks
                .into_iter()
                .filter(move |(heading, _)| heading.starts_with(section))
                .map(|(_, body)| body)
        })
        .collect()
}

/// Runs `script` with bash (stopping at the first failing command) as a user
/// would: the given kubeconfig, the operator and the pinned tools on PATH,
/// from the repository root, with `env` added. Returns what it printed.
pub async fn run(script: &str, kubeconfig: &Path, home: &Path, env: &[(&str, &str)]) -> String {
    assert!(!script.trim().is_empty(), "no commands found");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_kilo-clustermesh-operator"));
    let path = format!(
        "{}:{REPO}/.tools/bin:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(REPO)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        // The test's API servers are on loopback, and so is the operator.
        .env("KCM_ALLOW_LOOPBACK_SERVER", "true")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the docs' commands failed:\n{script}\n--- output ---\n{said}"
    );
    said
}
