//! Test equipment, never shipped: the network lab that proves the data plane
//! of meshes the operator configures (`make demo`, `make e2e`).
//!
//! - [`lab`]: clusters of nodes made of network namespaces, real WireGuard
//!   (`wireguard-go`), real routes and iptables, Nodes on real API servers;
//! - [`agent`]: a node agent that turns Nodes and Kilo Peers into WireGuard
//!   config, routes and NAT rules the way Kilo's `kg` does
//!   (`docs/netlab.md` traces each behaviour to the Kilo function it mirrors);
//! - [`mesh`]: three clusters meshed by the real operator binary, joined
//!   with its `connect` command and a ClusterMesh applied with `kubectl`;
//! - [`probe`]: pings and service requests from pods, WireGuard state.

pub mod agent;
pub mod echo;
pub mod forward;
pub mod lab;
pub mod mesh;
pub mod probe;
pub mod sh;
