//! The brokers' internal RPC transport, on each broker's internal port.
//!
//! A frame is `[i32 correlation id][bincode body]`, so the client side runs on the same
//! multiplexed transport as the Kafka client ([`Mux`]). Bodies are decoded with a size limit, so
//! a peer's length fields never size an allocation beyond the frame that actually arrived.
//! Requests on one connection are served concurrently up to `max_in_flight`; responses go back
//! as they complete, matched by correlation id.

use super::protocol::{Request, Response};
use bytes::{BufMut, Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use weir_client::{ClientError, Mux, MuxLimits};
use weir_seams::net::{Listener, Net, Stream};
use weir_wire::frame::{read_frame, write_frame};

/// Largest internal frame, in bytes: a replica fetch response is capped below this.
pub const RPC_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Requests served at once per connection.
const SERVER_IN_FLIGHT_MAX: usize = 64;

fn codec() -> bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<RPC_FRAME_BYTES_MAX>,
> {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<RPC_FRAME_BYTES_MAX>()
}

/// Why an internal call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The connection failed or timed out; the call may or may not have taken effect.
    #[error("{0}")]
    Transport(#[from] ClientError),
    /// The peer sent something that does not decode.
    #[error("undecodable internal frame: {0}")]
    Decode(String),
    /// The peer answered with a different kind of response than the call expects.
    #[error("unexpected internal response: {0}")]
    Unexpected(String),
}

fn encode<T: serde::Serialize>(correlation_id: i32, body: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(correlation_id);
    let mut w = buf.writer();
    // Encoding into memory only fails for types serde cannot represent; ours all can.
    bincode::serde::encode_into_std_write(body, &mut w, codec()).expect("internal messages encode");
    w.into_inner().freeze()
}

fn decode<T: serde::de::DeserializeOwned>(frame: &[u8]) -> Result<(i32, T), RpcError> {
    let id = frame
        .get(..4)
        .ok_or_else(|| RpcError::Decode("frame shorter than its correlation id".into()))?;
    let id = i32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    let (body, used) = bincode::serde::decode_from_slice(&frame[4..], codec())
        .map_err(|e| RpcError::Decode(e.to_string()))?;
    if used != frame.len() - 4 {
        return Err(RpcError::Decode(format!(
            "{} trailing bytes",
            frame.len() - 4 - used
        )));
    }
    Ok((id, body))
}

/// A boxed future answering one request.
pub type Handled = Pin<Box<dyn Future<Output = Response> + Send>>;
/// Serves requests.
pub type Handler = Arc<dyn Fn(Request) -> Handled + Send + Sync>;

/// Accepts internal connections on `listener` until `stop` is set.
pub async fn serve(listener: Listener, handler: Handler, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve_conn(stream, Arc::clone(&handler), stop.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "internal accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_conn(stream: Stream, handler: Handler, mut stop: watch::Receiver<bool>) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(SERVER_IN_FLIGHT_MAX);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write_frame(&mut wr, &frame).await.is_err() {
                return;
            }
        }
    });
    let permits = Arc::new(Semaphore::new(SERVER_IN_FLIGHT_MAX));
    loop {
        let frame = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            f = read_frame(&mut rd, RPC_FRAME_BYTES_MAX) => match f {
                Ok(f) => f,
                Err(_) => break,
            },
        };
        let (id, req) = match decode::<Request>(&frame) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "closing internal connection");
                break;
            }
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let (handler, tx) = (Arc::clone(&handler), tx.clone());
        tokio::spawn(async move {
            let resp = handler(req).await;
            let _ = tx.send(encode(id, &resp)).await;
            drop(permit);
        });
    }
    drop(tx);
    writer.abort();
}

/// A connection to one peer's internal port, re-established on demand.
pub struct Peer {
    net: Net,
    addr: String,
    limits: MuxLimits,
    conn: Mutex<Option<Arc<Mux>>>,
}

impl Peer {
    /// A peer at `addr` ("host:port").
    pub fn new(net: Net, addr: String, request_timeout_ms: u64) -> Self {
        let limits = MuxLimits {
            connect_timeout_ms: 1_000,
            request_timeout_ms,
            max_response_bytes: RPC_FRAME_BYTES_MAX,
            max_in_flight: SERVER_IN_FLIGHT_MAX,
        };
        Self {
            net,
            addr,
            limits,
            conn: Mutex::new(None),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn mux(&self) -> Result<Arc<Mux>, RpcError> {
        let mut conn = self.conn.lock().await;
        if let Some(m) = conn.as_ref().filter(|m| !m.is_dead()) {
            return Ok(Arc::clone(m));
        }
        *conn = None;
        let m = Arc::new(Mux::connect(self.net, &self.addr, self.limits).await?);
        *conn = Some(Arc::clone(&m));
        Ok(m)
    }

    /// Sends `req` and waits for the answer.
    pub async fn call(&self, req: &Request) -> Result<Response, RpcError> {
        let mux = self.mux().await?;
        let id = mux.next_id();
        let frame = mux.call(id, encode(id, req)).await?;
        decode::<Response>(&frame).map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_garbage_is_refused() {
        let req = Request::DeleteTopic {
            name: "orders".into(),
        };
        let frame = encode(7, &req);
        let (id, back) = decode::<Request>(&frame).unwrap();
        assert_eq!((id, back), (7, req));
        assert!(decode::<Request>(&frame[..3]).is_err());
        let mut long = frame.to_vec();
        long.push(0);
        assert!(decode::<Request>(&long).is_err(), "trailing bytes");
        // A length field claiming 2^60 elements is refused without allocating them.
        let mut lying = 9i32.to_be_bytes().to_vec();
        lying.extend_from_slice(&[0x00, 0xFD, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        assert!(decode::<Request>(&lying).is_err());
    }
}
