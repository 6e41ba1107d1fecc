//! The ClusterMesh CRD on a real API server: it loads, and its schema and CEL
//! rules reject bad specs at `kubectl apply` time. `make test-compat` runs
//! this file against kube-apiserver 1.28, the oldest supported version.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use api::{ClusterEntry, ClusterMesh, ClusterMeshSpec};
use kube::{Api, api::PostParams};
use testkit::ControlPlane;

fn entry(name: &str, local: bool) -> ClusterEntry {
    api::fixtures::cluster_entry(name, name.len() as u8, local)
}

fn mesh(name: &str, clusters: Vec<ClusterEntry>) -> ClusterMesh {
    let mut mesh = ClusterMesh::new(
        name,
        ClusterMeshSpec {
            clusters,
            ..Default::default()
        },
    );
    mesh.metadata.namespace = Some("default".into());
    mesh
}

#[tokio::test]
async fn crd_rejects_bad_specs_with_the_rule_that_failed() {
    let plane = ControlPlane::start("crd")
        .await
        .expect("control plane starts");
    let api = Api::<ClusterMesh>::namespaced(plane.admin_client(), "default");
    let post = PostParams::default();

    let good = mesh("good", vec![entry("a", true), entry("bb", false)]);
    api.create(&post, &good)
        .await
        .expect("a valid mesh is accepted");

    let mut no_secret = entry("bb", false);
    no_secret.kubeconfig_secret_ref = None;
    let mut bad_name = entry("bb", false);
    bad_name.name = "Cluster_B".into();
    let mut no_pod_cidrs = entry("bb", false);
    no_pod_cidrs.pod_cidrs.clear();
    let mut everything = entry("bb", false);
    everything.additional_cidrs = vec!["192.168.0.0/16".into(), "0.0.0.0/0".into()];
    let mut every_service = entry("bb", false);
    every_service.service_cidr = Some("::/0".into());
    let cases = [
        (
            "one-cluster",
            vec![entry("a", true)],
            "should have at least 2 items",
        ),
        (
            "two-locals",
            vec![entry("a", true), entry("bb", true)],
            "exactly one entry of spec.clusters must have local: true",
        ),
        (
            "no-local",
            vec![entry("a", false), entry("bb", false)],
            "exactly one entry of spec.clusters must have local: true",
        ),
        (
            "same-names",
            vec![entry("a", true), entry("a", false)],
            "spec.clusters[].name must be unique",
        ),
        (
            "no-secret",
            vec![entry("a", true), no_secret],
            "kubeconfigSecretRef is required",
        ),
        (
            "bad-name",
            vec![entry("a", true), bad_name],
            "spec.clusters[1].name",
        ),
        (
            "no-pod-cidrs",
            vec![entry("a", true), no_pod_cidrs],
            "podCIDRs",
        ),
        (
            "additional-everything",
            vec![entry("a", true), everything],
            "additionalCIDRs may not hold 0.0.0.0/0 or ::/0",
        ),
        (
            "service-everything",
            vec![entry("a", true), every_service],
            "serviceCIDR may not be 0.0.0.0/0 or ::/0",
        ),
    ];
    for (name, clusters, expected) in cases {
        let error = api
            .create(&post, &mesh(name, clusters))
            .await
            .expect_err(name);
        let kube::Error::Api(status) = error else {
            panic!("{name}: not an API error: {error}")
        };
        assert_eq!(status.code, 422, "{name}: {}", status.message);
        assert!(
            status.message.contains(expected),
            "{name}: {:?} does not say {expected:?}",
            status.message
        );
    }
}
