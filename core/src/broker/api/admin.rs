//! CreateTopics and DeleteTopics.

use super::super::State;
use super::super::topics::{Topic, validate_topic_name};
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
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use uuid::Uuid;

/// Kafka's config source ids.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// Number of brokers in this cluster.
const BROKERS: i16 = 1;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// A topic that passed validation.
struct Plan {
    partitions: i32,
    replication_factor: i16,
    overrides: BTreeMap<String, String>,
    config: crate::log::TopicConfig,
}

fn plan(state: &State, t: &CreatableTopic) -> Result<Plan, (ResponseError, String)> {
    let cfg = &state.config;
    let name = t.name.0.as_str();
    validate_topic_name(name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
    let (partitions, rf) = if t.assignments.is_empty() {
        let p = if t.num_partitions == -1 {
            cfg.default_partitions
        } else {
            t.num_partitions
        };
        let rf = if t.replication_factor == -1 {
            1
        } else {
            t.replication_factor
        };
        (p, rf)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "with a replica assignment, num_partitions and replication_factor must be -1"
                    .into(),
            ));
        }
        let mut indexes = BTreeSet::new();
        let rf = t.assignments[0].broker_ids.len();
        for a in &t.assignments {
            if a.broker_ids.len() != rf || a.broker_ids.is_empty() {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "every partition needs the same, non-zero number of replicas".into(),
                ));
            }
            if let Some(b) = a.broker_ids.iter().find(|b| b.0 != cfg.node_id) {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!("broker {} is not in the cluster", b.0),
                ));
            }
            indexes.insert(a.partition_index);
        }
        if indexes.len() != t.assignments.len()
            || indexes.iter().copied().ne(0..t.assignments.len() as i32)
        {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                "partitions must be numbered 0..n without gaps".into(),
            ));
        }
        (
            t.assignments.len() as i32,
            i16::try_from(rf).unwrap_or(i16::MAX),
        )
    };
    if partitions < 1 || partitions > cfg.max_partitions_per_topic {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "{partitions} partitions is outside [1, {}]",
                cfg.max_partitions_per_topic
            ),
        ));
    }
    if rf < 1 {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {rf} must be at least 1"),
        ));
    }
    if rf > BROKERS {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {rf} is larger than the {BROKERS} available broker(s)"),
        ));
    }
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
    Ok(Plan {
        partitions,
        replication_factor: rf,
        overrides,
        config,
    })
}

fn new_topic_id(state: &State) -> Uuid {
    let mut rng = state.rng.lock().unwrap_or_else(|p| p.into_inner());
    Uuid::from_u128(rng.random::<u128>() | 1)
}

async fn execute(state: &State, name: &str, plan: Plan) -> Result<Uuid, (ResponseError, String)> {
    if state.topics.len() >= state.config.max_topics {
        return Err((
            ResponseError::PolicyViolation,
            format!(
                "the broker holds its limit of {} topics",
                state.config.max_topics
            ),
        ));
    }
    let id = new_topic_id(state);
    match state
        .topics
        .create(
            name,
            id,
            plan.partitions,
            plan.replication_factor,
            plan.overrides,
            plan.config,
        )
        .await
    {
        Ok(true) => Ok(id),
        Ok(false) => Err((
            ResponseError::TopicAlreadyExists,
            format!("topic {name:?} already exists"),
        )),
        Err(e) => Err((
            ResponseError::KafkaStorageError,
            format!("could not create topic {name:?}: {e}"),
        )),
    }
}

/// Creates a topic with default settings for Metadata's auto-creation.
pub(super) async fn auto_create(
    state: &Arc<State>,
    name: &str,
) -> Result<Arc<Topic>, ResponseError> {
    let t = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(-1)
        .with_replication_factor(-1);
    let p = plan(state, &t).map_err(|(code, _)| code)?;
    match execute(state, name, p).await {
        Ok(_) | Err((ResponseError::TopicAlreadyExists, _)) => state
            .topics
            .get(name)
            .ok_or(ResponseError::UnknownTopicOrPartition),
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

/// Validates and creates topics.
pub(super) async fn create_topics(
    state: &Arc<State>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
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
            match plan(state, t) {
                Err(e) => Err(e),
                Ok(_) if state.topics.get(&name).is_some() => Err((
                    ResponseError::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                )),
                Ok(p) => {
                    let (partitions, rf) = (p.partitions, p.replication_factor);
                    let configs = (version >= 5).then(|| config_entries(&p.overrides, &p.config));
                    let created = if req.validate_only {
                        Ok(Uuid::nil())
                    } else {
                        execute(state, &name, p).await
                    };
                    created.map(|id| (id, partitions, rf, configs))
                }
            }
        };
        match outcome {
            Ok((id, partitions, rf, configs)) => {
                result = result
                    .with_topic_id(id)
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
        let topic = match &name {
            Some(n) => state.topics.get(n),
            None => state.topics.by_id(id),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(s(n))))
            .with_topic_id(id);
        match topic {
            None => {
                let code = if name.is_some() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                r = r.with_error_code(code.code());
            }
            Some(t) => {
                r = r
                    .with_name(Some(TopicName(s(t.name.clone()))))
                    .with_topic_id(t.id);
                match state.topics.delete(&t.name).await {
                    Ok(true) => {}
                    Ok(false) => {
                        r = r.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    }
                    Err(e) => {
                        r = r
                            .with_error_code(ResponseError::KafkaStorageError.code())
                            .with_error_message(Some(s(e.to_string())));
                    }
                }
            }
        }
        results.push(r);
    }
    DeleteTopicsResponse::default().with_responses(results)
}
