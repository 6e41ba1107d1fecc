//! A plain HTTP/1.0 GET on loopback, for the operator's metrics and health
//! endpoints, and the sum of a metric in what `/metrics` answers.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where [`http_get`] connects: a port on 127.0.0.1, or any address.
pub struct Target(SocketAddr);

impl From<u16> for Target {
    fn from(port: u16) -> Self {
        Self((Ipv4Addr::LOCALHOST, port).into())
    }
}

impl From<SocketAddr> for Target {
    fn from(address: SocketAddr) -> Self {
        Self(address)
    }
}

/// `GET path` from `127.0.0.1:port`, or from another address given as
/// `address:port` (a pod's): the whole response, status line first, or an
/// empty string when nothing answers.
pub async fn http_get(to: impl Into<Target>, path: &str) -> String {
    let to = to.into().0;
    let Ok(mut stream) = tokio::net::TcpStream::connect(to).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {to}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
}

/// The sum of the samples of a metric, in the Prometheus text format, whose
/// labels contain `label` (`name="value"`; empty for all).
pub fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with('{') && rest.contains(label))
                    || (rest.starts_with(' ') && label.is_empty())
            })
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_their_labels_only() {
        let text = "# HELP kilo_clustermesh_kube_requests Requests\n\
            kilo_clustermesh_kube_requests_total{client=\"local\",verb=\"get\"} 3\n\
            kilo_clustermesh_kube_requests_total{client=\"local\",verb=\"patch\"} 4\n\
            kilo_clustermesh_kube_requests_totally 100\n";
        let name = "kilo_clustermesh_kube_requests_total";
        assert_eq!(metric_sum(text, name, ""), 7.0);
        assert_eq!(metric_sum(text, name, "verb=\"patch\""), 4.0);
    }
}
