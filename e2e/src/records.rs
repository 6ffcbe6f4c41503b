//! The records the tests produce (`KEY:VALUE` lines for `tributary produce
//! --key-separator :`, every value unique), what the producer acknowledged (its
//! `--print-offsets` output), what a consumer read back (`tributary consume --format
//! json`), and the check between them: every acknowledged record is read back exactly
//! once, at the offset it was acknowledged at, and each partition holds its records in the
//! order they were sent.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use serde::Deserialize;

/// How many keys the records spread over (several per partition).
const KEYS: usize = 16;

/// `count` lines `key-K:RUN-NNNNNN`; the value names the line, so a read-back record
/// says which line it came from.
pub fn keyed_lines(run: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("key-{}:{run}-{i:06}", i % KEYS))
        .collect()
}

/// The key of a line.
pub fn key(line: &str) -> &str {
    line.split_once(':').map_or(line, |(key, _)| key)
}

/// The partition Kafka's default partitioner (and Tributary's) gives the line's key.
pub fn partition_of(line: &str, partitions: u32) -> i32 {
    tributary_broker::client::partition_for_key(key(line).as_bytes(), partitions) as i32
}

/// The lines as standard input.
pub fn input(lines: &[String]) -> Vec<u8> {
    let mut bytes = lines.join("\n").into_bytes();
    bytes.push(b'\n');
    bytes
}

/// A record the producer acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// Index into the lines sent.
    pub line: usize,
    pub partition: i32,
    pub offset: i64,
}

/// The acknowledged records of a `tributary produce --print-offsets` run that was given
/// `sent` lines. It prints `PARTITION OFFSET` for each acknowledged record in the order
/// the lines were sent, and `error: the record from line N was not written: ...` on
/// standard error for each one that was not (or `error: line N could not be sent`, after
/// which it sent nothing more).
pub fn acknowledged(stdout: &str, stderr: &str, sent: usize) -> anyhow::Result<Vec<Acked>> {
    let mut failed = std::collections::BTreeSet::new();
    let mut last_sent = sent;
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("error: the record from line ") {
            failed.insert(line_number(rest)?);
        } else if let Some(rest) = line.strip_prefix("error: line ") {
            last_sent = last_sent.min(line_number(rest)?.saturating_sub(1));
        }
    }
    let offsets: Vec<(i32, i64)> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (partition, offset) = l
                .trim()
                .split_once(' ')
                .with_context(|| format!("not `PARTITION OFFSET`: {l:?}"))?;
            Ok((partition.parse()?, offset.parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let acked_lines: Vec<usize> = (1..=last_sent).filter(|n| !failed.contains(n)).collect();
    if acked_lines.len() != offsets.len() {
        bail!(
            "the producer printed {} offsets for {} lines sent, {} of them reported not written",
            offsets.len(),
            last_sent,
            failed.len()
        );
    }
    Ok(acked_lines
        .into_iter()
        .zip(offsets)
        .map(|(number, (partition, offset))| Acked {
            line: number - 1,
            partition,
            offset,
        })
        .collect())
}

fn line_number(text: &str) -> anyhow::Result<usize> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .with_context(|| format!("no line number at {text:?}"))
}

/// One record as `tributary consume --format json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
}

impl Consumed {
    /// The line it was produced from, `KEY:VALUE`.
    fn line(&self) -> String {
        format!(
            "{}:{}",
            self.key.as_deref().unwrap_or("null"),
            self.value.as_deref().unwrap_or("null")
        )
    }
}

/// Parses `tributary consume --format json` output.
pub fn consumed(stdout: &str) -> anyhow::Result<Vec<Consumed>> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a consumed record: {l:?}")))
        .collect()
}

/// Every acknowledged line was read back exactly once, at the partition and offset it was
/// acknowledged with; nothing was read that was not sent, or twice; and within each
/// partition the lines are in the order they were sent. Lines that were sent but not
/// acknowledged may be there (once) or not.
pub fn check_read_back(
    lines: &[String],
    acked: &[Acked],
    consumed: &[Consumed],
) -> Result<(), String> {
    let index: HashMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut problems = Vec::new();
    let mut at: BTreeMap<(i32, i64), &Consumed> = BTreeMap::new();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for record in consumed {
        if at
            .insert((record.partition, record.offset), record)
            .is_some()
        {
            problems.push(format!(
                "partition {} offset {} was read twice",
                record.partition, record.offset
            ));
        }
        match index.get(record.line().as_str()) {
            Some(line) => *seen.entry(*line).or_default() += 1,
            None => problems.push(format!(
                "partition {} offset {} holds {:?}, which was never sent",
                record.partition,
                record.offset,
                record.line()
            )),
        }
    }
    for (line, times) in &seen {
        if *times > 1 {
            problems.push(format!("{:?} was read {times} times", lines[*line]));
        }
    }
    for ack in acked {
        match at.get(&(ack.partition, ack.offset)) {
            None => problems.push(format!(
                "{:?}, acknowledged at partition {} offset {}, is missing",
                lines[ack.line], ack.partition, ack.offset
            )),
            Some(record) if record.line() != lines[ack.line] => problems.push(format!(
                "partition {} offset {} holds {:?}, but {:?} was acknowledged there",
                ack.partition,
                ack.offset,
                record.line(),
                lines[ack.line]
            )),
            Some(_) => {}
        }
    }
    let mut last: HashMap<i32, (i64, usize)> = HashMap::new();
    for ((partition, offset), record) in &at {
        let Some(line) = index.get(record.line().as_str()) else {
            continue;
        };
        if let Some((before, earlier)) = last.get(partition)
            && earlier > line
        {
            problems.push(format!(
                "partition {partition}: {:?} at offset {offset} comes after {:?} at offset {before}, which was sent later",
                lines[*line], lines[*earlier]
            ));
        }
        last.insert(*partition, (*offset, *line));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let count = problems.len();
    problems.truncate(20);
    Err(format!(
        "{count} problem(s) reading back {} acknowledged of {} sent records ({} read): {}",
        acked.len(),
        lines.len(),
        consumed.len(),
        problems.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: &str, partition: i32, offset: i64) -> Consumed {
        let (key, value) = line.split_once(':').unwrap();
        Consumed {
            partition,
            offset,
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    #[test]
    fn acknowledgements_are_matched_to_lines_skipping_those_not_written() {
        let stderr = "error: the record from line 2 was not written: request timed out\n";
        let acked = acknowledged("0 0\n1 0\n", stderr, 3).unwrap();
        assert_eq!(
            acked,
            vec![
                Acked {
                    line: 0,
                    partition: 0,
                    offset: 0
                },
                Acked {
                    line: 2,
                    partition: 1,
                    offset: 0
                },
            ]
        );
        let stopped =
            "error: line 3 could not be sent: buffer full (2 earlier line(s) were sent)\n";
        assert_eq!(acknowledged("0 0\n0 1\n", stopped, 5).unwrap().len(), 2);
        assert!(acknowledged("0 0\n", "", 3).is_err(), "offsets missing");
    }

    #[test]
    fn the_keys_reach_every_partition_of_a_small_topic() {
        let lines = keyed_lines("r", KEYS);
        for partitions in 1..=6 {
            let reached: std::collections::BTreeSet<i32> =
                lines.iter().map(|l| partition_of(l, partitions)).collect();
            assert_eq!(
                reached.len(),
                partitions as usize,
                "{partitions} partitions"
            );
        }
    }

    #[test]
    fn consumed_json_lines_parse() {
        let out = r#"{"topic":"orders","partition":2,"offset":7,"timestamp":1,"key":"key-1","value":"r-000001"}"#;
        assert_eq!(consumed(out).unwrap(), vec![record("key-1:r-000001", 2, 7)]);
    }

    #[test]
    fn a_complete_read_back_passes_and_unacknowledged_records_may_be_there() {
        let lines = keyed_lines("r", 3);
        let acked = vec![
            Acked {
                line: 0,
                partition: 0,
                offset: 0,
            },
            Acked {
                line: 1,
                partition: 1,
                offset: 0,
            },
        ];
        let read = vec![
            record(&lines[0], 0, 0),
            record(&lines[1], 1, 0),
            record(&lines[2], 0, 1),
        ];
        assert_eq!(check_read_back(&lines, &acked, &read), Ok(()));
        assert_eq!(check_read_back(&lines, &acked, &read[..2]), Ok(()));
    }

    #[test]
    fn lost_duplicated_reordered_and_foreign_records_are_each_named() {
        let lines = keyed_lines("r", 3);
        let acked: Vec<Acked> = (0..3)
            .map(|i| Acked {
                line: i,
                partition: 0,
                offset: i as i64,
            })
            .collect();
        let lost = check_read_back(&lines, &acked, &[record(&lines[0], 0, 0)]).unwrap_err();
        assert!(lost.contains("is missing"), "{lost}");
        let twice = vec![
            record(&lines[0], 0, 0),
            record(&lines[1], 0, 1),
            record(&lines[2], 0, 2),
            record(&lines[2], 0, 3),
        ];
        let error = check_read_back(&lines, &acked, &twice).unwrap_err();
        assert!(error.contains("was read 2 times"), "{error}");
        let swapped = vec![
            record(&lines[0], 0, 0),
            record(&lines[2], 0, 1),
            record(&lines[1], 0, 2),
        ];
        let error = check_read_back(&lines, &acked, &swapped).unwrap_err();
        assert!(
            error.contains("but") && error.contains("sent later"),
            "{error}"
        );
        let foreign = vec![record("key-9:other", 0, 5)];
        let error = check_read_back(&lines, &[], &foreign).unwrap_err();
        assert!(error.contains("never sent"), "{error}");
    }
}
