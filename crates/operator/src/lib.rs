//! The operator: everything that talks to Kubernetes. The logic it applies
//! lives in the pure `mesh` crate.

pub mod crd;
pub mod kubeconfig;
