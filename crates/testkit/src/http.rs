//! A plain HTTP/1.0 GET on loopback, for the operator's metrics and health
//! endpoints.

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
