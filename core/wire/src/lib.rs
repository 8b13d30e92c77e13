//! The Kafka wire: frames, request headers, the request guard and response encoding, and the
//! record batches that requests carry ([`record`]).

pub mod frame;
mod guard;
pub mod record;
mod schemas;

pub use guard::GuardError;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// A request frame split into its header and its still-encoded body.
#[derive(Debug)]
pub struct RawRequest {
    /// The API.
    pub api: ApiKey,
    /// The decoded header.
    pub header: RequestHeader,
    /// The body, guarded: it is safe to hand to the decoder.
    pub body: Bytes,
}

/// Why a request frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Shorter than the fixed part of a header.
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// The API key is not one Kafka defines.
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    /// The header does not parse.
    #[error("malformed request header: {0}")]
    Header(String),
    /// The body fails the guard or the decoder.
    #[error("malformed {api:?} v{version} body: {reason}")]
    Body {
        /// API of the request.
        api: ApiKey,
        /// Version of the request.
        version: i16,
        /// What was wrong.
        reason: String,
    },
}

/// The api key, version and correlation id at the start of a request frame, if it is long enough.
pub fn peek_header(frame: &[u8]) -> Result<(i16, i16, i32), RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::TooShort(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((key, version, correlation))
}

/// Splits a request frame whose API and version the caller has already accepted, decodes its
/// header and guards its body.
pub fn parse_request(frame: Bytes) -> Result<RawRequest, RequestError> {
    let (key, version, _) = peek_header(&frame)?;
    let api = ApiKey::try_from(key).map_err(|_| RequestError::UnknownApi(key))?;
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api.request_header_version(version))
        .map_err(|e| RequestError::Header(e.to_string()))?;
    let schema = schemas::schema(api).ok_or(RequestError::UnknownApi(key))?;
    if !(schema.min..=schema.max).contains(&version) {
        return Err(RequestError::Body {
            api,
            version,
            reason: "version outside the guarded range".into(),
        });
    }
    let body = match guard::check(schema, version, &buf) {
        Ok(()) => buf,
        Err(e) => match unpad_null_topics(api, version, &buf) {
            Some(body) if guard::check(schema, version, &body).is_ok() => body,
            _ => {
                return Err(RequestError::Body {
                    api,
                    version,
                    reason: e.to_string(),
                });
            }
        },
    };
    Ok(RawRequest { api, header, body })
}

/// librdkafka asks flexible Metadata (v9+) for all topics with the null compact array padded
/// to the four bytes it reserved for the count: `00 00 00 00`. Kafka reads the first byte and
/// ignores what is left over; this drops the padding, so that the flags after it are read as
/// sent. Only tried on a body the guard refused as it stands.
fn unpad_null_topics(api: ApiKey, version: i16, body: &Bytes) -> Option<Bytes> {
    if api != ApiKey::Metadata || version < 9 || !body.starts_with(&[0, 0, 0, 0]) {
        return None;
    }
    let mut unpadded = BytesMut::with_capacity(body.len() - 3);
    unpadded.extend_from_slice(&body[..1]);
    unpadded.extend_from_slice(&body[4..]);
    Some(unpadded.freeze())
}

impl RawRequest {
    /// The request's version.
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// Decodes the body as `T`.
    pub fn decode<T: Decodable>(&self) -> Result<T, RequestError> {
        let mut body = self.body.clone();
        let msg = T::decode(&mut body, self.version()).map_err(|e| RequestError::Body {
            api: self.api,
            version: self.version(),
            reason: e.to_string(),
        })?;
        if body.has_remaining() {
            return Err(RequestError::Body {
                api: self.api,
                version: self.version(),
                reason: format!("{} bytes after the message", body.remaining()),
            });
        }
        Ok(msg)
    }
}

/// Encodes a response frame body (header + message) for `api` at `version`; fails if `msg`
/// sets a field that `version` cannot carry.
pub fn encode_response<T: Encodable>(
    correlation_id: i32,
    api: ApiKey,
    version: i16,
    msg: &T,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // ApiVersions responses always use header v0 so that a client can read them before it
    // knows which versions the broker speaks.
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("{api:?} v{version} response header: {e}"))?;
    msg.encode(&mut buf, version)
        .map_err(|e| format!("{api:?} v{version} response: {e}"))?;
    Ok(buf.freeze())
}

/// Encodes a request frame body (header + message).
pub fn encode_request<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    msg: &T,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_string(
            client_id.to_string(),
        )));
    header
        .encode(&mut buf, api.request_header_version(version))
        .map_err(|e| e.to_string())?;
    msg.encode(&mut buf, version)
        .map_err(|e| format!("{api:?} v{version}: {e}"))?;
    Ok(buf.freeze())
}

/// Splits a response frame into its correlation id and decodes the body as `T`.
pub fn decode_response<T: Decodable>(
    frame: Bytes,
    api: ApiKey,
    version: i16,
) -> Result<(i32, T), String> {
    let mut buf = frame;
    let header_version = if api == ApiKey::ApiVersions {
        0
    } else {
        api.response_header_version(version)
    };
    let header = ResponseHeader::decode(&mut buf, header_version).map_err(|e| e.to_string())?;
    let msg =
        T::decode(&mut buf, version).map_err(|e| format!("{api:?} v{version} response: {e}"))?;
    Ok((header.correlation_id, msg))
}

/// Reads the correlation id of a response frame without decoding it.
pub fn response_correlation_id(frame: &[u8]) -> Option<i32> {
    frame
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests;
