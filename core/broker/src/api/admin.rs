//! CreateTopics and DeleteTopics: checked here, decided by the controller.

use super::super::internal::call_controller;
use super::super::{State, validate_topic_name};
use crate::cluster::protocol::{CodedError, CreateTopic, Request, Response};
use crate::log::KNOWN_KEYS;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Kafka's config source ids.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// How often a create waits-and-checks for its topic to be served, in milliseconds.
const READY_POLL_MS: u64 = 10;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

type Refusal = (ResponseError, String);

/// Checks a topic to create and turns it into the controller's request.
fn plan(
    state: &State,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<(CreateTopic, crate::log::TopicConfig), Refusal> {
    let cfg = &state.config;
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    let (partitions, rf, assignment) = if t.assignments.is_empty() {
        let p = if t.num_partitions == -1 {
            cfg.default_partitions
        } else {
            t.num_partitions
        };
        let live = state.image().live_brokers().len().max(1) as i16;
        let rf = if t.replication_factor == -1 {
            cfg.default_replication_factor.min(live)
        } else {
            t.replication_factor
        };
        (p, rf, None)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "with a replica assignment, num_partitions and replication_factor must be -1"
                    .into(),
            ));
        }
        let indexes: BTreeSet<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
        if indexes.len() != t.assignments.len()
            || indexes.iter().copied().ne(0..t.assignments.len() as i32)
        {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "partitions must be numbered 0..n without gaps".into(),
            ));
        }
        let mut sorted: Vec<_> = t.assignments.iter().collect();
        sorted.sort_by_key(|a| a.partition_index);
        let assignment: Vec<Vec<i32>> = sorted
            .iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        let rf = assignment[0].len();
        if assignment.iter().any(|r| r.len() != rf) {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "every partition needs the same number of replicas".into(),
            ));
        }
        (
            assignment.len() as i32,
            i16::try_from(rf).unwrap_or(i16::MAX),
            Some(assignment),
        )
    };
    let mut overrides = BTreeMap::new();
    for c in &t.configs {
        let key = c.name.as_str().to_string();
        let Some(value) = &c.value else { continue };
        if overrides
            .insert(key.clone(), value.as_str().to_string())
            .is_some()
        {
            return Err((
                ResponseError::InvalidConfig,
                format!("config {key:?} is given twice"),
            ));
        }
    }
    let config = cfg
        .topic_defaults
        .with_overrides(&overrides)
        .map_err(|m| (ResponseError::InvalidConfig, m))?;
    Ok((
        CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor: rf,
            assignment,
            overrides,
            validate_only,
        },
        config,
    ))
}

fn refusal(e: CodedError) -> Refusal {
    (
        e.kafka().unwrap_or(ResponseError::UnknownServerError),
        e.message,
    )
}

fn no_controller() -> Refusal {
    (
        ResponseError::RequestTimedOut,
        "no active controller answered in time".into(),
    )
}

/// Has the controller create the topic, then waits (within `timeout`) until this broker's
/// image holds it and the partitions it leads here are serving.
async fn execute(state: &State, req: CreateTopic, timeout: Duration) -> Result<(), Refusal> {
    let deadline = Instant::now() + timeout;
    let name = req.name.clone();
    let validate_only = req.validate_only;
    match call_controller(state, Request::CreateTopic(req), timeout).await {
        Some(Response::Done(Ok(()))) => {}
        Some(Response::Done(Err(e))) => return Err(refusal(e)),
        _ => return Err(no_controller()),
    }
    while !validate_only && Instant::now() < deadline {
        let image = state.image();
        let ready = image.topics.get(&name).is_some_and(|t| {
            t.partitions.iter().enumerate().all(|(i, p)| {
                p.leader != state.config.node_id
                    || state
                        .replicas
                        .get(&name, i as i32)
                        .is_some_and(|r| r.is_leader())
            })
        });
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
    Ok(())
}

/// Creates a topic with default settings for Metadata's auto-creation.
pub(super) async fn auto_create(state: &Arc<State>, name: &str) -> Result<(), ResponseError> {
    let t = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(-1)
        .with_replication_factor(-1);
    let (req, _) = plan(state, &t, false).map_err(|(code, _)| code)?;
    match execute(
        state,
        req,
        Duration::from_millis(state.config.internal_request_timeout_ms),
    )
    .await
    {
        Ok(()) | Err((ResponseError::TopicAlreadyExists, _)) => Ok(()),
        Err((code, _)) => Err(code),
    }
}

fn config_entries(
    overrides: &BTreeMap<String, String>,
    config: &crate::log::TopicConfig,
) -> Vec<CreatableTopicConfigs> {
    KNOWN_KEYS
        .iter()
        .map(|k| {
            CreatableTopicConfigs::default()
                .with_name(s(*k))
                .with_value(config.get(k).map(s))
                .with_config_source(if overrides.contains_key(*k) {
                    SOURCE_TOPIC
                } else {
                    SOURCE_DEFAULT
                })
        })
        .collect()
}

fn request_timeout(state: &State, timeout_ms: i32) -> Duration {
    let ms = u64::try_from(timeout_ms)
        .unwrap_or(0)
        .clamp(1, state.config.internal_request_timeout_ms.max(1) * 6);
    Duration::from_millis(ms)
}

/// Validates and creates topics.
pub(super) async fn create_topics(
    state: &Arc<State>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let timeout = request_timeout(state, req.timeout_ms);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let outcome = if counts[&name] > 1 {
            Err((
                ResponseError::InvalidRequest,
                format!("topic {name:?} appears more than once in the request"),
            ))
        } else {
            match plan(state, t, req.validate_only) {
                Err(e) => Err(e),
                Ok((create, config)) => {
                    let summary = (
                        create.partitions,
                        create.replication_factor,
                        (version >= 5).then(|| config_entries(&create.overrides, &config)),
                    );
                    execute(state, create, timeout).await.map(|()| summary)
                }
            }
        };
        match outcome {
            Ok((partitions, rf, configs)) => {
                let id = state
                    .image()
                    .topics
                    .get(&name)
                    .map_or(Uuid::nil(), |t| Uuid::from_u128(t.id));
                result = result
                    .with_topic_id(if req.validate_only { Uuid::nil() } else { id })
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf)
                    .with_configs(configs);
            }
            Err((code, message)) => {
                tracing::info!(topic = %name, error = ?code, %message, "create topic refused");
                result = result
                    .with_error_code(code.code())
                    .with_error_message(Some(s(message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1);
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Deletes topics by name or id.
pub(super) async fn delete_topics(
    state: &Arc<State>,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let timeout = request_timeout(state, req.timeout_ms);
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut results = Vec::new();
    for (name, id) in targets {
        let image = state.image();
        let found = match &name {
            Some(n) => image.topics.get(n).map(|t| (n.clone(), t.id)),
            None => image
                .topics
                .iter()
                .find(|(_, t)| t.id == id.as_u128())
                .map(|(n, t)| (n.clone(), t.id)),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(s(n))))
            .with_topic_id(id);
        match found {
            None => {
                let code = if name.is_some() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                r = r.with_error_code(code.code());
            }
            Some((n, tid)) => {
                r = r
                    .with_name(Some(TopicName(s(n.clone()))))
                    .with_topic_id(Uuid::from_u128(tid));
                let (code, message) =
                    match call_controller(state, Request::DeleteTopic { name: n }, timeout).await {
                        Some(Response::Done(Ok(()))) => (None, None),
                        Some(Response::Done(Err(e))) => {
                            let (code, m) = refusal(e);
                            (Some(code), Some(m))
                        }
                        _ => {
                            let (code, m) = no_controller();
                            (Some(code), Some(m))
                        }
                    };
                if let Some(code) = code {
                    r = r
                        .with_error_code(code.code())
                        .with_error_message(message.map(s));
                }
            }
        }
        results.push(r);
    }
    DeleteTopicsResponse::default().with_responses(results)
}
