//! The operator under test: the release binary as a process of its own, so
//! that its memory and CPU are its own, read from `/proc`, and its API
//! requests and writes from its `/metrics`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::fleet::NAMESPACE;

/// Peer writes in flight per cluster: the operator's default, and what the
/// floor's plain client uses too.
pub const WRITE_CONCURRENCY: usize = 16;

/// Client-side rate limit given to the operator unless `--operator-qps`
/// says otherwise: high enough that the API servers, not the token bucket,
/// set the pace (see docs/performance.md for the operator's own default).
pub const QPS: u32 = 5000;

/// A running `kilo-clustermesh-operator run`.
pub struct Operator {
    child: tokio::process::Child,
    pid: u32,
    metrics_port: u16,
    clock_ticks: f64,
}

/// Seconds the operator's passes spent in each stage, summed.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Stages {
    pub observe: f64,
    pub plan: f64,
    pub apply: f64,
    pub report: f64,
}

/// What the operator's `/metrics` and `/proc` say at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Requests sent to all API servers.
    pub requests: f64,
    /// Of those, Peer applies and deletes.
    pub peer_writes: f64,
    pub reconciles: f64,
    pub stages: Stages,
    pub cpu_seconds: f64,
    /// Resident memory now and at its peak, MiB.
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

impl Sample {
    /// What happened between `earlier` and this sample; memory as now.
    pub fn since(&self, earlier: &Sample) -> Sample {
        Sample {
            requests: self.requests - earlier.requests,
            peer_writes: self.peer_writes - earlier.peer_writes,
            reconciles: self.reconciles - earlier.reconciles,
            stages: Stages {
                observe: self.stages.observe - earlier.stages.observe,
                plan: self.stages.plan - earlier.stages.plan,
                apply: self.stages.apply - earlier.stages.apply,
                report: self.stages.report - earlier.stages.report,
            },
            cpu_seconds: self.cpu_seconds - earlier.cpu_seconds,
            ..*self
        }
    }
}

impl Operator {
    /// Starts the operator against the hub in `kubeconfig`, leader-elected
    /// on a new Lease `lease` as a first install would be, its logs in `log`,
    /// its clients limited to `qps` requests a second (burst twice that).
    pub fn start(
        binary: &Path,
        kubeconfig: &Path,
        lease: &str,
        log: &Path,
        qps: u32,
    ) -> anyhow::Result<Self> {
        let metrics_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log_file = std::fs::File::create(log)?;
        let child = tokio::process::Command::new(binary)
            .arg("run")
            .args(["--namespace", NAMESPACE])
            .args(["--leader-election-namespace", NAMESPACE])
            .args(["--leader-election-lease", lease])
            .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
            .arg(format!("--kube-api-qps={qps}"))
            .arg(format!("--kube-api-burst={}", 2 * qps))
            .arg(format!("--write-concurrency={WRITE_CONCURRENCY}"))
            // The fleet's nodes check in only during the churn scenario:
            // none may count as silent over a whole run.
            .arg("--node-check-in-grace=24h")
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .env("POD_NAME", "bench-operator")
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("starting kilo-clustermesh-operator run")?;
        let pid = child.id().context("the operator exited at once")?;
        Ok(Self {
            child,
            pid,
            metrics_port,
            clock_ticks: clock_ticks(),
        })
    }

    /// Metrics and resource use now.
    pub async fn sample(&mut self) -> anyhow::Result<Sample> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the operator exited: {status}");
        }
        let metrics = testkit::http_get(self.metrics_port, "/metrics").await;
        let proc_status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let proc_stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let stage = |name| {
            testkit::metric_sum(
                &metrics,
                "kilo_clustermesh_stage_duration_seconds_sum",
                &format!("stage=\"{name}\""),
            )
        };
        Ok(Sample {
            requests: testkit::metric_sum(&metrics, "kilo_clustermesh_kube_requests_total", ""),
            peer_writes: testkit::metric_sum(&metrics, "kilo_clustermesh_peer_writes_total", ""),
            reconciles: testkit::metric_sum(&metrics, "kilo_clustermesh_reconciles_total", ""),
            stages: Stages {
                observe: stage("observe"),
                plan: stage("plan"),
                apply: stage("apply"),
                report: stage("report"),
            },
            cpu_seconds: cpu_ticks(&proc_stat) / self.clock_ticks,
            rss_mib: status_kib(&proc_status, "VmRSS:") / 1024.0,
            peak_rss_mib: status_kib(&proc_status, "VmHWM:") / 1024.0,
        })
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// The release binary next to the bench's own.
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("kilo-clustermesh-operator");
    if !path.exists() {
        bail!(
            "{} is missing: `make bench` builds it (cargo build --release -p kilo-clustermesh-operator)",
            path.display()
        );
    }
    Ok(path)
}

/// A `kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> f64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks.
fn cpu_ticks(stat: &str) -> f64 {
    // The command name may hold spaces; the fields after its ')' do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    field(14).unwrap_or_default() + field(15).unwrap_or_default()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_from_proc() {
        let stat = "42 (kilo (x) op) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(cpu_ticks(stat), 300.0);
        let status = "Name:\top\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), 20480.0);
    }
}
