//! Micro-benchmarks of the alarm path's building blocks (criterion; `cargo bench -p duress-bench`):
//! Ed25519 sign and verify of an event, JWS encode (serialise + sign) and decode (parse + verify),
//! the host facts collected on every press, and the agent outbox's append, which commits with
//! fsync (`synchronous=FULL`).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use duress_agent_core::outbox::Outbox;
use duress_core::{DeviceKey, EventClaims, EventKind, Location, ParsedJws, Source, Typ};
use time::OffsetDateTime;
use uuid::Uuid;

/// Host facts collected once (`host::collect` has its own benchmark).
fn host() -> duress_core::HostFacts {
    static HOST: std::sync::OnceLock<duress_core::HostFacts> = std::sync::OnceLock::new();
    HOST.get_or_init(duress_agent_core::host::collect).clone()
}

fn claims(seq: u64) -> EventClaims {
    let now = duress_core::clock::truncate_to_millis(OffsetDateTime::now_utc());
    EventClaims {
        id: Uuid::now_v7(),
        seq,
        kind: EventKind::Duress,
        occurred_at: now,
        sent_at: now,
        source: Source::Hotkey,
        location: Location {
            label: Some("Bench campus, Bldg A, Floor 2, Room 214".into()),
            country: Some("US".into()),
            ..Default::default()
        },
        host: host(),
        cancel_pin: None,
    }
}

fn crypto(c: &mut Criterion) {
    let key = DeviceKey::from_seed(&[7u8; 32]);
    let device = "dev_0123456789abcdef";
    let payload = serde_json::to_vec(&claims(1)).unwrap();
    let token = key.sign(Typ::Event, Some(device), &payload);
    let parsed = ParsedJws::parse(&token).unwrap();
    let vk = key.verifying_key();

    let event = claims(1);
    c.bench_function("jws_encode_sign_event", |b| {
        b.iter(|| {
            let payload = serde_json::to_vec(black_box(&event)).unwrap();
            key.sign(Typ::Event, Some(device), &payload)
        })
    });
    // Not crypto, but on every press: `Engine::record` collects the host facts it puts in
    // the event (host name, user, addresses, interfaces).
    c.bench_function("host_facts_collect", |b| {
        b.iter(duress_agent_core::host::collect)
    });
    c.bench_function("ed25519_sign_only", |b| {
        b.iter(|| key.sign(Typ::Event, Some(device), black_box(&payload)))
    });
    c.bench_function("jws_decode_verify_event", |b| {
        b.iter(|| {
            let p = ParsedJws::parse(black_box(&token)).unwrap();
            p.expect_typ(Typ::Event).unwrap();
            let body = p.verify(&vk).unwrap();
            serde_json::from_slice::<EventClaims>(body).unwrap()
        })
    });
    c.bench_function("ed25519_verify_only", |b| {
        b.iter(|| black_box(&parsed).verify(&vk).unwrap().len())
    });
    c.bench_function("jws_parse_only", |b| {
        b.iter(|| ParsedJws::parse(black_box(&token)).unwrap())
    });
}

fn outbox(c: &mut Criterion) {
    // Beside the build, on a real disk (never tmpfs): the fsync is what this measures.
    let base = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_owned))
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut outbox = Outbox::open_in(dir.path()).unwrap();
    let key = DeviceKey::from_seed(&[9u8; 32]);
    let mut group = c.benchmark_group("outbox");
    group.sample_size(30);
    group.bench_function("append_signed_event_fsync", |b| {
        b.iter(|| {
            outbox
                .append(OffsetDateTime::now_utc(), |seq| {
                    let claims = claims(seq);
                    let payload = serde_json::to_vec(&claims).unwrap();
                    let token = key.sign(Typ::Event, Some("dev_bench"), &payload);
                    Ok((claims, Some(token)))
                })
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, crypto, outbox);
criterion_main!(benches);
