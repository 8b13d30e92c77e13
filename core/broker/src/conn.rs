//! One client connection: frames in, responses out, one request at a time. Requests wait
//! until the broker has caught up with the metadata, so that no client is answered from a
//! stale image (which could call a live topic unknown).

use super::State;
use super::api::{Reply, dispatch};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use weir_seams::net::Stream;
use weir_wire::frame::{FrameError, read_frame, write_frame};

/// Serves `stream` until the peer closes it, it idles out, or a request is refused.
pub(crate) async fn serve(state: &Arc<State>, stream: Stream, peer: SocketAddr) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let idle = Duration::from_millis(state.config.connections_max_idle_ms);
    loop {
        let frame =
            match tokio::time::timeout(idle, read_frame(&mut rd, state.config.max_request_bytes))
                .await
            {
                Err(_) => {
                    tracing::debug!(%peer, "closing idle connection");
                    return;
                }
                Ok(Err(FrameError::Closed)) => return,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "closing connection: bad frame");
                    return;
                }
                Ok(Ok(frame)) => frame,
            };
        if !*state.serving.borrow() && !state.await_serving(idle).await {
            tracing::debug!(%peer, "closing connection: the broker has not joined its cluster");
            return;
        }
        match dispatch(state, frame).await {
            Reply::Frame(bytes) => {
                if let Err(e) = write_frame(&mut wr, &bytes).await {
                    tracing::debug!(%peer, error = %e, "closing connection: write failed");
                    return;
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                tracing::info!(%peer, %reason, "closing connection: request refused");
                return;
            }
        }
    }
}
