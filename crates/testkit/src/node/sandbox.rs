//! The node's sandbox ("pause") image, made here from `make tools`' static
//! `pause` as an OCI archive of one layer, and imported into the node's
//! containerd: the node pulls nothing it was not given.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{NodeError, run};

/// The sandbox image's name. `localhost/…`: a name without a registry host
/// would be taken for Docker Hub's and pulled from there.
pub const IMAGE: &str = "localhost/kcm-pause:1";

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Writes the archive `dir/pause.oci.tar` holding `binary` as `/pause`.
pub fn archive(dir: &Path, binary: &Path) -> Result<PathBuf, NodeError> {
    let staging = dir.join("pause-image");
    let blobs = staging.join("layout/blobs/sha256");
    std::fs::create_dir_all(staging.join("root"))?;
    std::fs::create_dir_all(&blobs)?;
    std::fs::copy(binary, staging.join("root/pause"))?;
    let layer = staging.join("layer.tar");
    run(
        "tar",
        &[
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=0755",
            "-C",
            &staging.join("root").display().to_string(),
            "-cf",
            &layer.display().to_string(),
            "pause",
        ],
    )?;
    let layer = blob(&blobs, &std::fs::read(&layer)?)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/pause"], "User": "65535:65535" },
        "rootfs": { "type": "layers", "diff_ids": [layer.0] },
    });
    let config = blob(&blobs, config.to_string().as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.0, "size": config.1,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.0, "size": layer.1,
        }],
    });
    let manifest = blob(&blobs, manifest.to_string().as_bytes())?;
    let tag = IMAGE.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST, "digest": manifest.0, "size": manifest.1,
            "annotations": {
                "io.containerd.image.name": IMAGE,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let layout = staging.join("layout");
    std::fs::write(layout.join("index.json"), index.to_string())?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = dir.join("pause.oci.tar");
    run(
        "tar",
        &[
            "-C",
            &layout.display().to_string(),
            "-cf",
            &archive.display().to_string(),
            ".",
        ],
    )?;
    Ok(archive)
}

/// Stores `bytes` as a blob; returns its digest and size.
fn blob(blobs: &Path, bytes: &[u8]) -> Result<(String, usize), NodeError> {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    std::fs::write(blobs.join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}
