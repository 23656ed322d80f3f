//! The table and the JSON line.

use crate::workload::Figures;

/// Prints one row per implementation, each headline figure followed by its
/// ratio to raw and to tarpc (higher is better for every ratio).
pub fn print(results: &[Figures], quick: bool, pin: &str) {
    let find = |name: &str| results.iter().find(|f| f.name == name);
    let (raw, tarpc) = (find("raw"), find("tarpc"));
    type Column = (&'static str, fn(&Figures) -> f64, bool);
    let columns: [Column; 6] = [
        ("W1 calls/s", |f| f.w1.calls_per_sec, true),
        ("W2 calls/s", |f| f.w2.calls_per_sec, true),
        ("W3 calls/s", |f| f.w3.calls_per_sec, true),
        ("W4 64K MiB/s", |f| f.w4_64k.mib_per_sec, true),
        ("W4 1M MiB/s", |f| f.w4_1m.mib_per_sec, true),
        ("W5 ms", |f| f.w5_ms, false),
    ];
    println!(
        "\nrpc-bench ({} run, pin {pin}); cells: value (x raw, x tarpc), higher x is better",
        if quick { "quick" } else { "full" }
    );
    print!("{:<8}", "impl");
    for (title, _, _) in &columns {
        print!(" | {title:>26}");
    }
    println!();
    for f in results {
        print!("{:<8}", f.name);
        for (_, value, higher_better) in &columns {
            let v = value(f);
            let ratio = |base: Option<&Figures>| match base {
                Some(b) if *higher_better => format!("{:.2}", v / value(b)),
                Some(b) => format!("{:.2}", value(b) / v),
                None => "-".to_owned(),
            };
            print!(
                " | {:>26}",
                format!("{v:.0} ({}, {})", ratio(raw), ratio(tarpc))
            );
        }
        println!();
    }
    println!("\nlatency and cost");
    println!(
        "{:<8} | {:>15} | {:>15} | {:>15} | {:>15} | {:>15} | {:>12} | {:>12} | {:>14}",
        "impl",
        "W1 p50/p99 us",
        "W2 p50/p99 us",
        "W3 p50/p99 us",
        "W4 64K p99 ms",
        "W4 1M p99 ms",
        "allocs/call c",
        "allocs/call s",
        "srv B/idle conn"
    );
    for f in results {
        println!(
            "{:<8} | {:>15} | {:>15} | {:>15} | {:>15.2} | {:>15.2} | {:>12.2} | {:>12.2} | {:>14.0}",
            f.name,
            format!("{:.0}/{:.0}", f.w1.p50_us, f.w1.p99_us),
            format!("{:.0}/{:.0}", f.w2.p50_us, f.w2.p99_us),
            format!("{:.0}/{:.0}", f.w3.p50_us, f.w3.p99_us),
            f.w4_64k.p99_ms,
            f.w4_1m.p99_ms,
            f.client_allocs_per_call,
            f.server_allocs_per_call,
            f.server_bytes_per_idle_conn,
        );
    }
    for f in results.iter().filter(|f| f.w1_blocking.calls_per_sec > 0.0) {
        println!(
            "{:<8} | W1 through the blocking client: {:.0} calls/s ({:.2}x its async W1), p50/p99 {:.0}/{:.0} us",
            f.name,
            f.w1_blocking.calls_per_sec,
            f.w1_blocking.calls_per_sec / f.w1.calls_per_sec,
            f.w1_blocking.p50_us,
            f.w1_blocking.p99_us,
        );
    }
    println!("\nstreams (tarpc has none)");
    println!(
        "{:<8} | {:>22} | {:>22} | {:>22}",
        "impl", "W6 M items/s", "W7 MiB/s", "W8 M items/s"
    );
    for f in results {
        let ratio = |value: f64, of: fn(&Figures) -> f64| match raw {
            Some(raw) if of(raw) > 0.0 => format!("{value:.1} ({:.2})", value / of(raw)),
            _ => format!("{value:.1}"),
        };
        println!(
            "{:<8} | {:>22} | {:>22} | {:>22}",
            f.name,
            ratio(f.w6_items_per_sec / 1e6, |f| f.w6_items_per_sec / 1e6),
            ratio(f.w7_mib_per_sec, |f| f.w7_mib_per_sec),
            ratio(f.w8_items_per_sec / 1e6, |f| f.w8_items_per_sec / 1e6),
        );
    }
    let json = serde_json::json!({ "quick": quick, "pin": pin, "results": results });
    println!("\nJSON {json}");
}
