//! Request layouts for the guard, per Kafka's message definitions, for the versions the broker
//! serves. See [`super::guard`].

use super::guard::{Field, Schema, Ty, all, between, since, tagged, until};
use kafka_protocol::messages::ApiKey;

use Ty::{Arr, ArrOf, Bytes, I8, I16, I32, I64, Str, Uuid};

const PRODUCE_PARTITION: &[Field] = &[all(I32), all(Bytes)];
const PRODUCE_TOPIC: &[Field] = &[until(12, Str), since(13, Uuid), all(Arr(PRODUCE_PARTITION))];
const PRODUCE: Schema = Schema {
    min: 3,
    max: 13,
    flexible_from: 9,
    fields: &[all(Str), all(I16), all(I32), all(Arr(PRODUCE_TOPIC))],
};

const FETCH_PARTITION: &[Field] = &[
    all(I32),
    since(9, I32),
    all(I64),
    since(12, I32),
    since(5, I64),
    all(I32),
    tagged(0, 17, Uuid),
    tagged(1, 18, I64),
];
const FETCH_TOPIC: &[Field] = &[until(12, Str), since(13, Uuid), all(Arr(FETCH_PARTITION))];
const FETCH_FORGOTTEN: &[Field] = &[until(12, Str), since(13, Uuid), all(ArrOf(&I32))];
const REPLICA_STATE: &[Field] = &[all(I32), all(I64)];
const FETCH: Schema = Schema {
    min: 4,
    max: 18,
    flexible_from: 12,
    fields: &[
        until(14, I32),
        all(I32),
        all(I32),
        all(I32),
        all(I8),
        since(7, I32),
        since(7, I32),
        all(Arr(FETCH_TOPIC)),
        since(7, Arr(FETCH_FORGOTTEN)),
        since(11, Str),
        tagged(0, 12, Str),
        tagged(1, 15, Ty::Struct(REPLICA_STATE)),
    ],
};

const LIST_OFFSETS_PARTITION: &[Field] = &[all(I32), since(4, I32), all(I64)];
const LIST_OFFSETS_TOPIC: &[Field] = &[all(Str), all(Arr(LIST_OFFSETS_PARTITION))];
const LIST_OFFSETS: Schema = Schema {
    min: 1,
    max: 10,
    flexible_from: 6,
    fields: &[
        all(I32),
        since(2, I8),
        all(Arr(LIST_OFFSETS_TOPIC)),
        since(10, I32),
    ],
};

const OFFSET_FOR_EPOCH_PARTITION: &[Field] = &[all(I32), all(I32), all(I32)];
const OFFSET_FOR_EPOCH_TOPIC: &[Field] = &[all(Str), all(Arr(OFFSET_FOR_EPOCH_PARTITION))];
const OFFSET_FOR_LEADER_EPOCH: Schema = Schema {
    min: 2,
    max: 4,
    flexible_from: 4,
    fields: &[since(3, I32), all(Arr(OFFSET_FOR_EPOCH_TOPIC))],
};

const METADATA_TOPIC: &[Field] = &[since(10, Uuid), all(Str)];
const METADATA: Schema = Schema {
    min: 0,
    max: 13,
    flexible_from: 9,
    fields: &[
        all(Arr(METADATA_TOPIC)),
        since(4, I8),
        between(8, 10, I8),
        since(8, I8),
    ],
};

const API_VERSIONS: Schema = Schema {
    min: 0,
    max: 4,
    flexible_from: 3,
    fields: &[since(3, Str), since(3, Str)],
};

const CREATE_ASSIGNMENT: &[Field] = &[all(I32), all(ArrOf(&I32))];
const CREATE_CONFIG: &[Field] = &[all(Str), all(Str)];
const CREATE_TOPIC: &[Field] = &[
    all(Str),
    all(I32),
    all(I16),
    all(Arr(CREATE_ASSIGNMENT)),
    all(Arr(CREATE_CONFIG)),
];
const CREATE_TOPICS: Schema = Schema {
    min: 2,
    max: 7,
    flexible_from: 5,
    fields: &[all(Arr(CREATE_TOPIC)), all(I32), all(I8)],
};

const DELETE_TOPIC_STATE: &[Field] = &[all(Str), all(Uuid)];
const DELETE_TOPICS: Schema = Schema {
    min: 1,
    max: 6,
    flexible_from: 4,
    fields: &[
        since(6, Arr(DELETE_TOPIC_STATE)),
        until(5, ArrOf(&Str)),
        all(I32),
    ],
};

const INIT_PRODUCER_ID: Schema = Schema {
    min: 0,
    max: 5,
    flexible_from: 2,
    fields: &[all(Str), all(I32), since(3, I64), since(3, I16)],
};

const FIND_COORDINATOR: Schema = Schema {
    min: 0,
    max: 4,
    flexible_from: 3,
    fields: &[until(3, Str), since(1, I8), since(4, ArrOf(&Str))],
};

const JOIN_PROTOCOL: &[Field] = &[all(Str), all(Bytes)];
const JOIN_GROUP: Schema = Schema {
    min: 0,
    max: 9,
    flexible_from: 6,
    fields: &[
        all(Str),
        all(I32),
        since(1, I32),
        all(Str),
        since(5, Str),
        all(Str),
        all(Arr(JOIN_PROTOCOL)),
        since(8, Str),
    ],
};

const SYNC_ASSIGNMENT: &[Field] = &[all(Str), all(Bytes)];
const SYNC_GROUP: Schema = Schema {
    min: 0,
    max: 5,
    flexible_from: 4,
    fields: &[
        all(Str),
        all(I32),
        all(Str),
        since(3, Str),
        since(5, Str),
        since(5, Str),
        all(Arr(SYNC_ASSIGNMENT)),
    ],
};

const HEARTBEAT: Schema = Schema {
    min: 0,
    max: 4,
    flexible_from: 4,
    fields: &[all(Str), all(I32), all(Str), since(3, Str)],
};

const LEAVE_MEMBER: &[Field] = &[all(Str), all(Str), since(5, Str)];
const LEAVE_GROUP: Schema = Schema {
    min: 0,
    max: 5,
    flexible_from: 4,
    fields: &[all(Str), until(2, Str), since(3, Arr(LEAVE_MEMBER))],
};

const COMMIT_PARTITION: &[Field] = &[all(I32), all(I64), since(6, I32), all(Str)];
const COMMIT_TOPIC: &[Field] = &[all(Str), all(Arr(COMMIT_PARTITION))];
const OFFSET_COMMIT: Schema = Schema {
    min: 2,
    max: 8,
    flexible_from: 8,
    fields: &[
        all(Str),
        all(I32),
        all(Str),
        since(7, Str),
        until(4, I64),
        all(Arr(COMMIT_TOPIC)),
    ],
};

const FETCH_OFFSETS_TOPIC: &[Field] = &[all(Str), all(ArrOf(&I32))];
const FETCH_OFFSETS_GROUP: &[Field] = &[all(Str), all(Arr(FETCH_OFFSETS_TOPIC))];
const OFFSET_FETCH: Schema = Schema {
    min: 1,
    max: 8,
    flexible_from: 6,
    fields: &[
        until(7, Str),
        until(7, Arr(FETCH_OFFSETS_TOPIC)),
        since(8, Arr(FETCH_OFFSETS_GROUP)),
        since(7, I8),
    ],
};

const ADD_PARTITIONS_TOPIC: &[Field] = &[all(Str), all(ArrOf(&I32))];
const ADD_PARTITIONS_TO_TXN: Schema = Schema {
    min: 0,
    max: 3,
    flexible_from: 3,
    fields: &[all(Str), all(I64), all(I16), all(Arr(ADD_PARTITIONS_TOPIC))],
};

const ADD_OFFSETS_TO_TXN: Schema = Schema {
    min: 0,
    max: 3,
    flexible_from: 3,
    fields: &[all(Str), all(I64), all(I16), all(Str)],
};

const END_TXN: Schema = Schema {
    min: 0,
    max: 5,
    flexible_from: 3,
    fields: &[all(Str), all(I64), all(I16), all(I8)],
};

const TXN_OFFSET_PARTITION: &[Field] = &[all(I32), all(I64), since(2, I32), all(Str)];
const TXN_OFFSET_TOPIC: &[Field] = &[all(Str), all(Arr(TXN_OFFSET_PARTITION))];
const TXN_OFFSET_COMMIT: Schema = Schema {
    min: 0,
    max: 3,
    flexible_from: 3,
    fields: &[
        all(Str),
        all(Str),
        all(I64),
        all(I16),
        since(3, I32),
        since(3, Str),
        since(3, Str),
        all(Arr(TXN_OFFSET_TOPIC)),
    ],
};

/// The layout of `api`'s requests, if the guard knows it.
pub(crate) fn schema(api: ApiKey) -> Option<&'static Schema> {
    Some(match api {
        ApiKey::Produce => &PRODUCE,
        ApiKey::Fetch => &FETCH,
        ApiKey::ListOffsets => &LIST_OFFSETS,
        ApiKey::OffsetForLeaderEpoch => &OFFSET_FOR_LEADER_EPOCH,
        ApiKey::Metadata => &METADATA,
        ApiKey::ApiVersions => &API_VERSIONS,
        ApiKey::CreateTopics => &CREATE_TOPICS,
        ApiKey::DeleteTopics => &DELETE_TOPICS,
        ApiKey::InitProducerId => &INIT_PRODUCER_ID,
        ApiKey::FindCoordinator => &FIND_COORDINATOR,
        ApiKey::JoinGroup => &JOIN_GROUP,
        ApiKey::SyncGroup => &SYNC_GROUP,
        ApiKey::Heartbeat => &HEARTBEAT,
        ApiKey::LeaveGroup => &LEAVE_GROUP,
        ApiKey::OffsetCommit => &OFFSET_COMMIT,
        ApiKey::OffsetFetch => &OFFSET_FETCH,
        ApiKey::AddPartitionsToTxn => &ADD_PARTITIONS_TO_TXN,
        ApiKey::AddOffsetsToTxn => &ADD_OFFSETS_TO_TXN,
        ApiKey::EndTxn => &END_TXN,
        ApiKey::TxnOffsetCommit => &TXN_OFFSET_COMMIT,
        _ => return None,
    })
}
