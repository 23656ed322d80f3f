//! Micro-benchmarks of the server's per-call work, without a network: the
//! generated dispatch, argument decoding and reply encoding, for a small
//! call, a string and a 64 KiB byte buffer. Run with
//! `cargo bench --manifest-path rpc-bench/Cargo.toml --bench micro`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use rpc_core::{DEFAULT_MAX_FRAME_LENGTH, Request, Service, rpc_service};

/// The service under measurement.
#[rpc_service]
pub trait Micro {
    /// Adds.
    async fn add(&self, a: i32, b: i32) -> i32;
    /// Echoes bytes.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns a short string.
    async fn get_obj(&self) -> String;
}

struct Imp;

impl Micro for Imp {
    async fn add(&self, a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn get_obj(&self) -> String {
        "lxx nb".to_owned()
    }
}

fn body<T: serde::Serialize>(args: T) -> Bytes {
    bincode::serde::encode_to_vec(args, bincode::config::standard())
        .expect("encode")
        .into()
}

/// One call through the generated server: route, decode, run, encode.
fn dispatch(server: &MicroServer<Imp>, method: &str, body: &Bytes) -> usize {
    let request = Request::new(7, body.clone(), DEFAULT_MAX_FRAME_LENGTH);
    let reply = server
        .call(method, request)
        .expect("known method")
        .now_or_never()
        .expect("handler finishes at once");
    reply.as_bytes().len()
}

fn benches(c: &mut Criterion) {
    let server = MicroServer::new(Imp);
    let add = body((2i32, 3i32));
    let nothing = body(());
    let blob = body((vec![7u8; 64 * 1024],));

    c.bench_function("dispatch add(i32, i32)", |b| {
        b.iter(|| dispatch(&server, black_box("add"), &add))
    });
    c.bench_function("dispatch get_obj() -> String", |b| {
        b.iter(|| dispatch(&server, black_box("get_obj"), &nothing))
    });
    c.bench_function("dispatch echo(64 KiB)", |b| {
        b.iter(|| dispatch(&server, black_box("echo"), &blob))
    });

    let request = Request::new(1, add.clone(), DEFAULT_MAX_FRAME_LENGTH);
    c.bench_function("decode (i32, i32)", |b| {
        b.iter(|| black_box(&request).decode::<(i32, i32)>().ok())
    });
    let text = Request::new(1, body(("lxx nb".to_owned(),)), DEFAULT_MAX_FRAME_LENGTH);
    c.bench_function("decode (String,)", |b| {
        b.iter(|| black_box(&text).decode::<(String,)>().ok())
    });
    c.bench_function("encode reply i32", |b| {
        b.iter(|| request.reply(black_box(&5i32)).as_bytes().len())
    });
    c.bench_function("encode reply String", |b| {
        let value = "lxx nb".to_owned();
        b.iter(|| request.reply(black_box(&value)).as_bytes().len())
    });
}

criterion_group!(micro, benches);
criterion_main!(micro);
