//! The network seam: TCP over tokio (real) or turmoil (simulated).
//!
//! Nothing else in Weir touches `tokio::net` or `turmoil::net`; broker, client and engine take a
//! [`Net`] and get [`Stream`]s and [`Listener`]s from it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which network a component runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Real sockets.
    Tokio,
    /// turmoil's simulated network; only valid inside a simulated host.
    Sim,
}

impl Net {
    /// Connects to `addr` ("host:port").
    pub async fn connect(self, addr: &str) -> io::Result<Stream> {
        match self {
            Net::Tokio => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tokio(stream))
            }
            Net::Sim => Ok(Stream::Sim(turmoil::net::TcpStream::connect(addr).await?)),
        }
    }

    /// Binds a listener on `addr` ("host:port"; port 0 picks a free port on real sockets).
    pub async fn bind(self, addr: &str) -> io::Result<Listener> {
        match self {
            Net::Tokio => Ok(Listener::Tokio(tokio::net::TcpListener::bind(addr).await?)),
            Net::Sim => Ok(Listener::Sim(turmoil::net::TcpListener::bind(addr).await?)),
        }
    }
}

/// A listening socket.
pub enum Listener {
    /// Real socket.
    Tokio(tokio::net::TcpListener),
    /// Simulated socket.
    Sim(turmoil::net::TcpListener),
}

impl Listener {
    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tokio(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tokio(s), peer))
            }
            Listener::Sim(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Sim(s), peer))
            }
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tokio(l) => l.local_addr(),
            Listener::Sim(l) => l.local_addr(),
        }
    }
}

/// A connected byte stream.
pub enum Stream {
    /// Real socket.
    Tokio(tokio::net::TcpStream),
    /// Simulated socket.
    Sim(turmoil::net::TcpStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Sim(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Sim(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_flush(cx),
            Stream::Sim(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Sim(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
