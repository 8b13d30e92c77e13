//! Helpers shared by the broker integration tests.

use bytes::Bytes;
use std::sync::Arc;
use weir_client::{Admin, ClientConfig, Cluster, NewTopic, Producer, ProducerConfig, Record};
use weir_seams::clock::Clock;
use weir_seams::net::Net;

/// A client of the broker at `addr` with topic `topic` created.
pub async fn cluster_with_topic(addr: &str, topic: &str, partitions: i32) -> Arc<Cluster> {
    let cluster = Cluster::new(ClientConfig::new([addr.to_string()], Net::Tokio));
    Admin::new(cluster.clone())
        .create_topic(&NewTopic::new(topic, partitions, 1))
        .await
        .unwrap();
    cluster
}

/// Sends `values` to `topic`-0 with an idempotent acks=all producer and waits for every ack.
pub async fn produce_all(
    cluster: &Arc<Cluster>,
    topic: &str,
    values: impl IntoIterator<Item = String>,
) {
    let producer = Producer::new(
        cluster.clone(),
        ProducerConfig::default(),
        Clock::starting_at(0),
    )
    .await
    .unwrap();
    let mut deliveries = Vec::new();
    for v in values {
        let r = Record {
            topic: topic.into(),
            partition: Some(0),
            value: Some(Bytes::from(v)),
            ..Default::default()
        };
        deliveries.push(producer.send(r).await.unwrap());
    }
    for d in deliveries {
        d.wait().await.unwrap();
    }
    producer.close().await;
}
