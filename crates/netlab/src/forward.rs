//! A byte forwarder between a TCP or Unix listener and a TCP or Unix
//! address: how a node's namespace reaches its API server on the host's
//! loopback without any route out of the lab.

use std::path::PathBuf;

use anyhow::Context;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
};

/// `unix:/path` or `host:port`.
#[derive(Clone, Debug)]
pub enum Address {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Address {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.strip_prefix("unix:") {
            Some(path) => Self::Unix(PathBuf::from(path)),
            None => Self::Tcp(s.to_owned()),
        })
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Accepts on `listen` and copies each connection to a new one to `to`,
/// until killed.
pub async fn forward(listen: Address, to: Address) -> anyhow::Result<()> {
    enum Listener {
        Unix(UnixListener),
        Tcp(TcpListener),
    }
    let listener = match &listen {
        Address::Unix(path) => {
            let _ = std::fs::remove_file(path);
            Listener::Unix(
                UnixListener::bind(path)
                    .with_context(|| format!("listening on {}", path.display()))?,
            )
        }
        Address::Tcp(addr) => Listener::Tcp(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        ),
    };
    loop {
        let inbound: Box<dyn Stream> = match &listener {
            Listener::Unix(l) => Box::new(l.accept().await?.0),
            Listener::Tcp(l) => Box::new(l.accept().await?.0),
        };
        let to = to.clone();
        tokio::spawn(async move {
            let outbound: std::io::Result<Box<dyn Stream>> = match &to {
                Address::Unix(path) => UnixStream::connect(path)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Stream>),
                Address::Tcp(addr) => TcpStream::connect(addr)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Stream>),
            };
            match outbound {
                Ok(mut outbound) => {
                    let mut inbound = inbound;
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(error) => eprintln!("forward: connecting to {to:?}: {error}"),
            }
        });
    }
}
