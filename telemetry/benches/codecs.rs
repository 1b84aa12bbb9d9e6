//! Micro-benchmarks of the codecs on the hot paths: what the broker does to
//! every publish (well-formedness), what the collector does to every
//! payload (SenML decode), and what the uplink and the collector do to every
//! batch (`SyncBatch` encode and decode). `cargo bench -p telemetry`; a
//! regression shows as a change against criterion's saved baseline.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_bytes::ByteBuf;
use telemetry::senml::{decode_pack, encode_pack, RawRecord};
use telemetry::{
    check_well_formed, decode_batch, decode_payload, encode_batch, Envelope, Limits, SyncBatch,
    Value,
};

/// A typical reading: three measurements of one device, about 100 bytes.
fn pack() -> Vec<u8> {
    let record = |name: &str, unit: &str, value: f64| RawRecord {
        name: Some(name.into()),
        unit: Some(unit.into()),
        value: Some(Value::Float(value)),
        ..RawRecord::default()
    };
    encode_pack(&[
        RawRecord {
            base_name: Some("urn:dev:mac:0024befffe804ff1:".into()),
            base_time: Some(1_764_000_000.25),
            ..record("temperature", "Cel", 21.5)
        },
        record("humidity", "%RH", 48.25),
        record("battery", "%EL", 97.0),
    ])
}

fn batch(envelopes: u64) -> SyncBatch {
    let payload = pack();
    SyncBatch {
        gateway_id: "gw-bench".into(),
        spool_id: "0123456789abcdef0123456789abcdef".into(),
        backlog: 0,
        envelopes: (1..=envelopes)
            .map(|seq| {
                let device = format!("dev-{:05}", seq % 1000);
                Envelope {
                    seq,
                    topic: format!("devices/{device}/telemetry"),
                    device_id: device,
                    received_at: 1_764_000_000_000 + seq,
                    payload: ByteBuf::from(payload.clone()),
                }
            })
            .collect(),
    }
}

fn payloads(c: &mut Criterion) {
    let bytes = pack();
    let limits = Limits::default();
    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("check_well_formed", |b| {
        b.iter(|| check_well_formed(black_box(&bytes), limits.max_depth).unwrap())
    });
    group.bench_function("senml_decode_pack", |b| {
        b.iter(|| decode_pack(black_box(&bytes), 1_764_000_000.0).unwrap())
    });
    group.bench_function("decode_payload", |b| {
        b.iter(|| decode_payload(black_box(&bytes), &limits, 1_764_000_000_000).unwrap())
    });
    group.finish();
}

fn batches(c: &mut Criterion) {
    let batch = batch(1000);
    let bytes = encode_batch(&batch);
    let mut group = c.benchmark_group("sync_batch_1000");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("encode", |b| b.iter(|| encode_batch(black_box(&batch))));
    group.bench_function("decode", |b| {
        b.iter(|| decode_batch(black_box(&bytes)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, payloads, batches);
criterion_main!(benches);
