//! The records of `__consumer_offsets`: the key names a group's partition, the value the
//! committed offset. JSON, so that `tributary consume __consumer_offsets` shows them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::TopicPartition;
use crate::record::{BatchBuilder, Compression, Record};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    #[serde(default)]
    pub metadata: String,
    pub commit_time_ms: i64,
}

/// One batch with a record per committed offset, in order.
pub fn encode(group: &str, offsets: &[(TopicPartition, OffsetValue)]) -> Bytes {
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = offsets
        .iter()
        .map(|(tp, value)| {
            let key = OffsetKey {
                group: group.to_string(),
                topic: tp.topic.clone(),
                partition: tp.partition,
            };
            (
                serde_json::to_vec(&key).expect("serializable"),
                serde_json::to_vec(value).expect("serializable"),
            )
        })
        .collect();
    let size: usize = encoded.iter().map(|(k, v)| k.len() + v.len() + 32).sum();
    let mut builder = BatchBuilder::new(Compression::None, size + 128);
    for ((key, value), (_, v)) in encoded.iter().zip(offsets) {
        builder.append(v.commit_time_ms, Some(key), Some(value), &[]);
    }
    builder
        .build()
        .expect("an uncompressed batch always builds")
}

/// One batch with a tombstone (a record without a value) per partition: the group's
/// committed offsets for them are deleted, also when the log is read again.
pub fn encode_deletions(group: &str, partitions: &[TopicPartition], now_ms: i64) -> Bytes {
    let keys: Vec<Vec<u8>> = partitions
        .iter()
        .map(|tp| {
            let key = OffsetKey {
                group: group.to_string(),
                topic: tp.topic.clone(),
                partition: tp.partition,
            };
            serde_json::to_vec(&key).expect("serializable")
        })
        .collect();
    let size: usize = keys.iter().map(|k| k.len() + 32).sum();
    let mut builder = BatchBuilder::new(Compression::None, size + 128);
    for key in &keys {
        builder.append(now_ms, Some(key), None, &[]);
    }
    builder
        .build()
        .expect("an uncompressed batch always builds")
}

/// Reads a record of the offsets log; None for records this version does not know (they
/// are skipped, so a newer broker's records do not stop an older one loading).
pub fn decode(record: &Record) -> Option<(OffsetKey, Option<OffsetValue>)> {
    let key: OffsetKey = serde_json::from_slice(record.key.as_deref()?).ok()?;
    let value = match &record.value {
        None => None,
        Some(v) => Some(serde_json::from_slice(v).ok()?),
    };
    Some((key, value))
}
