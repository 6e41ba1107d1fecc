//! The lab leaves nothing behind: `make demo` stopped with Ctrl-C removes
//! every namespace, mount and process it made, and a lab whose process was
//! killed (SIGKILL, no cleanup of its own) is removed by the next one.
//! Needs root, like the lab (`make e2e` runs it).
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::{path::PathBuf, process::Stdio, time::Duration};

use kilo_clustermesh_netlab::lab::{Lab, NodeAgent, host};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts `kcm-netlab demo` and waits until its lab is up and checked.
async fn demo_up() -> tokio::process::Child {
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_kcm-netlab"))
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stderr.take().unwrap()).lines();
    let up = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("demo: {line}");
            if line.contains("keeping the lab up") {
                return;
            }
        }
        panic!("the demo ended before its lab was up");
    };
    tokio::time::timeout(Duration::from_secs(180), up)
        .await
        .expect("the demo's lab up within 180 s");
    // Keep reading its output, so it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("demo: {line}")
        }
    });
    demo
}

#[tokio::test]
async fn ctrl_c_removes_the_lab_and_a_killed_lab_is_removed_by_the_next() {
    let demo = demo_up().await;
    let pid = demo.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait_with_output())
        .await
        .expect("the demo stops within 60 s of Ctrl-C")
        .unwrap()
        .status;
    assert!(
        status.success(),
        "the demo exited with {status} after Ctrl-C"
    );
    assert_eq!(
        host::leftovers(),
        Vec::<String>::new(),
        "Ctrl-C left these behind"
    );

    let mut demo = demo_up().await;
    demo.kill().await.unwrap();
    assert!(
        host::leftovers()
            .iter()
            .any(|l| l.starts_with("network namespace")),
        "a killed lab leaves its namespaces (this test would prove nothing otherwise)"
    );
    let tool = PathBuf::from(env!("CARGO_BIN_EXE_kcm-netlab"));
    drop(Lab::new(tool, NodeAgent::Compatible).await.unwrap());
    assert_eq!(
        host::leftovers(),
        Vec::<String>::new(),
        "the next lab did not remove the killed one"
    );
}
