//! The lab's service backend and its client: a TCP server that answers every
//! connection with one line naming itself, and a one-shot client for probes.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every connection on `listen` with `reply` and a newline.
pub async fn serve(listen: &str, reply: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let line = format!("{reply}\n");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let line = line.clone();
        tokio::spawn(async move {
            let _ = stream.write_all(line.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Connects to `address` and returns the line it answers, within `timeout`.
pub async fn fetch(address: &str, timeout: Duration) -> anyhow::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await?;
        anyhow::Ok(reply.trim().to_owned())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{address} did not answer within {timeout:?}"))?
}
