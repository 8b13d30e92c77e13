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

/// The layout of `api`'s requests, if the guard knows it.
pub(crate) fn schema(api: ApiKey) -> Option<&'static Schema> {
    Some(match api {
        ApiKey::Produce => &PRODUCE,
        ApiKey::Fetch => &FETCH,
        ApiKey::ListOffsets => &LIST_OFFSETS,
        ApiKey::Metadata => &METADATA,
        ApiKey::ApiVersions => &API_VERSIONS,
        ApiKey::CreateTopics => &CREATE_TOPICS,
        ApiKey::DeleteTopics => &DELETE_TOPICS,
        ApiKey::InitProducerId => &INIT_PRODUCER_ID,
        _ => return None,
    })
}
