use bytes::Bytes;

use super::*;

/// Batches written by another Kafka client implementation (kafka-python's
/// DefaultRecordBatchBuilder), so our reading of the format is checked against someone
/// else's writing of it, not only against our own builder.
const FOREIGN_PLAIN: &str = "000000000000000000000058000000000273414bd30000000000020000018bcfe568000000018bcfe56805ffffffffffffffffffffffffffff0000000322000000046b310a68656c6c6f020268027616000a02010a776f726c640010000104046b330100";
const FOREIGN_COMPRESSED: [(Compression, &str); 4] = [
    (
        Compression::Gzip,
        "0000000000000000000000670000000002842b82e40001000000020000018bcfe568000000018bcfe56802ffffffffffffffffffffffffffff000000031f8b08009b07016b02ff5bc7c8c0c0c0b880b1a42833a9b424b1a852813a2c86758c0c4c4c343298858516060300ca4464e70b010000",
    ),
    (
        Compression::Snappy,
        "00000000000000000000007500000000024bf54d9b0002000000020000018bcfe568000000018bcfe56802ffffffffffffffffffffffffffff0000000382534e41505059000000000100000001000000308b0244ae0100000001a00174726962757461727920fe0a00090a1400ae01000202fe59005a5900040404fe59004e5900",
    ),
    (
        Compression::Lz4,
        "00000000000000000000007500000000026bc72f960003000000020000018bcfe568000000018bcfe56802ffffffffffffffffffffffffffff0000000304224d1868400b010000000000004f2d000000ff03ae0100000001a001747269627574617279200a00336f00ae010002025900442f040459003c50617279200000000000",
    ),
    (
        Compression::Zstd,
        "000000000000000000000061000000000240e3db3d0004000000020000018bcfe568000000018bcfe56802ffffffffffffffffffffffffffff0000000328b52ffd600b00350100d0ae0100000001a0017472696275746172792000ae01000202040403000113262e4cc5142d61",
    ),
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn build(compression: Compression, n: usize) -> Bytes {
    let mut builder = BatchBuilder::new(compression, 1024);
    for i in 0..n {
        let key = format!("key-{i}");
        let value = format!("value-{i}").repeat(4);
        builder.append(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[("trace", Some(b"abc"))],
        );
    }
    builder.build().expect("build")
}

fn decode(batch: &Bytes) -> Vec<Record> {
    let mut out = Vec::new();
    decode_batch(batch, 0, &mut out).expect("decode");
    out
}

#[test]
fn a_foreign_uncompressed_batch_validates_and_decodes() {
    let batch = Bytes::from(hex(FOREIGN_PLAIN));
    let info = validate_produced(&batch, 1 << 20).expect("valid");
    assert_eq!(info.records_count, 3);
    assert_eq!(info.max_timestamp, 1_700_000_000_005);
    let records = decode(&batch);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        records[0].headers,
        vec![Header {
            key: "h".into(),
            value: Some(Bytes::from_static(b"v"))
        }]
    );
    assert_eq!(records[1].key, None);
    assert_eq!(records[1].timestamp, 1_700_000_000_005);
    assert_eq!(records[2].value, None);
    assert_eq!(records[2].timestamp, 1_699_999_999_999);
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn foreign_compressed_batches_validate_and_decode_with_every_codec() {
    for (codec, fixture) in FOREIGN_COMPRESSED {
        let batch = Bytes::from(hex(fixture));
        assert_eq!(
            BatchHeader::parse(&batch).expect("header").compression(),
            Some(codec)
        );
        validate_produced(&batch, 1 << 20).unwrap_or_else(|e| panic!("{codec}: {e}"));
        let records = decode(&batch);
        assert_eq!(records.len(), 3, "{codec}");
        for record in &records {
            assert_eq!(
                record.value.as_deref(),
                Some("tributary ".repeat(8).as_bytes()),
                "{codec}"
            );
        }
    }
}

#[test]
fn our_batches_have_the_same_layout_as_the_foreign_one() {
    let mut builder = BatchBuilder::new(Compression::None, 128);
    builder.append(
        1_700_000_000_000,
        Some(b"k1"),
        Some(b"hello"),
        &[("h", Some(b"v"))],
    );
    builder.append(1_700_000_000_005, None, Some(b"world"), &[]);
    builder.append(1_699_999_999_999, Some(b"k3"), None, &[]);
    let ours = builder.build().expect("build");
    let mut foreign = hex(FOREIGN_PLAIN);
    // kafka-python writes partition leader epoch 0 where we write -1 (no epoch yet); the
    // CRC does not cover that field.
    foreign[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(&ours[..], &foreign[..]);
}

#[test]
fn built_batches_round_trip_with_every_codec() {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let batch = build(codec, 50);
        let info = validate_produced(&batch, 1 << 20).expect("valid");
        assert_eq!(
            (info.records_count, info.last_offset_delta, info.len),
            (50, 49, batch.len())
        );
        let records = decode(&batch);
        assert_eq!(records.len(), 50);
        assert_eq!(records[49].key.as_deref(), Some(&b"key-49"[..]));
        assert_eq!(
            records[49].value.as_deref(),
            Some("value-49".repeat(4).as_bytes())
        );
        assert_eq!(records[49].timestamp, 1_700_000_000_049);
    }
}

#[test]
fn decoding_skips_records_before_the_requested_offset() {
    let batch = build(Compression::Lz4, 10);
    let mut bytes = batch.to_vec();
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&bytes[..HEADER_LEN]);
    assign_offset(&mut header, 100, 3);
    bytes[..HEADER_LEN].copy_from_slice(&header);
    let batch = Bytes::from(bytes);
    let mut out = Vec::new();
    decode_batch(&batch, 105, &mut out).expect("decode");
    assert_eq!(
        out.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [105, 106, 107, 108, 109]
    );
    assert_eq!(
        BatchHeader::parse(&batch)
            .expect("header")
            .partition_leader_epoch(),
        3
    );
}

#[test]
fn every_flipped_bit_is_caught() {
    let batch = build(Compression::None, 3);
    // The base offset (0..8) and leader epoch (12..16) are the broker's to set, and the CRC
    // does not cover them; every other bit is checked by length, magic or CRC.
    for byte in (8..12).chain(16..batch.len()) {
        for bit in 0..8 {
            let mut damaged = batch.to_vec();
            damaged[byte] ^= 1 << bit;
            assert!(
                validate_produced(&damaged, 1 << 20).is_err(),
                "flip of bit {bit} in byte {byte} passed"
            );
        }
    }
}

#[test]
fn a_damaged_payload_reports_a_crc_mismatch() {
    let mut batch = build(Compression::None, 3).to_vec();
    let last = batch.len() - 1;
    batch[last] ^= 0x40;
    let err = validate_produced(&batch, 1 << 20).unwrap_err();
    assert!(matches!(err, BatchError::CrcMismatch { .. }), "{err}");
    assert!(err.is_corruption());
    assert!(err.to_string().contains("CRC mismatch"), "{err}");
}

#[test]
fn truncated_batches_say_how_much_is_missing() {
    let batch = build(Compression::None, 3);
    for cut in [0, 5, 11, 40, HEADER_LEN, batch.len() - 1] {
        let err = validate_produced(&batch[..cut], 1 << 20).unwrap_err();
        assert!(
            matches!(err, BatchError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn wrong_magic_is_refused_by_name() {
    let mut batch = build(Compression::None, 1).to_vec();
    batch[16] = 1;
    let err = validate_produced(&batch, 1 << 20).unwrap_err();
    assert_eq!(err, BatchError::BadMagic { found: 1 });
    assert!(err.to_string().contains("magic 2"), "{err}");
}

/// Rewrites a header field and fixes the CRC so that only the field itself is wrong.
fn with_field(batch: &Bytes, at: usize, value: &[u8]) -> Vec<u8> {
    let mut damaged = batch.to_vec();
    damaged[at..at + value.len()].copy_from_slice(value);
    let crc = crc32c::crc32c(&damaged[batch::ATTRIBUTES..]);
    damaged[17..21].copy_from_slice(&crc.to_be_bytes());
    damaged
}

#[test]
fn record_count_and_offset_deltas_must_agree_with_the_records() {
    let batch = build(Compression::None, 3);
    let err = validate_produced(&with_field(&batch, 57, &4i32.to_be_bytes()), 1 << 20).unwrap_err();
    assert!(matches!(err, BatchError::CountMismatch { .. }), "{err}");
    let err = validate_produced(&with_field(&batch, 23, &3i32.to_be_bytes()), 1 << 20).unwrap_err();
    assert!(matches!(err, BatchError::CountMismatch { .. }), "{err}");
    let mut both = with_field(&batch, 57, &2i32.to_be_bytes());
    both = with_field(&Bytes::from(both), 23, &1i32.to_be_bytes());
    let err = validate_produced(&both, 1 << 20).unwrap_err();
    assert_eq!(
        err,
        BatchError::RecordCount {
            declared: 2,
            found: 3
        }
    );
    let err = validate_produced(&with_field(&batch, 57, &0i32.to_be_bytes()), 1 << 20).unwrap_err();
    assert_eq!(err, BatchError::Empty);
}

#[test]
fn offset_deltas_out_of_order_are_refused() {
    let mut builder = BatchBuilder::new(Compression::None, 64);
    builder.append(1, None, Some(b"a"), &[]);
    builder.append(1, None, Some(b"b"), &[]);
    let batch = builder.build().expect("build");
    // Record 0 is its one-byte zig-zag length prefix plus that many bytes; record 1's offset
    // delta follows its own length prefix, attributes and timestamp delta.
    let second = HEADER_LEN + 1 + usize::from(batch[HEADER_LEN]) / 2;
    let damaged = with_field(&batch, second + 3, &[0]);
    let err = validate_produced(&damaged, 1 << 20).unwrap_err();
    assert_eq!(err, BatchError::OffsetDelta { index: 1, found: 0 });
}

#[test]
fn a_wrong_max_timestamp_is_refused() {
    let batch = build(Compression::None, 3);
    let err = validate_produced(&with_field(&batch, 35, &7i64.to_be_bytes()), 1 << 20).unwrap_err();
    assert!(
        matches!(err, BatchError::MaxTimestamp { stored: 7, .. }),
        "{err}"
    );
}

#[test]
fn oversized_batches_are_refused_with_both_sizes() {
    let batch = build(Compression::None, 20);
    let err = validate_produced(&batch, 100).unwrap_err();
    assert_eq!(
        err,
        BatchError::TooLarge {
            size: batch.len(),
            max: 100
        }
    );
    assert!(err.to_string().contains("max.message.bytes"), "{err}");
}

#[test]
fn transactional_batches_are_refused() {
    let batch = build(Compression::None, 1);
    let err =
        validate_produced(&with_field(&batch, 21, &0x10i16.to_be_bytes()), 1 << 20).unwrap_err();
    assert_eq!(err, BatchError::Transactional);
}

#[test]
fn an_unknown_codec_is_refused() {
    let batch = build(Compression::None, 1);
    let err = validate_produced(&with_field(&batch, 21, &7i16.to_be_bytes()), 1 << 20).unwrap_err();
    assert_eq!(err, BatchError::UnknownCompression { bits: 7 });
}

#[test]
fn log_append_time_rewrites_the_timestamp_and_keeps_the_batch_valid() {
    let mut batch = build(Compression::Zstd, 3).to_vec();
    set_log_append_time(&mut batch, 42);
    let header = BatchHeader::parse(&batch).expect("header");
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp(), 42);
    header.verify_checksum().expect("crc");
    assert!(
        decode(&Bytes::from(batch))
            .iter()
            .all(|r| r.timestamp == 42)
    );
}

#[test]
fn batches_iterates_whole_batches_and_stops_at_a_partial_one() {
    let a = build(Compression::None, 2);
    let b = build(Compression::Gzip, 2);
    let mut joined = [&a[..], &b[..]].concat();
    assert_eq!(
        batches(&joined).map(|(at, _)| at).collect::<Vec<_>>(),
        [0, a.len()]
    );
    joined.truncate(joined.len() - 1);
    assert_eq!(batches(&joined).count(), 1);
}
