//! Runs the same workloads against this toolkit, tarpc, tonic and raw
//! framing in one process and prints a table and a JSON line.
//!
//! `cargo run --release --manifest-path rpc-bench/Cargo.toml -- [--quick]
//! [--pin split|same|none] [--only raw,toolkit,toolkit-tls,toolkit-layer,toolkit-balanced,toolkit-cluster,tarpc,tonic]
//! [--workloads w1,w2,w3,w4,w5,w6,w7,w8]`

mod alloc;
mod fd_limit;
mod imp;
mod report;
mod workload;

use imp::Implementation;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// Where the two runtimes' threads may run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Pin {
    /// Server on CPU 0, client on CPU 1.
    Split,
    /// Both on CPU 0: shows the CPU cost per call.
    Same,
    /// Wherever the kernel puts them.
    None,
}

struct Options {
    quick: bool,
    pin: Pin,
    only: Vec<String>,
    /// Only these workloads (the rest report zeros): for a profiler.
    workloads: Option<Vec<String>>,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        pin: Pin::Split,
        only: ["raw", "toolkit", "toolkit-tls", "tarpc", "tonic"]
            .map(String::from)
            .to_vec(),
        workloads: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--pin" => {
                options.pin = match args.next().as_deref() {
                    Some("split") => Pin::Split,
                    Some("same") => Pin::Same,
                    Some("none") => Pin::None,
                    other => return Err(format!("--pin takes split, same or none, not {other:?}")),
                }
            }
            "--only" => {
                let list = args
                    .next()
                    .ok_or("--only takes a list such as raw,toolkit")?;
                options.only = list.split(',').map(str::to_owned).collect();
            }
            "--workloads" => {
                let list = args
                    .next()
                    .ok_or("--workloads takes a list such as w2,w3")?;
                options.workloads = Some(list.split(',').map(str::to_owned).collect());
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}`; usage: [--quick] [--pin split|same|none] [--only raw,toolkit,toolkit-tls,toolkit-layer,toolkit-balanced,toolkit-cluster,tarpc,tonic] [--workloads w1,w2,w3,w4,w5,w6,w7,w8]"
                ));
            }
        }
    }
    Ok(options)
}

fn runtime(side: alloc::Side, cpu: Option<usize>) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            alloc::set_side(side);
            if let Some(id) = cpu {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
        })
        .build()
        .expect("tokio runtime")
}

fn measure<I: Implementation>(options: &Options) -> workload::Figures {
    let (server_cpu, client_cpu) = match options.pin {
        Pin::Split => (Some(0), Some(1)),
        Pin::Same => (Some(0), Some(0)),
        Pin::None => (None, None),
    };
    let server = runtime(alloc::Side::Server, server_cpu);
    let client = runtime(alloc::Side::Client, client_cpu);
    let addr = server
        .block_on(server.spawn(I::serve()))
        .expect("server start");
    let counts = workload::Counts {
        scale: if options.quick { 10 } else { 1 },
        workloads: options.workloads.clone(),
    };
    let async_counts = counts.clone();
    let mut figures = client
        .block_on(async move {
            tokio::spawn(async move { workload::run::<I>(addr, &async_counts).await }).await
        })
        .expect("workloads");
    // From this thread, which is in no runtime: the blocking client runs
    // on the toolkit's own.
    figures.w1_blocking = workload::w1_blocking::<I>(addr, &counts);
    client.shutdown_background();
    server.shutdown_background();
    figures
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    fd_limit::raise();
    // Built with `--features metrics`: the toolkit's metrics go to a real
    // recorder, whose cost the figures then include.
    #[cfg(feature = "metrics")]
    let _prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("a Prometheus recorder");
    let mut results = Vec::new();
    for name in &options.only {
        eprintln!("running {name} ...");
        let figures = match name.as_str() {
            "raw" => measure::<imp::raw::Raw>(&options),
            "toolkit" => measure::<imp::toolkit::Toolkit>(&options),
            "toolkit-tls" => measure::<imp::toolkit::ToolkitTls>(&options),
            "toolkit-layer" => measure::<imp::toolkit::ToolkitLayered>(&options),
            "toolkit-balanced" => measure::<imp::toolkit::ToolkitBalanced>(&options),
            "toolkit-cluster" => measure::<imp::toolkit::ToolkitCluster>(&options),
            "tarpc" => measure::<imp::tarpc::Tarpc>(&options),
            "tonic" => measure::<imp::tonic::Tonic>(&options),
            other => {
                eprintln!("unknown implementation `{other}`");
                std::process::exit(2);
            }
        };
        results.push(figures);
    }
    report::print(
        &results,
        options.quick,
        &format!("{:?}", options.pin).to_lowercase(),
    );
}
