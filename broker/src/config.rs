//! Topic configuration: the `key=value` overrides a topic is created with, checked and
//! turned into what the log and replication use. Keys and meanings follow Kafka's.

use std::collections::BTreeMap;
use std::fmt;

use crate::log::LogConfig;
use crate::record::TimestampType;

/// One configuration key: its name, what it means and how to read its value.
pub struct ConfigKey {
    pub name: &'static str,
    pub doc: &'static str,
    pub default: &'static str,
    apply: fn(&mut TopicConfig, &str) -> Result<(), String>,
}

/// Every topic configuration key, in the order the README lists them.
pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "segment.bytes",
        doc: "Roll to a new segment file when the active one reaches this size (1024 to 2147483647).",
        default: "1073741824",
        apply: |c, v| {
            c.log.segment_bytes = int_in(v, 1024, i32::MAX as i64)? as u64;
            Ok(())
        },
    },
    ConfigKey {
        name: "segment.ms",
        doc: "Roll to a new segment when the active one's first record is older than this.",
        default: "604800000",
        apply: |c, v| {
            c.log.segment_ms = int_in(v, 1, i64::MAX)?;
            Ok(())
        },
    },
    ConfigKey {
        name: "segment.index.bytes",
        doc: "Size the offset and time index files of a segment are preallocated to.",
        default: "10485760",
        apply: |c, v| {
            c.log.segment_index_bytes = int_in(v, 1024, i32::MAX as i64)? as u64;
            Ok(())
        },
    },
    ConfigKey {
        name: "index.interval.bytes",
        doc: "Bytes of log between two offset index entries.",
        default: "4096",
        apply: |c, v| {
            c.log.index_interval_bytes = int_in(v, 0, i32::MAX as i64)? as u64;
            Ok(())
        },
    },
    ConfigKey {
        name: "retention.ms",
        doc: "Delete closed segments whose newest record is older than this; -1 keeps them forever.",
        default: "604800000",
        apply: |c, v| {
            c.log.retention_ms = int_in(v, -1, i64::MAX)?;
            Ok(())
        },
    },
    ConfigKey {
        name: "retention.bytes",
        doc: "Delete the oldest closed segments while a partition is larger than this; -1 for no limit.",
        default: "-1",
        apply: |c, v| {
            c.log.retention_bytes = int_in(v, -1, i64::MAX)?;
            Ok(())
        },
    },
    ConfigKey {
        name: "max.message.bytes",
        doc: "Largest record batch (after compression) a producer may send.",
        default: "1048588",
        apply: |c, v| {
            c.log.max_message_bytes = int_in(v, 64, 256 << 20)? as usize;
            Ok(())
        },
    },
    ConfigKey {
        name: "flush.messages",
        doc: "fsync the log after this many records; by default the OS flushes and replication protects the data.",
        default: "9223372036854775807",
        apply: |c, v| {
            c.log.flush_messages = int_in(v, 1, i64::MAX)? as u64;
            Ok(())
        },
    },
    ConfigKey {
        name: "flush.ms",
        doc: "fsync the log when its oldest unflushed write is this old (checked every second).",
        default: "9223372036854775807",
        apply: |c, v| {
            c.log.flush_ms = int_in(v, 0, i64::MAX)? as u64;
            Ok(())
        },
    },
    ConfigKey {
        name: "message.timestamp.type",
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock.",
        default: "CreateTime",
        apply: |c, v| {
            c.log.timestamp_type = match v {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err("expected CreateTime or LogAppendTime".into()),
            };
            Ok(())
        },
    },
    ConfigKey {
        name: "min.insync.replicas",
        doc: "With acks=all, the fewest in-sync replicas a write needs; fewer and it fails with NOT_ENOUGH_REPLICAS.",
        default: "1",
        apply: |c, v| {
            c.min_insync_replicas = int_in(v, 1, i32::MAX as i64)? as u32;
            Ok(())
        },
    },
    ConfigKey {
        name: "unclean.leader.election.enable",
        doc: "Let an out-of-sync replica become leader when no in-sync one is left. This can lose acknowledged records.",
        default: "false",
        apply: |c, v| {
            c.unclean_leader_election = match v {
                "true" => true,
                "false" => false,
                _ => return Err("expected true or false".into()),
            };
            Ok(())
        },
    },
    ConfigKey {
        name: "cleanup.policy",
        doc: "What happens to old segments: delete (by retention.ms / retention.bytes).",
        default: "delete",
        apply: |_, v| match v {
            "delete" => Ok(()),
            "compact" | "compact,delete" | "delete,compact" => {
                Err("log compaction is not supported yet; use delete".into())
            }
            _ => Err("expected delete".into()),
        },
    },
];

/// A topic's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub log: LogConfig,
    pub min_insync_replicas: u32,
    pub unclean_leader_election: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            log: LogConfig::default(),
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }
    }
}

/// A configuration that could not be accepted, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl TopicConfig {
    /// Applies `overrides` on top of `defaults`, checking every key and value.
    pub fn resolve(
        defaults: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut config = defaults.clone();
        for (key, value) in overrides {
            let spec = KEYS.iter().find(|k| k.name == key).ok_or_else(|| {
                let known: Vec<_> = KEYS.iter().map(|k| k.name).collect();
                ConfigError(format!(
                    "unknown topic config '{key}'; known keys are: {}",
                    known.join(", ")
                ))
            })?;
            (spec.apply)(&mut config, value.trim())
                .map_err(|why| ConfigError(format!("invalid value '{value}' for {key}: {why}")))?;
        }
        Ok(config)
    }

    /// Parses `key=value` strings (as given on command lines) into a map.
    pub fn parse_pairs<S: AsRef<str>>(
        pairs: &[S],
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        pairs
            .iter()
            .map(|pair| {
                let pair = pair.as_ref();
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| ConfigError(format!("expected key=value, got '{pair}'")))
            })
            .collect()
    }
}

fn int_in(value: &str, min: i64, max: i64) -> Result<i64, String> {
    let n: i64 = value
        .parse()
        .map_err(|_| format!("expected a whole number from {min} to {max}"))?;
    if n < min || n > max {
        return Err(format!("must be from {min} to {max}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_on_top_of_defaults() {
        let config = TopicConfig::resolve(
            &TopicConfig::default(),
            &map(&[
                ("segment.bytes", "4096"),
                ("retention.ms", "-1"),
                ("message.timestamp.type", "LogAppendTime"),
            ]),
        )
        .unwrap();
        assert_eq!(config.log.segment_bytes, 4096);
        assert_eq!(config.log.retention_ms, -1);
        assert_eq!(config.log.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.log.index_interval_bytes, 4096);
    }

    #[test]
    fn unknown_keys_list_the_known_ones() {
        let err = TopicConfig::resolve(&TopicConfig::default(), &map(&[("retention.hours", "1")]))
            .unwrap_err();
        assert!(
            err.0.contains("unknown topic config 'retention.hours'"),
            "{err}"
        );
        assert!(err.0.contains("retention.ms"), "{err}");
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let err = TopicConfig::resolve(&TopicConfig::default(), &map(&[("segment.bytes", "10")]))
            .unwrap_err();
        assert_eq!(
            err.0,
            "invalid value '10' for segment.bytes: must be from 1024 to 2147483647"
        );
        let err = TopicConfig::resolve(&TopicConfig::default(), &map(&[("retention.ms", "soon")]))
            .unwrap_err();
        assert!(err.0.contains("expected a whole number"), "{err}");
        let err = TopicConfig::resolve(
            &TopicConfig::default(),
            &map(&[("cleanup.policy", "compact")]),
        )
        .unwrap_err();
        assert!(err.0.contains("not supported"), "{err}");
    }

    #[test]
    fn every_documented_default_is_the_real_default() {
        let defaults = TopicConfig::default();
        let documented: BTreeMap<String, String> = KEYS
            .iter()
            .map(|k| (k.name.to_string(), k.default.to_string()))
            .collect();
        assert_eq!(
            TopicConfig::resolve(&defaults, &documented).unwrap(),
            defaults
        );
    }

    #[test]
    fn the_readme_documents_every_key_with_its_default() {
        let readme = include_str!("../../README.md");
        for key in KEYS {
            let row = format!("| `{}` | {} |", key.name, key.default);
            assert!(readme.contains(&row), "README.md has no row starting {row}");
        }
    }

    #[test]
    fn pairs_parse_and_malformed_ones_are_named() {
        assert_eq!(
            TopicConfig::parse_pairs(&["a=1", " b = x=y "]).unwrap(),
            map(&[("a", "1"), ("b", "x=y")])
        );
        assert_eq!(
            TopicConfig::parse_pairs(&["novalue"]).unwrap_err().0,
            "expected key=value, got 'novalue'"
        );
    }
}
