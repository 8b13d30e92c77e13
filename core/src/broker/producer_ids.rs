//! Allocation of producer ids that are never reused, even across crashes.
//!
//! Ids are handed out from blocks; the end of the current block is made durable before the
//! first id of the block is given out, so a restarted broker resumes after it.

use crate::disk::Disk;
use std::io;

const STATE_FILE: &str = "producer-ids.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Persisted {
    next_block: i64,
}

/// The producer id allocator.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    disk: Disk,
    next: i64,
    block_end: i64,
    block_size: i64,
}

impl ProducerIds {
    /// Loads the allocator from `disk` (the broker's metadata directory).
    pub fn open(disk: Disk, block_size: i64) -> io::Result<Self> {
        assert!(block_size > 0);
        let next_block = match disk.read_small(STATE_FILE)? {
            Some(bytes) => {
                serde_json::from_slice::<Persisted>(&bytes)
                    .map_err(io::Error::other)?
                    .next_block
            }
            None => 0,
        };
        Ok(Self {
            disk,
            next: next_block,
            block_end: next_block,
            block_size,
        })
    }

    /// The next unused producer id.
    pub async fn allocate(&mut self) -> io::Result<i64> {
        if self.next == self.block_end {
            let end = self.block_end + self.block_size;
            let bytes = serde_json::to_vec(&Persisted { next_block: end }).expect("serializes");
            self.disk.write_atomic(STATE_FILE, &bytes).await?;
            self.block_end = end;
        }
        let id = self.next;
        self.next += 1;
        debug_assert!(self.next <= self.block_end);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = ProducerIds::open(Disk::real(dir.path()), 10).unwrap();
        let first: Vec<i64> = [a.allocate().await.unwrap(), a.allocate().await.unwrap()].into();
        assert_eq!(first, vec![0, 1]);
        let mut b = ProducerIds::open(Disk::real(dir.path()), 10).unwrap();
        assert_eq!(b.allocate().await.unwrap(), 10);
    }
}
