use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::record::{BatchBuilder, Compression, Record, TimestampType};

const T0: i64 = 1_700_000_000_000;

fn tp() -> TopicPartition {
    TopicPartition::new("orders", 0)
}

/// Small segments and dense indexes so a few records exercise rolls and lookups.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_index_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// A batch of `n` records with timestamps `ts, ts+1, ...`, each value tagged with `tag`.
fn batch(n: usize, ts: i64, tag: &str) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None, 256);
    for i in 0..n {
        let value = format!("{tag}-{i}-{}", "x".repeat(40));
        builder.append(ts + i as i64, None, Some(value.as_bytes()), &[]);
    }
    builder.build().expect("build")
}

fn open(dir: &Path, config: LogConfig, clean: bool) -> (Log, OpenReport) {
    Log::open(dir, tp(), config, clean, (None, None)).expect("open")
}

fn read_all(log: &Log) -> Vec<Record> {
    let mut records = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let result = log.read(offset, 1000, i64::MAX).expect("read");
        if result.records.is_empty() {
            return records;
        }
        for (at, header) in record::batches(&result.records) {
            let batch = result.records.slice(at..at + header.total_len());
            crate::record::decode_batch(&batch, offset, &mut records).expect("decode");
        }
        offset = records.last().map_or(offset, |r| r.offset + 1);
    }
}

fn offsets(records: &[Record]) -> Vec<i64> {
    records.iter().map(|r| r.offset).collect()
}

/// Appends `batches` batches of 3 records; returns the file size of the active segment
/// before the last batch and the base offset of the last batch.
fn fill(log: &Log, batches: usize) -> (u64, i64) {
    let mut before_last = (0, 0);
    for i in 0..batches {
        let active_size = log.state.read().active().size();
        before_last = (active_size, log.log_end_offset());
        log.append_as_leader(&batch(3, T0 + i as i64 * 10, &format!("b{i}")), 0, T0)
            .expect("append");
    }
    before_last
}

#[test]
fn appends_get_consecutive_offsets_and_read_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    let first = batch(3, T0, "a");
    let info = log.append_as_leader(&first, 7, T0).unwrap();
    assert_eq!(
        (info.first_offset, info.last_offset, info.records),
        (0, 2, 3)
    );
    let two = [batch(2, T0, "b"), batch(4, T0, "c")].concat();
    let info = log.append_as_leader(&Bytes::from(two), 7, T0).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (3, 8));
    assert_eq!(log.log_end_offset(), 9);

    let read = log.read(0, 1 << 20, i64::MAX).unwrap();
    let headers: Vec<_> = record::batches(&read.records)
        .map(|(_, h)| (h.base_offset(), h.partition_leader_epoch()))
        .collect();
    assert_eq!(headers, [(0, 7), (3, 7), (5, 7)]);
    // Apart from the base offset and leader epoch, the stored bytes are the producer's.
    assert_eq!(&read.records[16..first.len()], &first[16..]);
    assert_eq!(offsets(&read_all(&log)), (0..9).collect::<Vec<_>>());
}

#[test]
fn an_invalid_batch_anywhere_in_a_request_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    let mut damaged = batch(2, T0, "bad").to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let request = Bytes::from([batch(2, T0, "good").to_vec(), damaged].concat());
    let err = log.append_as_leader(&request, 0, T0).unwrap_err();
    assert!(
        matches!(err, LogError::InvalidBatch(BatchError::CrcMismatch { .. })),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size(), 0);
    let err = log.append_as_leader(&Bytes::new(), 0, T0).unwrap_err();
    assert!(
        matches!(err, LogError::InvalidBatch(BatchError::Empty)),
        "{err}"
    );
}

#[test]
fn batches_over_max_message_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 200,
            ..LogConfig::default()
        },
        true,
    );
    let err = log
        .append_as_leader(&batch(5, T0, "big"), 0, T0)
        .unwrap_err();
    assert!(err.to_string().contains("max.message.bytes (200)"), "{err}");
}

#[test]
fn the_log_rolls_when_a_segment_is_full_and_names_segments_by_base_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 60);
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    let mut logs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    assert_eq!(logs[0], "00000000000000000000.log");
    let state = log.state.read();
    for (name, (base, segment)) in logs.iter().zip(state.segments.iter()) {
        assert_eq!(name, &format!("{base:020}.log"));
        assert!(segment.size() <= 4096);
    }
    drop(state);
    assert_eq!(offsets(&read_all(&log)), (0..180).collect::<Vec<_>>());
}

#[test]
fn a_read_at_any_offset_starts_with_the_batch_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 60);
    for offset in 0..180 {
        let read = log.read(offset, 1, i64::MAX).unwrap();
        let (_, first) = record::batches(&read.records).next().expect("a batch");
        assert!(
            first.base_offset() <= offset && offset <= first.last_offset(),
            "offset {offset}"
        );
        assert_eq!(
            record::batches(&read.records).count(),
            1,
            "at least one, and only whole, batches"
        );
    }
}

#[test]
fn reads_return_whole_batches_up_to_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    fill(&log, 10);
    let one = log.read(0, 1, i64::MAX).unwrap().records.len();
    let read = log.read(0, one * 3 + one / 2, i64::MAX).unwrap();
    assert_eq!(read.records.len(), one * 3);
    assert_eq!(record::batches(&read.records).count(), 3);
}

#[test]
fn reads_never_return_batches_at_or_above_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    fill(&log, 4);
    let read = log.read(0, 1 << 20, 6).unwrap();
    let last = record::batches(&read.records)
        .last()
        .unwrap()
        .1
        .last_offset();
    assert_eq!(last, 5);
    assert!(log.read(6, 1 << 20, 6).unwrap().records.is_empty());
    assert!(
        log.read(12, 1 << 20, i64::MAX).unwrap().records.is_empty(),
        "the log end is a valid, empty position"
    );
}

fn file_slice(read: ReadResult<Records>) -> FileSlice {
    match read.records {
        Records::File(slice) => slice,
        Records::Memory(bytes) => panic!("expected a file slice, got {} bytes", bytes.len()),
    }
}

#[test]
fn file_reads_hold_the_same_batches_as_reads_and_stop_below_max_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 80);
    assert!(log.segment_count() > 2, "the reads cross segments");
    for (offset, max_offset) in [
        (0, i64::MAX),
        (4, 40),
        (31, 62),
        (88, i64::MAX),
        (200, 230),
        (238, i64::MAX),
    ] {
        let read = log.read(offset, 1 << 20, max_offset).unwrap();
        let slice = file_slice(log.read_file(offset, 1 << 20, max_offset).unwrap());
        assert_eq!(
            slice.read().unwrap(),
            read.records,
            "offset {offset} below {max_offset}"
        );
    }
    // Nothing below max_offset, and the log end: empty.
    assert!(log.read_file(6, 1 << 20, 6).unwrap().records.is_empty());
    assert!(log.read_file(60, 1 << 20, 61).unwrap().records.is_empty());
    assert!(
        log.read_file(240, 1 << 20, i64::MAX)
            .unwrap()
            .records
            .is_empty()
    );
    assert!(matches!(
        log.read_file(241, 1 << 20, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn file_reads_hold_at_least_the_first_batch_and_may_cut_the_last_at_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    fill(&log, 10);
    let one = log.read(0, 1, i64::MAX).unwrap().records.len();
    assert_eq!(
        file_slice(log.read_file(3, 1, i64::MAX).unwrap()).len(),
        one
    );
    let slice = file_slice(log.read_file(0, one * 3 + one / 2, i64::MAX).unwrap());
    assert_eq!(
        slice.len(),
        one * 3 + one / 2,
        "Kafka's answers may end in part of a batch"
    );
    let whole = log.read(0, one * 3, i64::MAX).unwrap().records;
    assert_eq!(slice.read().unwrap().slice(..one * 3), whole);
}

#[test]
fn a_file_slice_outlives_its_deleted_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 30);
    let before = log.read(0, 1 << 20, i64::MAX).unwrap().records;
    let slice = file_slice(log.read_file(0, 1 << 20, i64::MAX).unwrap());
    log.advance_log_start(60).unwrap();
    log.apply_retention(T0, i64::MAX).unwrap();
    assert!(log.log_start_offset() > 0);
    assert_eq!(slice.read().unwrap(), before);
}

#[test]
fn out_of_range_offsets_are_errors_that_name_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    fill(&log, 2);
    for bad in [-1, 7, 1000] {
        let err = log.read(bad, 100, i64::MAX).unwrap_err();
        assert!(
            matches!(err, LogError::OffsetOutOfRange { requested, log_start: 0, log_end: 6, .. } if requested == bad),
            "{err}"
        );
    }
    assert_eq!(log.read(0, 100, i64::MAX).unwrap_err_or_ok(), "ok");
}

trait ErrOrOk {
    fn unwrap_err_or_ok(self) -> &'static str;
}

impl<T, E> ErrOrOk for Result<T, E> {
    fn unwrap_err_or_ok(self) -> &'static str {
        if self.is_ok() { "ok" } else { "err" }
    }
}

#[test]
fn timestamp_lookups_find_the_first_record_at_or_after_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    // Batch i holds timestamps T0+10i .. T0+10i+2; batch 20 goes back in time.
    fill(&log, 20);
    log.append_as_leader(&batch(3, T0 + 5, "late"), 0, T0)
        .unwrap();
    fill(&log, 5);
    assert_eq!(
        log.offset_for_timestamp(T0, i64::MAX).unwrap(),
        Some((0, T0))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 3, i64::MAX).unwrap(),
        Some((3, T0 + 10))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 101, i64::MAX).unwrap(),
        Some((31, T0 + 101))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 10_000, i64::MAX).unwrap(),
        None
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 101, 31).unwrap(),
        None,
        "bounded by max_offset"
    );
    // The same answers from sealed segments reopened from disk.
    log.close().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    assert_eq!(
        log.offset_for_timestamp(T0 + 101, i64::MAX).unwrap(),
        Some((31, T0 + 101))
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 191, i64::MAX).unwrap(),
        Some((58, T0 + 191))
    );
}

#[test]
fn log_append_time_stamps_batches_with_the_broker_clock() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let (log, _) = open(dir.path(), config, true);
    let info = log.append_as_leader(&batch(3, 5, "a"), 0, T0).unwrap();
    assert_eq!(info.log_append_time, Some(T0));
    assert!(read_all(&log).iter().all(|r| r.timestamp == T0));
    assert_eq!(
        log.offset_for_timestamp(T0, i64::MAX).unwrap(),
        Some((0, T0))
    );
}

#[test]
fn retention_by_size_deletes_the_oldest_sealed_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 10_000,
        retention_ms: -1,
        ..small_config()
    };
    let (log, _) = open(dir.path(), config, true);
    fill(&log, 100);
    let before = log.segment_count();
    let outcome = log.apply_retention(T0, i64::MAX).unwrap();
    assert!(
        outcome.segments_deleted > 0 && log.segment_count() == before - outcome.segments_deleted
    );
    assert!(log.size() <= 10_000 + 4096, "{}", log.size());
    assert_eq!(
        log.log_start_offset(),
        *log.state.read().segments.keys().next().unwrap()
    );
    assert_eq!(outcome.log_start_offset, log.log_start_offset());
    let err = log.read(0, 100, i64::MAX).unwrap_err();
    assert!(matches!(err, LogError::OffsetOutOfRange { .. }), "{err}");
    let left = offsets(&read_all(&log));
    assert_eq!(left, (log.log_start_offset()..300).collect::<Vec<_>>());
}

#[test]
fn retention_by_time_deletes_expired_segments_but_nothing_above_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1000,
        ..small_config()
    };
    let (log, _) = open(dir.path(), config, true);
    fill(&log, 50); // timestamps T0 .. T0+492
    // Nothing is older than a second yet.
    assert_eq!(
        log.apply_retention(T0 + 1000, i64::MAX)
            .unwrap()
            .segments_deleted,
        0
    );
    // Everything is old, but the bound keeps what is at or above offset 60.
    let outcome = log.apply_retention(T0 + 10_000, 60).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.log_start_offset() <= 60);
    // With no bound, the whole log goes, the active segment included (it is rolled first).
    log.apply_retention(T0 + 10_000, i64::MAX).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset(), log.size()),
        (150, 150, 0)
    );
    let info = log
        .append_as_leader(&batch(1, T0 + 20_000, "new"), 0, T0)
        .unwrap();
    assert_eq!(info.first_offset, 150);
}

#[test]
fn segment_ms_rolls_by_record_time() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(
        dir.path(),
        LogConfig {
            segment_ms: 1000,
            ..LogConfig::default()
        },
        true,
    );
    log.append_as_leader(&batch(1, T0, "a"), 0, T0).unwrap();
    log.append_as_leader(&batch(1, T0 + 1000, "b"), 0, T0)
        .unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_as_leader(&batch(1, T0 + 1001, "c"), 0, T0)
        .unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn a_clean_reopen_trusts_the_log_and_everything_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 60);
    log.close().unwrap();
    drop(log);
    // Sealed index files are trimmed to their entries.
    let index_len = fs::metadata(dir.path().join("00000000000000000000.index"))
        .unwrap()
        .len();
    assert!(
        index_len > 0 && index_len < 4096 && index_len.is_multiple_of(8),
        "{index_len}"
    );
    let (log, report) = open(dir.path(), small_config(), true);
    assert_eq!((report.log_end_offset, report.truncated_bytes), (180, 0));
    assert_eq!(offsets(&read_all(&log)), (0..180).collect::<Vec<_>>());
    assert_eq!(
        log.append_as_leader(&batch(1, T0, "z"), 0, T0)
            .unwrap()
            .first_offset,
        180
    );
}

#[test]
fn a_crash_leaves_preallocated_indexes_that_reopen_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 40);
    drop(log); // no close: as kill -9 leaves it
    let (log, report) = open(dir.path(), small_config(), false);
    assert_eq!((report.log_end_offset, report.truncated_bytes), (120, 0));
    assert_eq!(offsets(&read_all(&log)), (0..120).collect::<Vec<_>>());
    for offset in (0..120).step_by(7) {
        let read = log.read(offset, 1, i64::MAX).unwrap();
        let (_, first) = record::batches(&read.records).next().unwrap();
        assert!(first.base_offset() <= offset && offset <= first.last_offset());
    }
}

/// Builds a log of `batches` batches in a fresh directory and leaves it as a crash would.
fn crashed_log(batches: usize) -> (tempfile::TempDir, u64, i64, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_index_bytes: 1024,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let (log, _) = open(dir.path(), config, true);
    let (before_last, last_base) = fill(&log, batches);
    drop(log);
    let file = dir.path().join("00000000000000000000.log");
    (dir, before_last, last_base, file)
}

#[test]
fn a_torn_write_at_every_byte_of_the_last_batch_is_cut_back_to_the_batch_before() {
    let (_keep, before_last, _, file) = crashed_log(6);
    let full = fs::metadata(&file).unwrap().len();
    for cut in before_last..full {
        let (dir, _, last_base, file) = crashed_log(6);
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let config = LogConfig {
            segment_index_bytes: 1024,
            index_interval_bytes: 100,
            ..LogConfig::default()
        };
        let (log, report) = open(dir.path(), config, false);
        assert_eq!(report.log_end_offset, last_base, "cut at byte {cut}");
        assert_eq!(
            report.truncated_bytes,
            cut - before_last,
            "cut at byte {cut}"
        );
        assert_eq!(fs::metadata(&file).unwrap().len(), before_last);
        assert_eq!(offsets(&read_all(&log)), (0..last_base).collect::<Vec<_>>());
        let info = log.append_as_leader(&batch(1, T0, "after"), 0, T0).unwrap();
        assert_eq!(
            info.first_offset, last_base,
            "cut at byte {cut}: appends continue where the valid log ends"
        );
    }
}

#[test]
fn a_flipped_bit_in_the_last_batch_is_caught_and_the_batch_dropped() {
    let (_keep, before_last, _, file) = crashed_log(6);
    let full = fs::metadata(&file).unwrap().len();
    // Every byte the CRC covers, the CRC itself, the length and the base offset; the partition
    // leader epoch (bytes 12..16) is the broker's own field and is not checked.
    let positions = (0..12).chain(16..(full - before_last));
    for at in positions {
        let (dir, before_last, last_base, file) = crashed_log(6);
        let mut bytes = fs::read(&file).unwrap();
        bytes[(before_last + at) as usize] ^= 0x10;
        fs::write(&file, &bytes).unwrap();
        let config = LogConfig {
            segment_index_bytes: 1024,
            index_interval_bytes: 100,
            ..LogConfig::default()
        };
        let (log, report) = open(dir.path(), config, false);
        assert_eq!(
            report.log_end_offset, last_base,
            "flip in byte {at} of the last batch"
        );
        assert_eq!(offsets(&read_all(&log)), (0..last_base).collect::<Vec<_>>());
    }
}

#[test]
fn truncation_removes_later_records_and_appends_continue_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 60);
    let segments = log.segment_count();
    log.truncate_to(100).unwrap();
    // Batches hold offsets 3k..3k+2, so cutting at 100 drops the batch 99..101.
    assert_eq!(log.log_end_offset(), 99);
    assert!(log.segment_count() < segments);
    assert_eq!(offsets(&read_all(&log)), (0..99).collect::<Vec<_>>());
    assert_eq!(
        log.append_as_leader(&batch(2, T0, "x"), 0, T0)
            .unwrap()
            .first_offset,
        99
    );
    log.truncate_to(0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (0, 0, 1)
    );
    drop(log);
    let (log, report) = open(dir.path(), small_config(), false);
    assert_eq!(report.log_end_offset, 0);
    assert!(read_all(&log).is_empty());
}

#[test]
fn flush_messages_moves_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(
        dir.path(),
        LogConfig {
            flush_messages: 5,
            ..LogConfig::default()
        },
        true,
    );
    log.append_as_leader(&batch(3, T0, "a"), 0, T0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    log.append_as_leader(&batch(3, T0, "b"), 0, T0).unwrap();
    assert_eq!(log.recovery_point(), 6);
}

#[test]
fn flush_ms_and_rolled_segments_are_flushed_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(
        dir.path(),
        LogConfig {
            flush_ms: 1000,
            ..small_config()
        },
        true,
    );
    fill(&log, 30);
    assert_eq!(log.recovery_point(), 0);
    log.flush_if_due(T0 + 10).unwrap();
    let active_base = log.state.read().active().base_offset();
    assert_eq!(log.recovery_point(), active_base, "rolled segments flushed");
    log.flush_if_due(T0 + 1000).unwrap();
    assert_eq!(log.recovery_point(), 90);
}

#[test]
fn a_missing_or_damaged_sealed_index_is_rebuilt_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 60);
    log.close().unwrap();
    drop(log);
    fs::remove_file(dir.path().join("00000000000000000000.index")).unwrap();
    let second = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .min()
        .unwrap();
    fs::write(&second, [0xff; 16]).unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    assert_eq!(offsets(&read_all(&log)), (0..180).collect::<Vec<_>>());
    assert!(
        fs::metadata(dir.path().join("00000000000000000000.index"))
            .unwrap()
            .len()
            > 0
    );
}

#[test]
fn the_manager_refuses_a_second_broker_on_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = LogManager::open(dir.path(), |_| LogConfig::default()).unwrap();
    let err = LogManager::open(dir.path(), |_| LogConfig::default()).unwrap_err();
    assert!(
        err.to_string().contains("in use by another broker"),
        "{err}"
    );
    drop(first);
    LogManager::open(dir.path(), |_| LogConfig::default()).unwrap();
}

#[test]
fn the_manager_says_when_the_data_dir_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    fs::write(&file, "").unwrap();
    let err = LogManager::open(&file, |_| LogConfig::default()).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = LogManager::open(&file.join("below"), |_| LogConfig::default()).unwrap_err();
    assert!(err.to_string().contains("cannot create it"), "{err}");
}

#[test]
fn a_clean_shutdown_is_remembered_once_and_a_crash_is_recovered_from_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = |_: &TopicPartition| small_config();
    {
        let manager = LogManager::open(dir.path(), config).unwrap();
        assert!(!manager.load_report().clean_shutdown);
        let log = manager.get_or_create(&tp(), small_config()).unwrap();
        fill(&log, 30);
        manager.shutdown().unwrap();
    }
    {
        let manager = LogManager::open(dir.path(), config).unwrap();
        assert!(manager.load_report().clean_shutdown);
        assert_eq!(manager.get(&tp()).unwrap().log_end_offset(), 90);
        fill(&manager.get(&tp()).unwrap(), 3);
        manager.checkpoint().unwrap();
        // Dropped without shutdown: a crash.
    }
    let manager = LogManager::open(dir.path(), config).unwrap();
    let report = manager.load_report();
    assert!(!report.clean_shutdown);
    let log = manager.get(&tp()).unwrap();
    assert_eq!(log.log_end_offset(), 99);
    assert_eq!(
        log.recovery_point(),
        90,
        "the checkpointed recovery point, not the log end"
    );
}

#[test]
fn deleted_logs_disappear_and_their_name_can_be_reused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = LogManager::open(dir.path(), |_| LogConfig::default()).unwrap();
    let log = manager.get_or_create(&tp(), LogConfig::default()).unwrap();
    fill(&log, 3);
    manager.delete(&tp()).unwrap();
    assert!(manager.get(&tp()).is_none());
    assert!(!dir.path().join("orders-0").exists());
    let log = manager.get_or_create(&tp(), LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    // A deletion interrupted by a crash is finished at the next start.
    fs::create_dir(dir.path().join("orders-1.abc-delete")).unwrap();
    drop((log, manager));
    let manager = LogManager::open(dir.path(), |_| LogConfig::default()).unwrap();
    assert_eq!(manager.all().len(), 1);
    // Removed in the background: start-up does not wait for big deleted logs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while dir.path().join("orders-1.abc-delete").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the deleted log was never removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_deleted_log_refuses_changes_through_handles_that_outlive_it() {
    let dir = tempfile::tempdir().unwrap();
    let manager = LogManager::open(dir.path(), |_| LogConfig::default()).unwrap();
    let stale = manager.get_or_create(&tp(), LogConfig::default()).unwrap();
    fill(&stale, 3);
    manager.delete(&tp()).unwrap();
    // A log created again under the same name must not see writes meant for the old one.
    let fresh = manager.get_or_create(&tp(), LogConfig::default()).unwrap();
    let deleted = |result: Result<(), LogError>| {
        assert!(
            matches!(result, Err(LogError::Deleted { .. })),
            "{result:?}"
        )
    };
    deleted(stale.append_as_leader(&batch(2, 0, "late"), 0, 0).map(drop));
    deleted(stale.truncate_to(0));
    deleted(stale.reset_to(100));
    deleted(stale.begin_leader_epoch(7));
    stale.write_producer_snapshot();
    assert_eq!(fresh.log_end_offset(), 0);
    assert!(!fresh.dir().join("producer-state").exists());
    assert_eq!(fresh.latest_epoch(), None);
}

#[test]
fn a_roll_that_fails_midway_leaves_the_log_end_where_the_data_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2048,
        ..small_config()
    };
    let (log, _) = open(dir.path(), config.clone(), true);
    log.append_as_leader(&batch(10, T0, "a"), 0, T0).unwrap(); // offsets 0..9, ~600 bytes
    // The next request holds a batch that fits and one that needs a roll at offset 20,
    // where a directory now stands in the way of the new segment file.
    std::fs::create_dir(dir.path().join(format!("{:020}.log", 20))).unwrap();
    let request = Bytes::from([batch(10, T0, "b").to_vec(), batch(20, T0, "c").to_vec()].concat());
    let err = log.append_as_leader(&request, 0, T0).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Io {
                op: "create a segment",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        log.log_end_offset(),
        20,
        "the batch that was written counts"
    );
    std::fs::remove_dir(dir.path().join(format!("{:020}.log", 20))).unwrap();
    let info = log.append_as_leader(&batch(20, T0, "d"), 0, T0).unwrap();
    assert_eq!(info.first_offset, 20);
    let values: Vec<String> = read_all(&log)
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_ref().unwrap())[..3].to_string())
        .collect();
    assert_eq!(values.len(), 40);
    assert!(
        values[..10].iter().all(|v| v.starts_with("a-"))
            && values[10..20].iter().all(|v| v.starts_with("b-"))
    );
    assert!(values[20..].iter().all(|v| v.starts_with("d-")));
    drop(log);
    let (log, report) = open(dir.path(), config, false);
    assert_eq!((report.log_end_offset, report.truncated_bytes), (40, 0));
    assert_eq!(offsets(&read_all(&log)), (0..40).collect::<Vec<_>>());
}

#[test]
fn a_log_start_checkpoint_beyond_the_log_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 60);
    log.close().unwrap();
    drop(log);
    // As left by an earlier log of the same name that had reached offset 10,000.
    let (log, _) = Log::open(dir.path(), tp(), small_config(), true, (None, Some(10_000))).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(offsets(&read_all(&log)), (0..180).collect::<Vec<_>>());
}

#[test]
fn a_damaged_batch_inside_a_sealed_segment_is_an_error_not_a_silent_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    fill(&log, 60);
    log.close().unwrap();
    drop(log);
    // Overwrite the length of the fourth batch of the first segment.
    let path = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let (at, _) = record::batches(&bytes).nth(3).unwrap();
    bytes[at + 8..at + 12].copy_from_slice(&(-5i32).to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    let err = log.read(10, 1000, i64::MAX).unwrap_err();
    assert!(err.to_string().contains("damaged at byte"), "{err}");
    assert!(
        log.read(0, 100, i64::MAX).is_ok(),
        "what precedes the damage still reads"
    );
}

#[test]
fn a_sealed_segment_missing_its_last_time_entry_still_knows_its_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1000,
        ..small_config()
    };
    let (log, _) = open(dir.path(), config.clone(), true);
    fill(&log, 60); // batch i holds timestamps T0+10i .. T0+10i+2
    log.close().unwrap();
    drop(log);
    // Drop the final time index entry of the first segment, as a crash during a roll can.
    let timeindex = dir.path().join("00000000000000000000.timeindex");
    let len = std::fs::metadata(&timeindex).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&timeindex)
        .unwrap()
        .set_len(len - 12)
        .unwrap();
    let (log, _) = open(dir.path(), config, true);
    let first_end = *log.state.read().segments.keys().nth(1).unwrap();
    let newest = T0 + ((first_end - 1) / 3) * 10 + 2;
    // At exactly the retention limit of its newest record, the segment stays.
    let outcome = log.apply_retention(newest + 1000, i64::MAX).unwrap();
    assert_eq!(
        outcome.segments_deleted, 0,
        "the segment's newest record is {newest}"
    );
    assert_eq!(
        log.apply_retention(newest + 1001, i64::MAX)
            .unwrap()
            .segments_deleted,
        1
    );
}

/// A batch of `n` records from idempotent producer `pid` starting at sequence `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None, 256);
    for i in 0..n {
        builder.append(
            T0 + i as i64,
            None,
            Some(format!("p{pid}-s{}", seq + i as i32).as_bytes()),
            &[],
        );
    }
    builder.set_producer(pid, epoch, seq);
    builder.build().expect("build")
}

#[test]
fn a_follower_copies_the_leaders_batches_byte_for_byte_with_their_offsets_and_epochs() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (leader, _) = open(leader_dir.path(), small_config(), true);
    leader.append_as_leader(&batch(3, T0, "a"), 4, T0).unwrap();
    leader.append_as_leader(&batch(2, T0, "b"), 6, T0).unwrap();
    let (follower, _) = open(follower_dir.path(), small_config(), true);
    let copied = leader.read(0, 1 << 20, i64::MAX).unwrap().records;
    let info = follower.append_as_follower(&copied, T0).unwrap();
    assert_eq!(
        (
            info.first_offset,
            info.last_offset,
            follower.log_end_offset()
        ),
        (0, 4, 5)
    );
    assert_eq!(follower.read(0, 1 << 20, i64::MAX).unwrap().records, copied);
    assert_eq!(follower.epoch_end_offset(4), Some((4, 3)));
    assert_eq!(
        follower.latest_epoch(),
        Some(EpochEntry {
            epoch: 6,
            start_offset: 3
        })
    );

    // Batches must continue the log exactly, and pass their CRC.
    let err = follower.append_as_follower(&copied, T0).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::NotContiguous {
                expected: 5,
                found: 0,
                ..
            }
        ),
        "{err}"
    );
    leader.append_as_leader(&batch(1, T0, "c"), 6, T0).unwrap();
    let mut damaged = leader.read(5, 1 << 20, i64::MAX).unwrap().records.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let err = follower
        .append_as_follower(&Bytes::from(damaged), T0)
        .unwrap_err();
    assert!(
        matches!(err, LogError::InvalidBatch(BatchError::CrcMismatch { .. })),
        "{err}"
    );
    assert_eq!(follower.log_end_offset(), 5);
}

#[test]
fn a_retried_idempotent_batch_is_answered_with_its_offsets_and_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    let first = idempotent_batch(42, 0, 0, 3);
    assert_eq!(
        log.append_as_leader(&first, 0, T0).unwrap().batch_offsets,
        [(0, 2)]
    );
    let second = idempotent_batch(42, 0, 3, 2);
    log.append_as_leader(&second, 0, T0).unwrap();
    let size = log.size();
    let retry = log.append_as_leader(&second, 0, T0).unwrap();
    assert_eq!(
        (retry.batch_offsets.clone(), retry.records),
        (vec![(3, 4)], 0)
    );
    assert_eq!(log.size(), size, "nothing written");
    // A request mixing a retried batch and a new one: each gets its own offsets.
    let mixed = Bytes::from([second.to_vec(), idempotent_batch(42, 0, 5, 4).to_vec()].concat());
    assert_eq!(
        log.append_as_leader(&mixed, 0, T0).unwrap().batch_offsets,
        [(3, 4), (5, 8)]
    );
    assert_eq!(log.log_end_offset(), 9);
}

#[test]
fn sequence_gaps_and_old_producer_epochs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default(), true);
    log.append_as_leader(&idempotent_batch(7, 2, 0, 3), 0, T0)
        .unwrap();
    let err = log
        .append_as_leader(&idempotent_batch(7, 2, 5, 1), 0, T0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::OutOfOrderSequence {
                producer_id: 7,
                expected: 3,
                found: 5,
                ..
            }
        ),
        "{err}"
    );
    let err = log
        .append_as_leader(&idempotent_batch(7, 1, 3, 1), 0, T0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogError::ProducerFenced {
                current: 2,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("a newer producer with this id took over"),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn producer_state_survives_a_clean_restart_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    let mut seq = 0;
    for _ in 0..40 {
        log.append_as_leader(&idempotent_batch(9, 0, seq, 3), 0, T0)
            .unwrap();
        seq += 3;
    }
    let last = idempotent_batch(9, 0, seq - 3, 3);
    log.write_producer_snapshot();
    log.append_as_leader(&idempotent_batch(9, 0, seq, 3), 0, T0)
        .unwrap();
    drop(log); // a crash after the snapshot: the last batch is replayed from the log
    let (log, _) = open(dir.path(), small_config(), false);
    let retry = log
        .append_as_leader(&idempotent_batch(9, 0, seq, 3), 0, T0)
        .unwrap();
    assert_eq!(retry.records, 0, "recognised as a retry after the crash");
    assert_eq!(log.append_as_leader(&last, 0, T0).unwrap().records, 0);
    log.close().unwrap();
    log.write_producer_snapshot();
    drop(log);
    std::fs::remove_file(dir.path().join(PRODUCER_SNAPSHOT)).ok();
    // Without a snapshot the active segment is read, which holds the latest batches.
    let (log, _) = open(dir.path(), small_config(), true);
    assert_eq!(
        log.append_as_leader(&idempotent_batch(9, 0, seq, 3), 0, T0)
            .unwrap()
            .records,
        0
    );
}

#[test]
fn the_epoch_cache_follows_appends_truncation_and_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config(), true);
    log.append_as_leader(&batch(3, T0, "a"), 1, T0).unwrap();
    log.begin_leader_epoch(2).unwrap();
    log.append_as_leader(&batch(3, T0, "b"), 2, T0).unwrap();
    log.append_as_leader(&batch(3, T0, "c"), 2, T0).unwrap();
    assert_eq!(log.epoch_end_offset(1), Some((1, 3)));
    assert_eq!(log.epoch_end_offset(5), Some((2, 9)));
    log.truncate_to(3).unwrap();
    assert_eq!(
        log.latest_epoch(),
        Some(EpochEntry {
            epoch: 1,
            start_offset: 0
        })
    );
    drop(log);
    let (log, _) = open(dir.path(), small_config(), false);
    assert_eq!(
        log.latest_epoch(),
        Some(EpochEntry {
            epoch: 1,
            start_offset: 0
        })
    );
    log.truncate_to(0).unwrap();
    assert_eq!(log.latest_epoch(), None);
}
