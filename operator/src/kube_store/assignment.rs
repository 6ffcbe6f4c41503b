//! The controller's partition records in a compact form, so that a topic of 100,000
//! partitions fits in one Kubernetes object (etcd refuses objects above 1.5 MiB, and a
//! ConfigMap holds at most 1 MiB). One line per partition, in partition order:
//! `replicas leader isr leader_epoch partition_epoch`, broker lists comma-separated;
//! the text compressed with zstd and written in base64 after a format tag.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tributary_broker::metadata::PartitionRecord;

/// The format tag: a later format gets a new one, and old ones stay readable.
const FORMAT: &str = "zstd-lines-v1:";
/// More than any topic can take (100,000 partitions of 1,000 replicas would be less),
/// so a damaged value cannot make the operator allocate without bound.
const MAX_TEXT_BYTES: usize = 64 << 20;

/// `partitions` in the compact form.
pub fn encode(partitions: &[PartitionRecord]) -> String {
    let mut text = String::with_capacity(partitions.len() * 24);
    for p in partitions {
        let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        text.push_str(&format!(
            "{} {} {} {} {}\n",
            list(&p.replicas),
            p.leader,
            list(&p.isr),
            p.leader_epoch,
            p.partition_epoch
        ));
    }
    // Level 3 (zstd's default) compresses such text to a tenth or less; writing to memory
    // cannot fail.
    let compressed = zstd::bulk::compress(text.as_bytes(), 3).unwrap_or_default();
    format!("{FORMAT}{}", STANDARD.encode(compressed))
}

/// The partitions of an [`encode`]d value, or what is wrong with it.
pub fn decode(value: &str) -> Result<Vec<PartitionRecord>, String> {
    let Some(data) = value.strip_prefix(FORMAT) else {
        let tag = value.split(':').next().unwrap_or_default();
        return Err(format!(
            "unknown partition encoding '{tag}' (this operator reads {FORMAT}); was it written by a newer operator?"
        ));
    };
    let compressed = STANDARD
        .decode(data)
        .map_err(|e| format!("the partitions are not valid base64: {e}"))?;
    let text = zstd::bulk::decompress(&compressed, MAX_TEXT_BYTES)
        .map_err(|e| format!("the partitions do not decompress: {e}"))?;
    let text = String::from_utf8(text).map_err(|e| format!("the partitions are not text: {e}"))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| parse_line(line).map_err(|e| format!("partition {i}: {e} in '{line}'")))
        .collect()
}

fn parse_line(line: &str) -> Result<PartitionRecord, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [replicas, leader, isr, leader_epoch, partition_epoch] = fields[..] else {
        return Err(format!("{} fields instead of 5", fields.len()));
    };
    let number = |field: &str, what: &str| {
        field
            .parse::<i32>()
            .map_err(|e| format!("{what} '{field}': {e}"))
    };
    let list = |field: &str, what: &str| -> Result<Vec<i32>, String> {
        if field.is_empty() {
            return Ok(Vec::new());
        }
        field.split(',').map(|id| number(id, what)).collect()
    };
    Ok(PartitionRecord {
        replicas: list(replicas, "replica")?,
        leader: number(leader, "leader")?,
        isr: list(isr, "in-sync replica")?,
        leader_epoch: number(leader_epoch, "leader epoch")?,
        partition_epoch: number(partition_epoch, "partition epoch")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(n: usize) -> Vec<PartitionRecord> {
        (0..n)
            .map(|i| {
                let replicas: Vec<i32> = (0..3).map(|r| ((i + r) % 5) as i32).collect();
                PartitionRecord {
                    isr: if i % 7 == 0 {
                        Vec::new()
                    } else {
                        replicas[..2].to_vec()
                    },
                    leader: if i % 7 == 0 { -1 } else { replicas[0] },
                    replicas,
                    leader_epoch: (i % 100) as i32,
                    partition_epoch: (i % 1000) as i32,
                }
            })
            .collect()
    }

    #[test]
    fn partitions_come_back_as_they_went_in() {
        for n in [0, 1, 7, 10_000] {
            let records = partitions(n);
            assert_eq!(decode(&encode(&records)).unwrap(), records);
        }
    }

    #[test]
    fn a_hundred_thousand_partitions_fit_in_one_object() {
        let encoded = encode(&partitions(100_000));
        assert!(encoded.len() < 512 * 1024, "{} bytes", encoded.len());
    }

    /// Ten thousand partitions with nothing in common (replicas anywhere among 100 brokers,
    /// epochs in the millions) still take a fraction of what an object may hold.
    #[test]
    fn ten_thousand_partitions_of_the_worst_kind_fit_in_a_config_map() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |below: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((seed >> 33) % below) as i32
        };
        let records: Vec<PartitionRecord> = (0..10_000)
            .map(|_| {
                let replicas: Vec<i32> = (0..3).map(|_| next(100)).collect();
                PartitionRecord {
                    leader: replicas[0],
                    isr: replicas[..2].to_vec(),
                    replicas,
                    leader_epoch: next(1_000_000),
                    partition_epoch: next(2_000_000),
                }
            })
            .collect();
        let encoded = encode(&records);
        assert!(encoded.len() < 400 * 1024, "{} bytes", encoded.len());
        assert_eq!(decode(&encoded).unwrap(), records);
    }

    #[test]
    fn damaged_values_say_what_is_wrong() {
        let cases = [
            (
                "json-v9:abc".to_string(),
                "unknown partition encoding 'json-v9'",
            ),
            (format!("{FORMAT}!!!"), "not valid base64"),
            (
                format!("{FORMAT}{}", STANDARD.encode("plain")),
                "do not decompress",
            ),
            (
                format!(
                    "{FORMAT}{}",
                    STANDARD
                        .encode(zstd::bulk::compress(b"1,2 1 1,x 0 0\n".as_slice(), 3).unwrap())
                ),
                "partition 0: in-sync replica 'x'",
            ),
            (
                format!(
                    "{FORMAT}{}",
                    STANDARD.encode(zstd::bulk::compress(b"1 1 1 0\n".as_slice(), 3).unwrap())
                ),
                "4 fields instead of 5",
            ),
        ];
        for (value, expected) in cases {
            let error = decode(&value).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
