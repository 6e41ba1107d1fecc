//! A plain HTTP/1.0 GET on loopback, for the operator's metrics and health
//! endpoints, and the sum of a metric in what `/metrics` answers.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` from `127.0.0.1:port`: the whole response, status line first,
/// or an empty string when nothing answers.
pub async fn http_get(port: u16, path: &str) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
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
