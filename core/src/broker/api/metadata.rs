//! Metadata.

use super::super::State;
use super::super::topics::{Topic, validate_topic_name};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

pub(super) fn topic_entry(t: &Topic, node: i32) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let error = if p.marks().online {
                0
            } else {
                ResponseError::KafkaStorageError.code()
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.index)
                .with_leader_id(BrokerId(node))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node)])
                .with_isr_nodes(vec![BrokerId(node)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.id)
        .with_partitions(partitions)
}

fn error_entry(name: Option<String>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id)
}

/// Describes the cluster (this broker) and the requested topics, or all of them.
pub(super) async fn handle(
    state: &Arc<State>,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let cfg = &state.config;
    let node = cfg.node_id;
    let topics = match req.topics {
        // v0 asks for all topics with an empty list; later versions with a null one.
        None => state
            .topics
            .all()
            .iter()
            .map(|t| topic_entry(t, node))
            .collect(),
        Some(list) if list.is_empty() && version == 0 => state
            .topics
            .all()
            .iter()
            .map(|t| topic_entry(t, node))
            .collect(),
        Some(list) => {
            let mut out = Vec::new();
            let mut seen = BTreeMap::new();
            for t in list {
                let entry = match t.name.map(|n| n.0.to_string()) {
                    Some(name) => {
                        if seen.insert(name.clone(), ()).is_some() {
                            continue;
                        }
                        if validate_topic_name(&name).is_err() {
                            error_entry(
                                Some(name),
                                Uuid::nil(),
                                ResponseError::InvalidTopicException,
                            )
                        } else if let Some(topic) = state.topics.get(&name) {
                            topic_entry(&topic, node)
                        } else if cfg.auto_create_topics
                            && (version < 4 || req.allow_auto_topic_creation)
                        {
                            match super::admin::auto_create(state, &name).await {
                                Ok(topic) => topic_entry(&topic, node),
                                Err(code) => error_entry(Some(name), Uuid::nil(), code),
                            }
                        } else {
                            error_entry(
                                Some(name),
                                Uuid::nil(),
                                ResponseError::UnknownTopicOrPartition,
                            )
                        }
                    }
                    None => match state.topics.by_id(t.topic_id) {
                        Some(topic) => topic_entry(&topic, node),
                        None => error_entry(None, t.topic_id, ResponseError::UnknownTopicId),
                    },
                };
                out.push(entry);
            }
            out
        }
    };
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(node))
        .with_host(StrBytes::from_string(cfg.advertised_host.clone()))
        .with_port(i32::from(cfg.advertised_port));
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_string(cfg.cluster_id.clone())))
        .with_controller_id(BrokerId(node))
        .with_topics(topics)
}
