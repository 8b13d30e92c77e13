//! Metadata, answered from this broker's metadata image.

use super::super::{State, validate_topic_name};
use crate::cluster::controller::broker_of;
use crate::cluster::metadata::{MetadataImage, NO_LEADER, TopicImage};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().copied().map(BrokerId).collect()
}

pub(super) fn topic_entry(
    image: &MetadataImage,
    name: &str,
    t: &TopicImage,
) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                .collect();
            let error = if p.leader == NO_LEADER {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(Uuid::from_u128(t.id))
        .with_partitions(partitions)
}

fn error_entry(name: Option<String>, id: Uuid, code: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id)
}

/// Describes the live brokers and the requested topics, or all of them.
pub(super) async fn handle(
    state: &Arc<State>,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let cfg = &state.config;
    let mut image = state.image();
    let all = |image: &MetadataImage| {
        image
            .topics
            .iter()
            .map(|(n, t)| topic_entry(image, n, t))
            .collect::<Vec<_>>()
    };
    let topics = match req.topics {
        // v0 asks for all topics with an empty list; later versions with a null one.
        None => all(&image),
        Some(list) if list.is_empty() && version == 0 => all(&image),
        Some(list) => {
            let mut out = Vec::new();
            let mut seen = BTreeSet::new();
            for t in list {
                let entry = match t.name.map(|n| n.0.to_string()) {
                    Some(name) => {
                        if !seen.insert(name.clone()) {
                            continue;
                        }
                        if validate_topic_name(&name).is_err() {
                            error_entry(
                                Some(name),
                                Uuid::nil(),
                                ResponseError::InvalidTopicException,
                            )
                        } else if let Some(topic) = image.topics.get(&name) {
                            topic_entry(&image, &name, topic)
                        } else if cfg.auto_create_topics
                            && (version < 4 || req.allow_auto_topic_creation)
                        {
                            match super::admin::auto_create(state, &name).await {
                                Ok(()) => {
                                    image = state.image();
                                    match image.topics.get(&name) {
                                        Some(topic) => topic_entry(&image, &name, topic),
                                        None => error_entry(
                                            Some(name),
                                            Uuid::nil(),
                                            ResponseError::LeaderNotAvailable,
                                        ),
                                    }
                                }
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
                    None => match image
                        .topics
                        .iter()
                        .find(|(_, x)| x.id == t.topic_id.as_u128())
                    {
                        Some((name, topic)) => topic_entry(&image, name, topic),
                        None => error_entry(None, t.topic_id, ResponseError::UnknownTopicId),
                    },
                };
                out.push(entry);
            }
            out
        }
    };
    let mut brokers: Vec<MetadataResponseBroker> = image
        .brokers
        .iter()
        .filter(|(_, b)| !b.fenced)
        .map(|(id, b)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(*id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
        })
        .collect();
    if !image.brokers.contains_key(&cfg.node_id) {
        // Before it has registered, a broker still names itself, so that clients keep a way in.
        brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(cfg.node_id))
                .with_host(StrBytes::from_string(cfg.advertised_host.clone()))
                .with_port(i32::from(cfg.advertised_port)),
        );
    }
    let controller = state.quorum.current().leader.map_or(-1, broker_of);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(cfg.cluster_id.clone())))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}
