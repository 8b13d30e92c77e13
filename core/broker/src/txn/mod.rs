//! The transaction coordinator. It runs on the active controller, so every transactional
//! request, from whichever broker received it, is forwarded there, and its state is the
//! metadata image's (see [`crate::cluster::txns`]).
//!
//! A transition is committed through the quorum before anything depends on it. Ending a
//! transaction commits the decision (`Prepare*`, which also commits its group offsets), then
//! writes a marker into every partition it touched, then commits `Complete*`. Whoever is
//! controller after a failover finishes prepared transactions, and aborts transactions that
//! outlived their timeout, from the image alone.

mod markers;
mod verify;

pub(crate) use markers::write_local;
pub(crate) use verify::verify;

use super::{BrokerMutant, State};
use crate::cluster::metadata::{Applied, MetadataCommand};
use crate::cluster::protocol::{CodedError, TxnRequest};
use crate::cluster::txns::{TxnPhase, TxnRecord};
use kafka_protocol::error::ResponseError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Transactional ids the cluster tracks, at most.
pub const TRANSACTIONAL_IDS_MAX: usize = 100_000;
/// Partitions one transaction may touch, at most.
pub const TXN_PARTITIONS_MAX: usize = 1_000;
/// Offsets one transaction may commit per group, at most.
pub const TXN_OFFSETS_MAX: usize = 10_000;
/// Longest transaction timeout a client may ask for, in milliseconds.
pub const TXN_TIMEOUT_MS_MAX: i64 = 15 * 60 * 1000;
/// How often the controller looks for expired and unfinished transactions, in milliseconds.
const TXN_SCAN_INTERVAL_MS: u64 = 500;

type TxnResult = Result<(i64, i16), CodedError>;

fn err(code: ResponseError, msg: impl Into<String>) -> CodedError {
    CodedError::new(code, msg)
}

fn unavailable() -> CodedError {
    err(
        ResponseError::NotCoordinator,
        "the coordinator moved or lost its quorum",
    )
}

/// Commits a transition of `id` from `from` (its version; `None` for a new id).
async fn put(
    state: &State,
    id: &str,
    record: TxnRecord,
    from: Option<u64>,
) -> Result<(), CodedError> {
    tracing::debug!(id, phase = ?record.phase, producer_id = record.producer_id, epoch = record.producer_epoch, partitions = ?record.partitions, "transaction transition");
    let cmd = MetadataCommand::PutTxn {
        id: id.to_string(),
        record,
        expected: from,
    };
    match state.quorum.propose(cmd).await {
        Ok(Applied::Done) => Ok(()),
        Ok(_) => Err(err(
            ResponseError::ConcurrentTransactions,
            "the transaction changed meanwhile",
        )),
        Err(_) => Err(unavailable()),
    }
}

fn current(state: &State, id: &str) -> Result<Option<TxnRecord>, CodedError> {
    let st = state.quorum.current();
    if !st.active {
        return Err(unavailable());
    }
    Ok(st.image.transactions.get(id).cloned())
}

/// Serves one transactional request on the active controller.
pub(crate) async fn handle(state: &State, req: TxnRequest) -> TxnResult {
    match req {
        TxnRequest::Init {
            id,
            timeout_ms,
            producer_id,
            producer_epoch,
        } => init(state, &id, timeout_ms, producer_id, producer_epoch).await,
        TxnRequest::Add {
            id,
            producer_id,
            producer_epoch,
            partitions,
            groups,
        } => add(state, &id, producer_id, producer_epoch, partitions, groups).await,
        TxnRequest::Offsets {
            id,
            producer_id,
            producer_epoch,
            group,
            member,
            offsets,
        } => {
            let rec = owned(state, &id, producer_id, producer_epoch)?;
            if let Some((generation, member)) = member {
                state
                    .groups
                    .check_commit(&group, generation, &member)
                    .map_err(|e| {
                        err(
                            e,
                            format!(
                                "{member:?} of generation {generation} may not commit for {group:?}"
                            ),
                        )
                    })?;
            }
            let Some(sent) = rec.offsets.get(&group) else {
                return Err(err(
                    ResponseError::InvalidTxnState,
                    format!("group {group:?} was not added to the transaction"),
                ));
            };
            let mut merged: BTreeMap<(String, i32), _> = sent
                .iter()
                .map(|o| ((o.topic.clone(), o.partition), o.clone()))
                .collect();
            for o in offsets {
                merged.insert((o.topic.clone(), o.partition), o);
            }
            if merged.len() > TXN_OFFSETS_MAX {
                return Err(err(
                    ResponseError::PolicyViolation,
                    format!("a transaction commits at most {TXN_OFFSETS_MAX} offsets per group"),
                ));
            }
            let mut next = rec.clone();
            next.offsets.insert(group, merged.into_values().collect());
            next.version += 1;
            put(state, &id, next, Some(rec.version)).await?;
            Ok((rec.producer_id, rec.producer_epoch))
        }
        TxnRequest::End {
            id,
            producer_id,
            producer_epoch,
            commit,
            bump,
        } => end(state, &id, producer_id, producer_epoch, commit, bump).await,
    }
}

/// The record of `id`, if `producer_id` holds it.
fn held(state: &State, id: &str, producer_id: i64) -> Result<TxnRecord, CodedError> {
    let Some(rec) = current(state, id)? else {
        return Err(err(
            ResponseError::InvalidProducerIdMapping,
            format!("no transactional id {id:?}"),
        ));
    };
    if rec.producer_id != producer_id {
        return Err(err(
            ResponseError::InvalidProducerIdMapping,
            "another producer id holds this transactional id",
        ));
    }
    Ok(rec)
}

/// The record of `id`, if the client's producer id and epoch own it and it may take more.
fn owned(state: &State, id: &str, producer_id: i64, epoch: i16) -> Result<TxnRecord, CodedError> {
    let rec = held(state, id, producer_id)?;
    if epoch < rec.producer_epoch {
        return Err(err(
            ResponseError::ProducerFenced,
            format!("epoch {epoch} is fenced by {}", rec.producer_epoch),
        ));
    }
    if epoch > rec.producer_epoch {
        return Err(err(
            ResponseError::InvalidProducerEpoch,
            "epoch from the future",
        ));
    }
    if rec.phase.is_prepared() {
        return Err(err(
            ResponseError::ConcurrentTransactions,
            "the previous transaction is still ending",
        ));
    }
    Ok(rec)
}

async fn init(
    state: &State,
    id: &str,
    timeout_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> TxnResult {
    if !(1..=TXN_TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(err(
            ResponseError::InvalidTransactionTimeout,
            format!("timeout must be 1..={TXN_TIMEOUT_MS_MAX} ms"),
        ));
    }
    let Some(mut rec) = current(state, id)? else {
        let image = state.quorum.current().image;
        if image.transactions.len() >= TRANSACTIONAL_IDS_MAX {
            return Err(err(
                ResponseError::PolicyViolation,
                format!("the cluster tracks at most {TRANSACTIONAL_IDS_MAX} transactional ids"),
            ));
        }
        let pid = allocate_producer_id(state).await?;
        let rec = TxnRecord {
            producer_id: pid,
            producer_epoch: 0,
            txn_epoch: 0,
            timeout_ms,
            phase: TxnPhase::Empty,
            partitions: BTreeSet::new(),
            offsets: BTreeMap::new(),
            started_ms: -1,
            version: 0,
        };
        put(state, id, rec, None).await?;
        return Ok((pid, 0));
    };
    // The client may have missed the epoch an EndTxn v5 bumped (KIP-360 recovery).
    let known = producer_id == rec.producer_id
        && (producer_epoch == rec.producer_epoch || producer_epoch + 1 == rec.producer_epoch);
    if producer_id >= 0 && !known {
        return Err(err(
            ResponseError::ProducerFenced,
            "the producer id and epoch given are not this transactional id's",
        ));
    }
    if state.config.mutant == Some(BrokerMutant::NoZombieFencing) {
        // The broken coordinator hands the new instance the old epoch and leaves the old
        // instance's transaction running.
        return Ok((rec.producer_id, rec.producer_epoch));
    }
    if rec.phase == TxnPhase::Ongoing {
        rec = decide(state, id, rec, false, true).await?;
    }
    if rec.phase.is_prepared() {
        rec = complete(state, id, rec).await?;
    }
    let mut next = rec.clone();
    if rec.producer_epoch >= i16::MAX - 1 {
        next.producer_id = allocate_producer_id(state).await?;
        next.producer_epoch = 0;
    } else {
        next.producer_epoch += 1;
    }
    next.timeout_ms = timeout_ms;
    next.phase = TxnPhase::Empty;
    next.version += 1;
    put(state, id, next.clone(), Some(rec.version)).await?;
    Ok((next.producer_id, next.producer_epoch))
}

async fn allocate_producer_id(state: &State) -> Result<i64, CodedError> {
    match state
        .quorum
        .propose(MetadataCommand::AllocateProducerIds { count: 1 })
        .await
    {
        Ok(Applied::ProducerIds(first)) => Ok(first),
        Ok(_) | Err(_) => Err(unavailable()),
    }
}

async fn add(
    state: &State,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
    groups: Vec<String>,
) -> TxnResult {
    let rec = owned(state, id, producer_id, epoch)?;
    let image = state.quorum.current().image;
    if let Some((t, p)) = partitions
        .iter()
        .find(|(t, p)| image.partition(t, *p).is_none())
    {
        return Err(err(
            ResponseError::UnknownTopicOrPartition,
            format!("{t}-{p}"),
        ));
    }
    let mut next = rec.clone();
    next.partitions.extend(partitions);
    for g in groups {
        next.offsets.entry(g).or_default();
    }
    if next.partitions.len() > TXN_PARTITIONS_MAX {
        return Err(err(
            ResponseError::PolicyViolation,
            format!("a transaction touches at most {TXN_PARTITIONS_MAX} partitions"),
        ));
    }
    if rec.phase != TxnPhase::Ongoing {
        next.phase = TxnPhase::Ongoing;
        next.txn_epoch = rec.producer_epoch;
        next.started_ms = state.clock.now_ms();
    }
    if next == rec {
        return Ok((rec.producer_id, rec.producer_epoch));
    }
    next.version += 1;
    put(state, id, next, Some(rec.version)).await?;
    Ok((rec.producer_id, rec.producer_epoch))
}

async fn end(
    state: &State,
    id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    bump: bool,
) -> TxnResult {
    let rec = held(state, id, producer_id)?;
    let (prepared, completed) = if commit {
        (TxnPhase::PrepareCommit, TxnPhase::CompleteCommit)
    } else {
        (TxnPhase::PrepareAbort, TxnPhase::CompleteAbort)
    };
    let decided_epoch = epoch.saturating_add(i16::from(bump));
    // A retry of this very EndTxn: its decision stands.
    if (rec.phase == prepared || rec.phase == completed) && rec.producer_epoch == decided_epoch {
        let rec = if rec.phase == prepared {
            complete(state, id, rec).await?
        } else {
            rec
        };
        return Ok((rec.producer_id, rec.producer_epoch));
    }
    if epoch < rec.producer_epoch {
        return Err(err(
            ResponseError::ProducerFenced,
            format!("epoch {epoch} is fenced by {}", rec.producer_epoch),
        ));
    }
    if epoch > rec.producer_epoch {
        return Err(err(
            ResponseError::InvalidProducerEpoch,
            "epoch from the future",
        ));
    }
    match rec.phase {
        TxnPhase::Ongoing => {}
        p if p.is_prepared() => {
            return Err(err(
                ResponseError::ConcurrentTransactions,
                "the previous transaction is still ending",
            ));
        }
        _ => {
            return Err(err(
                ResponseError::InvalidTxnState,
                format!("no transaction is open ({:?})", rec.phase),
            ));
        }
    }
    let rec = decide(state, id, rec, commit, bump).await?;
    let rec = complete(state, id, rec).await?;
    Ok((rec.producer_id, rec.producer_epoch))
}

/// Commits the decision to commit or abort `rec`, bumping its epoch when `bump`.
async fn decide(
    state: &State,
    id: &str,
    rec: TxnRecord,
    commit: bool,
    bump: bool,
) -> Result<TxnRecord, CodedError> {
    debug_assert_eq!(rec.phase, TxnPhase::Ongoing);
    let mut next = rec.clone();
    next.phase = if commit {
        TxnPhase::PrepareCommit
    } else {
        TxnPhase::PrepareAbort
    };
    if bump {
        next.producer_epoch = next.producer_epoch.saturating_add(1);
    }
    next.version += 1;
    put(state, id, next.clone(), Some(rec.version)).await?;
    Ok(next)
}

/// Writes the markers of a decided transaction and commits its completion.
async fn complete(state: &State, id: &str, rec: TxnRecord) -> Result<TxnRecord, CodedError> {
    debug_assert!(rec.phase.is_prepared());
    let commit = rec.phase == TxnPhase::PrepareCommit;
    markers::write_all(state, &rec, commit).await?;
    let mut next = rec.clone();
    next.phase = if commit {
        TxnPhase::CompleteCommit
    } else {
        TxnPhase::CompleteAbort
    };
    next.partitions.clear();
    next.offsets.clear();
    next.version += 1;
    put(state, id, next.clone(), Some(rec.version)).await?;
    Ok(next)
}

/// While this broker is the active controller: aborts transactions past their timeout (with
/// an epoch bump, fencing their producer) and finishes decided ones.
pub(crate) async fn expire_loop(state: Arc<State>) {
    let mut stop = state.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = super::until_set(&mut stop) => return,
            _ = tokio::time::sleep(Duration::from_millis(TXN_SCAN_INTERVAL_MS)) => {}
        }
        let st = state.quorum.current();
        if !st.active {
            continue;
        }
        let now = state.clock.now_ms();
        for id in st.image.transactions.keys() {
            // Act on the record as it is now: earlier ones in this scan may have taken a while.
            let Ok(Some(rec)) = current(&state, id) else {
                continue;
            };
            let outcome = match rec.phase {
                TxnPhase::Ongoing if now - rec.started_ms > rec.timeout_ms => {
                    tracing::info!(
                        id,
                        producer_id = rec.producer_id,
                        "transaction timed out; aborting"
                    );
                    match decide(&state, id, rec.clone(), false, true).await {
                        Ok(r) => complete(&state, id, r).await.map(|_| ()),
                        Err(e) => Err(e),
                    }
                }
                p if p.is_prepared() => complete(&state, id, rec.clone()).await.map(|_| ()),
                _ => Ok(()),
            };
            if let Err(e) = outcome {
                tracing::debug!(id, error = %e.message, "transaction not finished yet");
            }
        }
    }
}
