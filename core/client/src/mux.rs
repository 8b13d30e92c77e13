//! A multiplexed request/response transport over one TCP connection. Every request and response
//! frame starts with a 4-byte correlation id (as Kafka's do); requests are pipelined and
//! responses matched by id. A timeout or an I/O error kills the connection and fails everything
//! in flight, since the stream can no longer be trusted to line up.
//!
//! The Kafka client ([`super::Connection`]) and the brokers' internal RPC both run on it.

use super::error::ClientError;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use weir_seams::net::Net;
use weir_wire::frame::{read_frame, write_frame};
use weir_wire::response_correlation_id;

type Reply = oneshot::Sender<Result<Bytes, ClientError>>;

struct Outgoing {
    frame: Bytes,
    correlation_id: i32,
    reply: Option<Reply>,
}

/// Limits of a multiplexed connection.
#[derive(Clone, Copy, Debug)]
pub struct MuxLimits {
    /// How long to wait for the TCP connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long to wait for each response, in milliseconds.
    pub request_timeout_ms: u64,
    /// Largest response frame accepted, in bytes.
    pub max_response_bytes: usize,
    /// Requests written but not yet answered, at most.
    pub max_in_flight: usize,
}

/// What the I/O tasks share: replies awaiting responses, and the switch that marks the
/// connection dead.
#[derive(Clone)]
struct Link {
    addr: String,
    pending: Arc<Mutex<BTreeMap<i32, Reply>>>,
    kill: Arc<watch::Sender<Option<String>>>,
}

impl Link {
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Reply>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection dead and fails every request still waiting.
    fn break_with(&self, err: ClientError) {
        self.kill.send_replace(Some(err.to_string()));
        let drained = std::mem::take(&mut *self.pending());
        for (_, reply) in drained {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn broken(&self, reason: String) -> ClientError {
        ClientError::Connection {
            addr: self.addr.clone(),
            reason,
        }
    }
}

/// A multiplexed connection.
pub struct Mux {
    addr: String,
    limits: MuxLimits,
    out: mpsc::Sender<Outgoing>,
    next_correlation: AtomicI32,
    dead: watch::Receiver<Option<String>>,
    kill: Arc<watch::Sender<Option<String>>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Mux {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Mux {
    /// Connects to `addr`.
    pub async fn connect(net: Net, addr: &str, limits: MuxLimits) -> Result<Self, ClientError> {
        let conn_err = |reason: String| ClientError::Connection {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(
            Duration::from_millis(limits.connect_timeout_ms),
            net.connect(addr),
        )
        .await
        .map_err(|_| {
            conn_err(format!(
                "connect timed out after {} ms",
                limits.connect_timeout_ms
            ))
        })?
        .map_err(|e| conn_err(e.to_string()))?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (out, mut rx) = mpsc::channel::<Outgoing>(limits.max_in_flight.max(1));
        let (kill_tx, dead) = watch::channel(None::<String>);
        let kill = Arc::new(kill_tx);
        let link = Link {
            addr: addr.to_string(),
            pending: Arc::new(Mutex::new(BTreeMap::new())),
            kill: Arc::clone(&kill),
        };

        let l = link.clone();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let Some(reply) = msg.reply {
                    l.pending().insert(msg.correlation_id, reply);
                }
                if let Err(e) = write_frame(&mut wr, &msg.frame).await {
                    l.break_with(l.broken(format!("write failed: {e}")));
                    return;
                }
            }
        });
        let (l, max) = (link, limits.max_response_bytes);
        let reader = tokio::spawn(async move {
            loop {
                let frame = match read_frame(&mut rd, max).await {
                    Ok(frame) => frame,
                    Err(e) => return l.break_with(l.broken(format!("read failed: {e}"))),
                };
                match response_correlation_id(&frame).and_then(|c| l.pending().remove(&c)) {
                    Some(r) => {
                        let _ = r.send(Ok(frame));
                    }
                    None => {
                        return l.break_with(ClientError::Protocol(
                            "response with an unknown correlation id".into(),
                        ));
                    }
                }
            }
        });
        Ok(Self {
            addr: addr.to_string(),
            limits,
            out,
            next_correlation: AtomicI32::new(1),
            dead,
            kill,
            tasks: [writer, reader],
        })
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed.
    pub fn is_dead(&self) -> bool {
        self.dead.borrow().is_some()
    }

    fn die(&self, reason: String) {
        self.kill.send_replace(Some(reason));
        for t in &self.tasks {
            t.abort();
        }
    }

    /// A fresh correlation id.
    pub fn next_id(&self) -> i32 {
        self.next_correlation.fetch_add(1, Ordering::Relaxed)
    }

    fn closed(&self) -> ClientError {
        ClientError::Connection {
            addr: self.addr.clone(),
            reason: "connection closed".into(),
        }
    }

    /// Sends `frame` (which carries `correlation_id`) and waits for the response frame.
    pub async fn call(&self, correlation_id: i32, frame: Bytes) -> Result<Bytes, ClientError> {
        if let Some(reason) = self.dead.borrow().clone() {
            return Err(ClientError::Connection {
                addr: self.addr.clone(),
                reason,
            });
        }
        let (tx, rx) = oneshot::channel();
        let timed_out = || ClientError::Timeout {
            addr: self.addr.clone(),
            ms: self.limits.request_timeout_ms,
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.limits.request_timeout_ms);
        match tokio::time::timeout_at(
            deadline,
            self.out.send(Outgoing {
                frame,
                correlation_id,
                reply: Some(tx),
            }),
        )
        .await
        {
            Err(_) => {
                self.die("request timed out while queued".into());
                return Err(timed_out());
            }
            Ok(Err(_)) => return Err(self.closed()),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => {
                self.die("request timed out".into());
                Err(timed_out())
            }
            Ok(Err(_)) => Err(self.closed()),
            Ok(Ok(r)) => r,
        }
    }

    /// Sends `frame` without waiting for a response.
    pub async fn send_oneway(&self, correlation_id: i32, frame: Bytes) -> Result<(), ClientError> {
        self.out
            .send(Outgoing {
                frame,
                correlation_id,
                reply: None,
            })
            .await
            .map_err(|_| self.closed())
    }
}
