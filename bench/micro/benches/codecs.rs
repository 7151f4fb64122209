//! What each command costs the proxy and the replay in pure code, without
//! I/O: parsing a client's pipelined requests, finding where the primary's
//! replies end, and encoding captured commands as PROTOCOL and STRING
//! payloads (and reading them back, as the replay does).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use remoteback_protocol::codec::{protocol, string};
use remoteback_protocol::frame::Scanner;
use remoteback_protocol::request;
use remoteback_protocol::Command;

/// `count` `SET key:<n> <value>` commands with values of `value` bytes.
fn sets(count: usize, value: usize) -> Vec<Command> {
    let v = vec![b'x'; value];
    (0..count)
        .map(|n| {
            Command::from_parts([
                &b"SET"[..],
                format!("key:{n:08}").as_bytes(),
                &v[..],
            ])
        })
        .collect()
}

fn resp(commands: &[Command]) -> Bytes {
    let mut out = BytesMut::new();
    protocol::encode(commands, &mut out);
    out.freeze()
}

fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("request/parse");
    for value in [16, 1024] {
        let buf = resp(&sets(1000, value));
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(BenchmarkId::new("SET", value), &buf, |b, buf| {
            b.iter(|| {
                let mut pos = 0;
                while let Ok(Some(parsed)) = request::parse(&buf[pos..]) {
                    pos += parsed.len;
                }
                assert_eq!(pos, buf.len());
            })
        });
    }
    let inline: Vec<u8> = (0..1000)
        .flat_map(|n| format!("SET key:{n:08} \"a value\"\r\n").into_bytes())
        .collect();
    group.throughput(Throughput::Bytes(inline.len() as u64));
    group.bench_function("inline SET", |b| {
        b.iter(|| {
            let mut pos = 0;
            while let Ok(Some(parsed)) = request::parse(&inline[pos..]) {
                pos += parsed.len;
            }
            assert_eq!(pos, inline.len());
        })
    });
    group.finish();
}

fn replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply/scan");
    let oks: Vec<u8> = b"+OK\r\n".repeat(1000);
    let bulks = resp(&sets(1000, 0))
        .iter()
        .copied()
        .collect::<Vec<u8>>();
    let mut bulk_replies = Vec::new();
    for _ in 0..1000 {
        bulk_replies.extend_from_slice(b"$1024\r\n");
        bulk_replies.extend(std::iter::repeat_n(b'v', 1024));
        bulk_replies.extend_from_slice(b"\r\n");
    }
    for (name, buf) in [
        ("+OK", &oks),
        ("array of 3 bulks", &bulks),
        ("1 KiB bulk", &bulk_replies),
    ] {
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut scanner = Scanner::new();
                let mut pos = 0;
                while let Ok(Some(len)) = scanner.next(&buf[pos..]) {
                    pos += len;
                }
                assert_eq!(pos, buf.len());
            })
        });
    }
    group.finish();
}

fn encoders(c: &mut Criterion) {
    let mut group = c.benchmark_group("record/encode");
    let binary: Vec<Command> = (0..1000u32)
        .map(|n| Command::from_parts([&b"SET"[..], &n.to_be_bytes()[..], &[0u8, 0xff, b'"', b' '][..]]))
        .collect();
    for (name, commands) in [("SET 16 B", sets(1000, 16)), ("SET binary", binary)] {
        let bytes = resp(&commands).len() as u64;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(BenchmarkId::new("PROTOCOL", name), &commands, |b, cmds| {
            b.iter(|| {
                let mut out = BytesMut::with_capacity(bytes as usize);
                protocol::encode(cmds, &mut out);
                out
            })
        });
        group.bench_with_input(BenchmarkId::new("STRING", name), &commands, |b, cmds| {
            b.iter(|| {
                let mut out = BytesMut::with_capacity(bytes as usize);
                string::encode(cmds, &mut out);
                out
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("record/decode");
    let commands = sets(1000, 16);
    let payload = resp(&commands);
    let mut text = BytesMut::new();
    string::encode(&commands, &mut text);
    let text = text.freeze();
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("PROTOCOL SET 16 B", |b| {
        b.iter(|| protocol::decode(&payload).expect("decodes"))
    });
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("STRING SET 16 B", |b| {
        b.iter(|| string::decode(&text).expect("decodes"))
    });
    group.finish();
}

criterion_group!(benches, requests, replies, encoders);
criterion_main!(benches);
