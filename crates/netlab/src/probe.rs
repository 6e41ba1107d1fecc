//! Probes from inside the lab: pings between pods, requests to services, a
//! continuous ping that counts losses, and what WireGuard says.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    lab::{Lab, plan::SERVICE_PORT},
    sh::run,
};

/// One ping between two pods.
#[derive(Clone, Debug, Serialize)]
pub struct Ping {
    pub from: String,
    pub to: String,
    pub to_ip: Ipv4Addr,
    /// Average round trip in ms, when a reply came.
    pub rtt_ms: Option<f64>,
}

impl Ping {
    pub fn reached(&self) -> bool {
        self.rtt_ms.is_some()
    }
}

/// Pings `ip` from the pod namespace `from`: up to `count` tries until one
/// answers; the round trip of the answered ones.
pub async fn ping(from: &str, ip: Ipv4Addr, count: u32) -> Option<f64> {
    let output = tokio::process::Command::new("ip")
        .args([
            "netns", "exec", from, "ping", "-n", "-q", "-W", "1", "-i", "0.2",
        ])
        .args(["-c", &count.to_string(), &ip.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // rtt min/avg/max/mdev = 0.512/0.612/0.712/0.100 ms
    text.lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.starts_with("rtt")))
        .and_then(|(_, v)| v.split('/').nth(1)?.parse().ok())
}

/// Every pod pings every pod of the other clusters (all at once).
pub async fn ping_matrix(lab: &Lab) -> Vec<Ping> {
    let pods: Vec<(String, String, Ipv4Addr)> = lab
        .all_nodes()
        .iter()
        .flat_map(|n| {
            n.pods
                .iter()
                .map(move |p| (n.cluster.clone(), p.netns.clone(), p.ip))
        })
        .collect();
    let pairs = pods.iter().flat_map(|(from_cluster, from, _)| {
        pods.iter()
            .filter(move |(to_cluster, ..)| to_cluster != from_cluster)
            .map(move |(_, to, ip)| (from.clone(), to.clone(), *ip))
    });
    futures::future::join_all(pairs.map(|(from, to, to_ip)| async move {
        let rtt_ms = ping(&from, to_ip, 3).await;
        Ping {
            from,
            to,
            to_ip,
            rtt_ms,
        }
    }))
    .await
}

/// Repeats [`ping_matrix`] until every pair answers, for at most `limit`,
/// and returns the last one: a first packet waits for its tunnel's first
/// handshake, which WireGuard tries again only after 5 s when it is lost
/// (for example while the other end's agent is still adding the peer).
pub async fn settled_ping_matrix(lab: &Lab, limit: Duration) -> Vec<Ping> {
    let deadline = Instant::now() + limit;
    loop {
        let matrix = ping_matrix(lab).await;
        if matrix.iter().all(Ping::reached) || Instant::now() > deadline {
            return matrix;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Repeats [`service_matrix`] until every request is answered, for at most
/// `limit`, and returns the last one.
pub async fn settled_service_matrix(lab: &Lab, limit: Duration) -> Vec<ServiceProbe> {
    let deadline = Instant::now() + limit;
    loop {
        let probes = service_matrix(lab).await;
        if probes.iter().all(|p| p.reply.is_ok()) || Instant::now() > deadline {
            return probes;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The matrix as a table: rows are sources, columns destinations, cells
/// the round trip or `FAIL`.
pub fn render_matrix(pings: &[Ping]) -> String {
    let mut columns: Vec<&str> = pings.iter().map(|p| p.to.as_str()).collect();
    columns.sort();
    columns.dedup();
    let mut rows: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    for p in pings {
        let cell = p
            .rtt_ms
            .map(|ms| format!("{ms:.2} ms"))
            .unwrap_or_else(|| "FAIL".into());
        rows.entry(&p.from).or_default().insert(&p.to, cell);
    }
    let mut out = format!("{:<14}", "from \\ to");
    for c in &columns {
        out.push_str(&format!("{c:>14}"));
    }
    for (from, cells) in rows {
        out.push_str(&format!("\n{from:<14}"));
        for c in &columns {
            out.push_str(&format!(
                "{:>14}",
                cells.get(c).map(String::as_str).unwrap_or("-")
            ));
        }
    }
    out
}

/// One request to a cluster's ClusterIP.
#[derive(Debug, Serialize)]
pub struct ServiceProbe {
    pub from: String,
    pub service: String,
    #[serde(serialize_with = "serialize_reply")]
    pub reply: anyhow::Result<String>,
}

fn serialize_reply<S: serde::Serializer>(
    reply: &anyhow::Result<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match reply {
        Ok(reply) => s.serialize_str(reply),
        Err(error) => s.serialize_str(&format!("error: {error:#}")),
    }
}

/// Requests `service_ip`'s port from the pod namespace `from`.
pub async fn fetch(lab: &Lab, from: &str, service_ip: Ipv4Addr) -> anyhow::Result<String> {
    fetch_with(lab.tool(), from, service_ip).await
}

async fn fetch_with(tool: &Path, from: &str, service_ip: Ipv4Addr) -> anyhow::Result<String> {
    let address = format!("{service_ip}:{SERVICE_PORT}");
    let tool = tool.display().to_string();
    let reply = run(
        "ip",
        &[
            "netns",
            "exec",
            from,
            &tool,
            "fetch",
            &address,
            "--timeout",
            "2s",
        ],
    )
    .await?;
    Ok(reply.trim().to_owned())
}

/// Each cluster's ClusterIP from the first pod of every other cluster.
pub async fn service_matrix(lab: &Lab) -> Vec<ServiceProbe> {
    let mut probes = Vec::new();
    let clusters: Vec<_> = lab.clusters().cloned().collect();
    for target in &clusters {
        for source in clusters.iter().filter(|c| c.name != target.name) {
            let Some(pod) = lab
                .nodes(&source.name)
                .first()
                .and_then(|n| n.pods.first().cloned())
            else {
                continue;
            };
            let reply = fetch(lab, &pod.netns, target.service_ip()).await;
            probes.push(ServiceProbe {
                from: pod.netns,
                service: format!("{} {}:{SERVICE_PORT}", target.name, target.service_ip()),
                reply,
            });
        }
    }
    probes
}

pub fn render_services(probes: &[ServiceProbe]) -> String {
    probes
        .iter()
        .map(|p| {
            let reply = match &p.reply {
                Ok(reply) => format!("answered by {reply}"),
                Err(error) => format!("FAIL: {error:#}"),
            };
            format!("{:<14} -> {:<28} {reply}", p.from, p.service)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A ping running in the background, every `interval`, until stopped.
pub struct ContinuousPing {
    child: tokio::process::Child,
}

/// What a [`ContinuousPing`] saw.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Loss {
    pub sent: u64,
    pub received: u64,
    /// The longest time between two consecutive replies, in seconds.
    pub longest_gap_seconds: f64,
}

impl Loss {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

impl ContinuousPing {
    /// Pings `ip` from pod `from` every `interval` for at most `limit`.
    pub fn start(
        from: &str,
        ip: Ipv4Addr,
        interval: Duration,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", from, "ping", "-n", "-D"])
            .args(["-i", &format!("{:.1}", interval.as_secs_f64())])
            .args(["-w", &limit.as_secs().to_string(), &ip.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting ping")?;
        Ok(Self { child })
    }

    /// Stops it (SIGINT, so it prints its summary) and counts. A request
    /// sent in the last second may not have had its answer yet: it is not
    /// counted as lost.
    pub async fn stop(self) -> anyhow::Result<Loss> {
        if let Some(pid) = self.child.id() {
            run("kill", &["-INT", &pid.to_string()]).await?;
        }
        let output = self.child.wait_with_output().await?;
        let text = String::from_utf8_lossy(&output.stdout);
        // "[1764094105.123456] 64 bytes from 10.2.1.11: icmp_seq=3 ttl=62 time=0.6 ms"
        let replies: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|l| {
                let time = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
                let seq = l
                    .split("icmp_seq=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some((time, seq))
            })
            .collect();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .with_context(|| format!("no summary from ping: {text}"))?;
        let transmitted: u64 = line
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .context("packets transmitted")?;
        let in_flight = u64::from(!replies.iter().any(|(_, seq)| *seq == transmitted));
        let longest_gap_seconds = replies
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .fold(0.0, f64::max);
        Ok(Loss {
            sent: transmitted - in_flight,
            received: replies.len() as u64,
            longest_gap_seconds,
        })
    }
}

/// Requests to a service, one every `interval`, in the background.
pub struct ContinuousFetch {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<(Instant, Result<String, String>)>>,
}

/// What a [`ContinuousFetch`] saw.
#[derive(Clone, Debug, Serialize)]
pub struct Gaps {
    pub requests: usize,
    pub answered: usize,
    /// The longest time between two answered requests, in seconds.
    pub longest_gap_seconds: f64,
    /// Why the first unanswered request failed.
    pub first_error: Option<String>,
}

impl ContinuousFetch {
    pub fn start(tool: &Path, from: &str, service_ip: Ipv4Addr, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let (tool, from, flag, count): (PathBuf, String, _, _) = (
            tool.to_owned(),
            from.to_owned(),
            stop.clone(),
            answered.clone(),
        );
        let task = tokio::spawn(async move {
            let mut results = Vec::new();
            // Bounded: at most ten minutes of requests.
            for _ in 0..(600_000 / interval.as_millis().max(1)) {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let reply = fetch_with(&tool, &from, service_ip)
                    .await
                    .map_err(|e| format!("{e:#}"));
                if reply.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                results.push((Instant::now(), reply));
                tokio::time::sleep(interval).await;
            }
            results
        });
        Self {
            stop,
            answered,
            task,
        }
    }

    /// How many requests were answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> Gaps {
        self.stop.store(true, Ordering::Relaxed);
        let results = self.task.await.unwrap_or_default();
        let answered: Vec<Instant> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(t, _)| *t)
            .collect();
        Gaps {
            requests: results.len(),
            answered: answered.len(),
            first_error: results.iter().find_map(|(_, r)| r.clone().err()),
            longest_gap_seconds: answered
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64())
                .fold(0.0, f64::max),
        }
    }
}

/// `wg show kilo0 dump` of a node: each peer's key, allowed IPs and the
/// seconds since its latest handshake (`None`: never).
pub async fn wireguard_peers(
    lab: &Lab,
    netns: &str,
) -> anyhow::Result<BTreeMap<String, (Vec<String>, Option<u64>)>> {
    let dump = lab.on_node(netns, &["wg", "show", "kilo0", "dump"]).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // The first line is the interface; then: key psk endpoint allowed handshake rx tx keepalive
    Ok(dump
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let allowed = fields.get(3)?;
            let allowed: Vec<String> = if *allowed == "(none)" {
                vec![]
            } else {
                allowed.split(',').map(str::to_owned).collect()
            };
            let handshake: u64 = fields.get(4)?.parse().ok()?;
            let age = (handshake > 0).then(|| now.saturating_sub(handshake));
            Some(((*fields.first()?).to_owned(), (allowed, age)))
        })
        .collect())
}
