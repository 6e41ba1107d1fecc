//! The node's configuration files: containerd, the CNI network, kubelet and
//! kube-proxy, each confined to the node's directory and namespace (the
//! settings that make them run on these machines: docs/testing.md).

use std::path::Path;

/// containerd 1.6: root, state, socket and everything else under `dir`; the
/// `native` snapshotter (no mounts, works in any container); the CRI plugin
/// with the sandbox image `pause` (imported, never pulled), may not lower a
/// container's oom_score_adj (else runc fails every sandbox here), its CNI
/// network from `dir/cni`, and registries from `dir/certs.d`.
pub fn containerd(dir: &Path, pause: &str) -> String {
    let dir = dir.display();
    format!(
        r#"version = 2
root = "{dir}/containerd/root"
state = "{dir}/containerd/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{dir}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dir}/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dir}/certs.d"
"#
    )
}

/// The pods' network: a bridge in the node's namespace, the node the
/// gateway, addresses from `pod_cidr` kept under `dir`. No masquerading: the
/// host routes the pod range to the node.
pub fn cni(dir: &Path, name: &str, pod_cidr: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": pod_cidr }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": dir.join("cni-ipam"),
            },
        }],
    })
    .to_string()
}

/// containerd's `hosts.toml` for a registry that speaks plain HTTP.
pub fn plain_http_registry(host: &str) -> String {
    format!(
        "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

/// kubelet 1.37 on cgroup v1 without systemd: cgroupfs, no QoS cgroups, no
/// allocatable enforcement, no local storage isolation, swap tolerated; its
/// API on the node's address for the CA's clients only; no DNS for pods
/// (there is none to reach); no image garbage collection or disk eviction
/// (the host's disk is not the node's). Without QoS cgroups, containerd puts
/// each container in the cgroup `/k8s.io/<container id>`.
pub fn kubelet(dir: &Path, node_address: &str) -> String {
    let dir = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_address}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {dir}/ca.crt
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
containerRuntimeEndpoint: unix://{dir}/containerd.sock
podLogsDir: {dir}/pod-logs
resolvConf: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "0%"
  imagefs.available: "0%"
"#
    )
}

/// kube-proxy in iptables mode, in the node's namespace: it routes the
/// `kubernetes` Service (and any other) to its endpoints. It leaves the
/// conntrack sysctls alone: they are the host's, not the namespace's.
pub fn kube_proxy(dir: &Path, node: &str, pod_cidr: &str) -> String {
    let dir = dir.display();
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {dir}/kubeconfig
hostnameOverride: {node}
mode: iptables
clusterCIDR: {pod_cidr}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#
    )
}
