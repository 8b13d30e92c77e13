//! A connection to one Kafka broker: API version negotiation and request encoding over a
//! [`Mux`].

use super::error::ClientError;
use super::mux::{Mux, MuxLimits};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use weir_seams::net::Net;
use weir_wire::{decode_response, encode_request};

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
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 3),
];

/// A connection to one broker.
pub struct Connection {
    mux: Mux,
    client_id: String,
    versions: BTreeMap<i16, (i16, i16)>,
}

impl ConnConfig {
    pub(crate) fn limits(&self) -> MuxLimits {
        MuxLimits {
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            max_response_bytes: self.max_response_bytes,
            max_in_flight: self.max_in_flight,
        }
    }
}

impl Connection {
    /// Connects to `addr` and negotiates API versions.
    pub async fn connect(net: Net, addr: &str, config: ConnConfig) -> Result<Self, ClientError> {
        let mux = Mux::connect(net, addr, config.limits()).await?;
        let mut conn = Self {
            mux,
            client_id: config.client_id,
            versions: BTreeMap::new(),
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
        self.mux.addr()
    }

    /// Whether the connection has failed.
    pub fn is_dead(&self) -> bool {
        self.mux.is_dead()
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
            ClientError::Protocol(format!("{} does not serve {api:?}", self.addr()))
        })?;
        let v = cmax.min(bmax);
        if v < cmin.max(bmin) {
            return Err(ClientError::Protocol(format!(
                "no common version of {api:?} with {}",
                self.addr()
            )));
        }
        Ok(v)
    }

    /// Sends a request at `version` and waits for its response.
    pub async fn send<T: Encodable, R: Decodable>(
        &self,
        api: ApiKey,
        version: i16,
        req: &T,
    ) -> Result<R, ClientError> {
        let correlation_id = self.mux.next_id();
        let frame = encode_request(api, version, correlation_id, &self.client_id, req)
            .map_err(ClientError::Invalid)?;
        let response = self.mux.call(correlation_id, frame).await?;
        let (cid, resp) =
            decode_response::<R>(response, api, version).map_err(ClientError::Protocol)?;
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
        let correlation_id = self.mux.next_id();
        let frame = encode_request(api, version, correlation_id, &self.client_id, req)
            .map_err(ClientError::Invalid)?;
        self.mux.send_oneway(correlation_id, frame).await
    }
}
