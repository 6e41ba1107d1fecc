//! The test kit itself, against real etcd + kube-apiserver processes.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Instant;

use api::{ClusterMesh, Peer};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Node, Secret},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
};
use kilo_clustermesh_testkit::ControlPlane;
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, PostParams},
};

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[tokio::test]
async fn three_control_planes_are_independent() {
    let started = Instant::now();
    let planes = ControlPlane::start_many(3).await.unwrap();
    println!(
        "testkit: 3 control planes started in parallel in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let maps = |plane: &ControlPlane| Api::<ConfigMap>::namespaced(plane.admin_client(), "default");
    maps(&planes[0])
        .create(&PostParams::default(), &config_map("only-in-0"))
        .await
        .unwrap();
    assert!(
        maps(&planes[0])
            .get_opt("only-in-0")
            .await
            .unwrap()
            .is_some()
    );
    for plane in &planes[1..] {
        assert!(
            maps(plane).get_opt("only-in-0").await.unwrap().is_none(),
            "{} sees cluster-0's object",
            plane.name()
        );
    }
    let urls: std::collections::BTreeSet<String> =
        planes.iter().map(ControlPlane::server_url).collect();
    assert_eq!(urls.len(), 3, "each control plane has its own API server");

    for plane in &planes {
        let client = plane.admin_client();
        Api::<ClusterMesh>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap();
        Api::<Peer>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn service_account_can_do_exactly_what_its_role_allows() {
    let plane = ControlPlane::start("rbac").await.unwrap();
    let admin = plane.admin_client();
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some("node-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("node-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "node-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some("default".into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let reader: Client = plane
        .service_account_client("default", "reader")
        .await
        .unwrap();
    let nodes = Api::<Node>::all(reader.clone());
    nodes
        .list(&ListParams::default())
        .await
        .expect("the role allows listing nodes");
    let node = Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(
        forbidden(nodes.create(&PostParams::default(), &node).await),
        "creating nodes is not in the role"
    );
    assert!(
        forbidden(
            Api::<Secret>::all(reader.clone())
                .list(&ListParams::default())
                .await
        ),
        "secrets are not in the role"
    );
    assert!(
        forbidden(Api::<Peer>::all(reader).list(&ListParams::default()).await),
        "peers are not in the role"
    );
}

#[tokio::test]
async fn restarting_the_api_server_keeps_the_data() {
    let mut plane = ControlPlane::start("restart").await.unwrap();
    let maps = Api::<ConfigMap>::namespaced(plane.admin_client(), "default");
    maps.create(&PostParams::default(), &config_map("survivor"))
        .await
        .unwrap();

    plane.stop_apiserver();
    assert!(
        maps.get("survivor").await.is_err(),
        "the API server is down"
    );

    let restarted = Instant::now();
    plane.start_apiserver().await.unwrap();
    println!(
        "testkit: API server restarted in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    assert!(maps.get_opt("survivor").await.unwrap().is_some());
}

#[tokio::test]
async fn one_control_plane_starts_with_crds_established() {
    let started = Instant::now();
    let plane = ControlPlane::start("single").await.unwrap();
    println!(
        "testkit: 1 control plane started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let version = plane.admin_client().apiserver_version().await.unwrap();
    println!("testkit: kube-apiserver {}", version.git_version);
    let kubeconfig = plane.admin_kubeconfig();
    assert!(kubeconfig.contains(&plane.server_url()));
}
