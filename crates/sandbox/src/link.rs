//! A TCP link that can be cut: a network fault between finsync and a server it
//! uses (its database, its Redis), for tests and benchmarks that must see an outage
//! without stopping a server others share. While cut, established connections are
//! closed and new ones are accepted and closed at once, as a restarting server's
//! port does; restored, it forwards again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A forwarding listener on a loopback port; dropped, it stops.
pub struct CuttableLink {
    address: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl CuttableLink {
    /// Forwards `127.0.0.1:<a free port>` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cut, watching) = watch::channel(false);
        let watching = Arc::new(watching);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = (*watching).clone();
                tokio::spawn(async move {
                    if *cut.borrow_and_update() {
                        return drop(client);
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    forward(client, server, &mut cut).await;
                });
            }
        });
        Ok(Self { address, cut, task })
    }

    /// Where to connect instead of the upstream.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for CuttableLink {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.task.abort();
    }
}

/// Copies both ways until either side closes or the link is cut.
async fn forward(mut client: TcpStream, mut server: TcpStream, cut: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
    let _ = client.shutdown().await;
    let _ = server.shutdown().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(address: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(b"ping").await?;
        let mut answer = vec![0; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn a_cut_link_closes_connections_and_a_restored_one_forwards_again() {
        let link = CuttableLink::start(echo_server().await).await.unwrap();
        assert_eq!(round_trip(link.address()).await.unwrap(), b"ping");

        let mut open = TcpStream::connect(link.address()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut answer = vec![0; 4];
        open.read_exact(&mut answer).await.unwrap();
        link.cut();
        // The established connection is closed: the next read sees its end.
        let mut rest = Vec::new();
        assert_eq!(open.read_to_end(&mut rest).await.unwrap_or(0), 0);
        assert!(
            round_trip(link.address()).await.is_err(),
            "a new connection is refused"
        );

        link.restore();
        assert_eq!(round_trip(link.address()).await.unwrap(), b"ping");
    }
}
