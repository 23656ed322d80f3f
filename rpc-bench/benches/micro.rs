//! Micro-benchmarks of the server's per-call work, without a network: the
//! generated dispatch, argument decoding and reply encoding, for a small
//! call, a string and a 64 KiB byte buffer; and how long hostile bodies
//! take to be refused (allocation bombs), with the heap each allocates
//! while refused. Run with
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

#[path = "../src/alloc.rs"]
#[allow(dead_code)] // The report's counters are not all needed here.
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// A recursive type, the kind a nesting bomb targets.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
}

/// A hostile body, named, and the decode that must refuse it.
type Bomb = (&'static str, Request, fn(&Request) -> bool);

/// Hostile bodies that must be refused quickly and without allocating
/// what they claim.
fn bombs() -> Vec<Bomb> {
    let claim = |marker: u8| {
        let mut body = vec![marker];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        Request::new(1, body.into(), DEFAULT_MAX_FRAME_LENGTH)
    };
    vec![
        ("bomb: String claiming 2^40 bytes", claim(253), |r| {
            r.decode::<(String,)>().is_err()
        }),
        ("bomb: Vec<u64> claiming 2^40 items", claim(253), |r| {
            r.decode::<(Vec<u64>,)>().is_err()
        }),
        (
            "bomb: 1 MiB of nesting",
            Request::new(1, vec![1u8; 1 << 20].into(), DEFAULT_MAX_FRAME_LENGTH),
            |r| r.decode::<(Tree,)>().is_err(),
        ),
    ]
}

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

    // This thread's allocations count as the server's.
    alloc::set_side(alloc::Side::Server);
    for (name, request, refused) in bombs() {
        let before = alloc::allocated_bytes(alloc::Side::Server);
        assert!(refused(&request), "{name} must be refused");
        let bytes = alloc::allocated_bytes(alloc::Side::Server) - before;
        println!("{name}: {bytes} bytes allocated in all while refusing it");
        c.bench_function(name, |b| b.iter(|| refused(black_box(&request))));
    }
}

criterion_group!(micro, benches);
criterion_main!(micro);
