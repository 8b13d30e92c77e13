//! A multiplexed connection to one broker: requests are pipelined and matched to responses by
//! correlation id. A timeout or I/O error kills the connection, failing everything in flight,
//! since the stream can no longer be trusted to line up.

use super::error::ClientError;
use crate::net::Net;
use crate::wire::frame::{read_frame, write_frame};
use crate::wire::{decode_response, encode_request, response_correlation_id};
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

type Reply = oneshot::Sender<Result<Bytes, ClientError>>;

struct Outgoing {
    frame: Bytes,
    correlation_id: i32,
    reply: Option<Reply>,
}

/// Settings of a connection.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// Client id sent in every request header.
    pub client_id: String,
    /// How long to wait for a TCP connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long to wait for each response, in milliseconds.
    pub request_timeout_ms: u64,
    /// Largest response frame accepted, in bytes.
    pub max_response_bytes: usize,
    /// Requests written but not yet answered, at most.
    pub max_in_flight: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            client_id: "weir".into(),
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_response_bytes: 100 * 1024 * 1024,
            max_in_flight: 16,
        }
    }
}

/// The request versions this client can build.
pub(crate) const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
];

/// A connection to one broker.
pub struct Connection {
    addr: String,
    config: ConnConfig,
    out: mpsc::Sender<Outgoing>,
    next_correlation: AtomicI32,
    dead: watch::Receiver<Option<String>>,
    kill: Arc<watch::Sender<Option<String>>>,
    versions: BTreeMap<i16, (i16, i16)>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
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

impl Connection {
    /// Connects to `addr` and negotiates API versions.
    pub async fn connect(net: Net, addr: &str, config: ConnConfig) -> Result<Self, ClientError> {
        let conn_err = |reason: String| ClientError::Connection {
            addr: addr.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(
            Duration::from_millis(config.connect_timeout_ms),
            net.connect(addr),
        )
        .await
        .map_err(|_| {
            conn_err(format!(
                "connect timed out after {} ms",
                config.connect_timeout_ms
            ))
        })?
        .map_err(|e| conn_err(e.to_string()))?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (out, mut rx) = mpsc::channel::<Outgoing>(config.max_in_flight.max(1));
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
        let (l, max) = (link, config.max_response_bytes);
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
        let mut conn = Self {
            addr: addr.to_string(),
            config,
            out,
            next_correlation: AtomicI32::new(1),
            dead,
            kill,
            versions: BTreeMap::new(),
            tasks: [writer, reader],
        };
        conn.negotiate().await?;
        Ok(conn)
    }

    async fn negotiate(&mut self) -> Result<(), ClientError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("weir"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = match self.send(ApiKey::ApiVersions, 3, &req).await {
            Ok(r) => r,
            // An older broker answers in v0 with UNSUPPORTED_VERSION, or cannot parse v3.
            Err(ClientError::Protocol(_)) | Err(ClientError::Kafka { .. }) => {
                self.send(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
                    .await?
            }
            Err(e) => return Err(e),
        };
        if let Some(e) = ClientError::kafka(resp.error_code, "ApiVersions") {
            return Err(e);
        }
        self.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    /// The broker address.
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

    /// The highest version of `api` both sides speak.
    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        let (cmin, cmax) = CLIENT_VERSIONS
            .iter()
            .find(|(k, _, _)| *k == api)
            .map(|(_, a, b)| (*a, *b))
            .ok_or_else(|| {
                ClientError::Invalid(format!("{api:?} is not implemented by this client"))
            })?;
        let (bmin, bmax) = self.versions.get(&(api as i16)).copied().ok_or_else(|| {
            ClientError::Protocol(format!("{} does not serve {api:?}", self.addr))
        })?;
        let v = cmax.min(bmax);
        if v < cmin.max(bmin) {
            return Err(ClientError::Protocol(format!(
                "no common version of {api:?} with {}",
                self.addr
            )));
        }
        Ok(v)
    }

    fn frame<T: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        req: &T,
    ) -> Result<(i32, Bytes), ClientError> {
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(api, version, correlation_id, &self.config.client_id, req)
            .map_err(ClientError::Invalid)?;
        Ok((correlation_id, frame))
    }

    /// Sends a request at `version` and waits for its response.
    pub async fn send<T: Encodable, R: Decodable>(
        &self,
        api: ApiKey,
        version: i16,
        req: &T,
    ) -> Result<R, ClientError> {
        if let Some(reason) = self.dead.borrow().clone() {
            return Err(ClientError::Connection {
                addr: self.addr.clone(),
                reason,
            });
        }
        let (correlation_id, frame) = self.frame(api, version, req)?;
        let (tx, rx) = oneshot::channel();
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let timed_out = || ClientError::Timeout {
            addr: self.addr.clone(),
            ms: self.config.request_timeout_ms,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let queued = tokio::time::timeout_at(
            deadline,
            self.out.send(Outgoing {
                frame,
                correlation_id,
                reply: Some(tx),
            }),
        )
        .await;
        match queued {
            Err(_) => {
                self.die("request timed out while queued".into());
                return Err(timed_out());
            }
            Ok(Err(_)) => {
                return Err(ClientError::Connection {
                    addr: self.addr.clone(),
                    reason: "connection closed".into(),
                });
            }
            Ok(Ok(())) => {}
        }
        let frame = match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => {
                self.die(format!("{api:?} request timed out"));
                return Err(timed_out());
            }
            Ok(Err(_)) => {
                return Err(ClientError::Connection {
                    addr: self.addr.clone(),
                    reason: "connection closed".into(),
                });
            }
            Ok(Ok(r)) => r?,
        };
        let (cid, resp) =
            decode_response::<R>(frame, api, version).map_err(ClientError::Protocol)?;
        debug_assert_eq!(cid, correlation_id);
        Ok(resp)
    }

    /// Sends a request that gets no response (an acks=0 produce).
    pub async fn send_oneway<T: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        req: &T,
    ) -> Result<(), ClientError> {
        let (correlation_id, frame) = self.frame(api, version, req)?;
        self.out
            .send(Outgoing {
                frame,
                correlation_id,
                reply: None,
            })
            .await
            .map_err(|_| ClientError::Connection {
                addr: self.addr.clone(),
                reason: "connection closed".into(),
            })
    }
}
