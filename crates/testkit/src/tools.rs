//! Where the pinned binaries built by `make tools` are.

use std::path::PathBuf;

use crate::control_plane::Error;

/// Path of a binary from `make tools`.
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    let dir = std::env::var_os("KCM_TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.tools/bin")));
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::MissingTool(path))
    }
}

/// The API server binary: `KCM_KUBE_APISERVER`, else `kube-apiserver`.
pub fn apiserver_name() -> String {
    std::env::var("KCM_KUBE_APISERVER").unwrap_or_else(|_| "kube-apiserver".into())
}
