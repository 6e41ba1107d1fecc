//! The operator: everything that talks to Kubernetes. The logic it applies
//! lives in the pure `mesh` crate.

pub mod clusters;
pub mod crd;
pub mod kubeconfig;
pub mod leader;
pub mod metrics;
