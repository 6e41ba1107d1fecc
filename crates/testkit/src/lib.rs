//! Test-only: real Kubernetes control planes for integration tests.
//!
//! [`ControlPlane::start`] runs one `etcd` and one `kube-apiserver` on free
//! loopback ports, with their own CA, RBAC on and ServiceAccount token
//! signing (so the TokenRequest API works), and installs the `ClusterMesh`
//! and Kilo `Peer` CRDs. [`ControlPlane::start_many`] starts several at once,
//! one per cluster of a test mesh.
//!
//! The binaries come from `make tools` (`.tools/bin`, or `KCM_TOOLS_BIN`);
//! `KCM_KUBE_APISERVER` picks another API server binary there, e.g.
//! `kube-apiserver-1.28`.
//!
//! [`FaultProxy`] stands in front of an API server and makes it refuse,
//! blackhole or delay connections, as a partition or an overloaded server
//! would, without stopping its process.
//!
//! [`Node`] is a real node for a control plane: kubelet, kube-proxy,
//! containerd, runc and CNI in a network namespace of the test's
//! ([`NodeNetwork`]), with kube-controller-manager and kube-scheduler, so a
//! Deployment runs as a pod that reaches the API servers (root;
//! `make node-packages`).
//!
//! [`Registry`] runs a container registry (Debian's `docker-registry`) on
//! loopback, for charts and images pushed as to a cluster's own registry.
//!
//! Processes never outlive the test: they are killed when the
//! [`ControlPlane`] is dropped (also on panic), and each one is started with a
//! parent-death signal, so even a test process killed with SIGKILL takes
//! them down.

pub mod command;
mod control_plane;
mod fault_proxy;
mod http;
mod kubeconfig;
mod node;
mod pki;
mod process;
mod registry;
mod token;
mod tools;

pub use control_plane::{
    AuditedWrite, ControlPlane, Error, KUBERNETES_SERVICE_IP, client_from_yaml,
};
pub use fault_proxy::{Fault, FaultProxy};
pub use http::{http_get, metric_sum};
pub use kubeconfig::merged as merged_kubeconfig;
pub use node::{Node, NodeError, NodeNetwork};
pub use process::Process;
pub use registry::{Registry, RegistryError};
pub use token::ACCEPTED_PAST_EXPIRY;
pub use tools::binary as tool;
