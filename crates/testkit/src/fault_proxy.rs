//! A TCP proxy in front of an API server that a test makes sick: refusing,
//! blackholing or delaying what passes, the faults a real network produces,
//! without stopping the API server's process.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// What the proxy does to new and open connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything.
    Pass,
    /// Closes open connections and resets new ones: a server that is down.
    Refuse,
    /// Accepts, but nothing passes either way until the fault changes: a
    /// partition, a frozen or overloaded server.
    Blackhole,
    /// Forwards every chunk this much later: a slow server or link.
    Delay(Duration),
}

/// A running proxy on a free loopback port. Stops on drop.
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (fault, faults) = watch::channel(Fault::Pass);
        let task = tokio::spawn(async move {
            // Owned here: aborting the proxy aborts every connection.
            let mut connections = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                connections.spawn(connection(inbound, target_port, faults.clone()));
            }
        });
        Ok(Self { port, fault, task })
    }

    /// `https://127.0.0.1:<port>`: the API server's URL through the proxy
    /// (its serving certificate is for 127.0.0.1, whatever the port).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Applies `fault` to open and new connections.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(inbound: TcpStream, target_port: u16, mut faults: watch::Receiver<Fault>) {
    if !passable(&mut faults).await {
        // A reset, as from a closed port.
        let _ = inbound.set_zero_linger();
        return;
    }
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // Either direction ending closes both.
    tokio::select! {
        () = pump(in_read, out_write, faults.clone()) => {}
        () = pump(out_read, in_write, faults) => {}
    }
}

/// Waits while the fault is `Blackhole`; false once it is `Refuse`.
async fn passable(faults: &mut watch::Receiver<Fault>) -> bool {
    loop {
        let fault = *faults.borrow_and_update();
        match fault {
            Fault::Refuse => return false,
            Fault::Blackhole => {
                if faults.changed().await.is_err() {
                    return false;
                }
            }
            Fault::Pass | Fault::Delay(_) => return true,
        }
    }
}

/// Copies one direction, chunk by chunk, as the fault allows.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut faults: watch::Receiver<Fault>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if !passable(&mut faults).await {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Reading is cancel-safe: look at the new fault, then read on.
            changed = faults.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // What was read waits for the fault too.
        if !passable(&mut faults).await {
            return;
        }
        let fault = *faults.borrow();
        if let Fault::Delay(delay) = fault {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server and a proxy in front of it.
    async fn echo_behind_proxy() -> FaultProxy {
        let echo = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = echo.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0; 64];
                    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                        let _ = stream.write_all(&buffer[..n]).await;
                    }
                });
            }
        });
        FaultProxy::start(port)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn round_trip(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let exchange = async {
            stream.write_all(b"ping").await.ok()?;
            let mut reply = vec![0; 4];
            stream.read_exact(&mut reply).await.ok()?;
            Some(reply)
        };
        tokio::time::timeout(within, exchange).await.ok().flatten()
    }

    #[tokio::test]
    async fn each_fault_does_what_it_says_to_open_and_new_connections() {
        let proxy = echo_behind_proxy().await;
        let connect = || TcpStream::connect(("127.0.0.1", proxy.port()));
        let mut open = connect().await.unwrap_or_else(|e| panic!("{e}"));
        let second = Duration::from_secs(1);
        assert_eq!(
            round_trip(&mut open, second).await.as_deref(),
            Some(&b"ping"[..])
        );

        proxy.set(Fault::Blackhole);
        assert_eq!(
            round_trip(&mut open, Duration::from_millis(300)).await,
            None,
            "blackholed"
        );
        proxy.set(Fault::Pass);
        // The held "ping" and its echo pass once the fault is gone.
        let mut held = vec![0; 4];
        tokio::time::timeout(second, open.read_exact(&mut held))
            .await
            .ok();
        assert_eq!(held, b"ping");

        proxy.set(Fault::Delay(Duration::from_millis(200)));
        let started = std::time::Instant::now();
        assert!(round_trip(&mut open, second).await.is_some());
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "delayed each way"
        );

        proxy.set(Fault::Refuse);
        assert_eq!(
            round_trip(&mut open, second).await,
            None,
            "open connection closed"
        );
        let mut new = connect().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            round_trip(&mut new, second).await,
            None,
            "new connection reset"
        );
    }
}
