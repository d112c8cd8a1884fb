//! What one idle poll costs the runtime's threads, against the floor: the same EPMD request
//! made blocking from a plain thread, which is what the kernel's loopback TCP costs.
//!
//! `cargo run --release --no-default-features --example epmd_floor -- PORT [REQUESTS [MS]]`
//! asks the EPMD at 127.0.0.1:PORT, REQUESTS times each way (default 200), MS ms apart
//! (default 20; at a poll's 1000 the caches are as cold as a poller finds them, and every
//! request costs more), so that the runtime parks between requests as it does between
//! polls, and prints one line:
//! `blocking_us=… runtime_us=… runtime_switches=…`, CPU time per request from
//! `/proc/self/task/*/schedstat`. The plan probes nothing, as when every name listed is
//! connected: the runtime's figure is one unchanged host, an idle poll (its plan answered at
//! once, here, rather than by the owner). bench `idle` runs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use tinycluster_nif::epmd;
use tinycluster_nif::runtime;
use tinycluster_nif::scan::{self, HostSpec, Planner, ScanSpec};

/// CPU time (ns) and times scheduled of the calling thread, or of the runtime's threads.
fn cpu(runtime_threads: bool) -> (u64, u64) {
    let tasks: Vec<_> = if runtime_threads {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                std::fs::read_to_string(p.join("comm"))
                    .is_ok_and(|c| c.starts_with(runtime::THREAD_NAME))
            })
            .collect()
    } else {
        vec!["/proc/thread-self".into()]
    };
    tasks.iter().fold((0, 0), |(ns, runs), task| {
        let stat = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        let fields: Vec<u64> = stat
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        match fields.as_slice() {
            [t, _, r, ..] => (ns + t, runs + r),
            _ => (ns, runs),
        }
    })
}

fn blocking_request(port: u16) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("EPMD answers");
    stream.write_all(&epmd::NAMES_REQ).expect("send");
    let mut reply = Vec::new();
    let limit = epmd::MAX_REPLY_BYTES as u64 + 1;
    stream.take(limit).read_to_end(&mut reply).expect("reply");
    reply
}

fn spec(port: u16) -> ScanSpec {
    ScanSpec {
        hosts: vec![HostSpec {
            label: "local".into(),
            address: "127.0.0.1".into(),
            epmd_port: port,
            node_host: Some("floor".into()),
            dist_port: None,
            dist_port_last: None,
        }],
        probe_name: "epmd_floor@floor".into(),
        creation: 1,
        local_name: "epmd_floor@floor".into(),
        probe_timeout: Duration::from_secs(1),
        epmd_timeout: Duration::from_secs(5),
        tls: false,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: PORT [REQUESTS [MS]]");
    let requests: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(200);
    let pause = Duration::from_millis(args.next().and_then(|n| n.parse().ok()).unwrap_or(20));

    epmd::parse_names(&blocking_request(port)).expect("a NAMES reply");

    let start = cpu(false);
    for _ in 0..requests {
        blocking_request(port);
        std::thread::sleep(pause);
    }
    let blocking = cpu(false).0 - start.0;

    let rt = runtime::build().expect("a runtime");
    let quiet: Arc<dyn Fn(scan::Event) + Send + Sync> = Arc::new(|_| {});
    // Every name connected: nothing to probe.
    let idle = Planner::with(|_| Vec::new());
    let listed = |report: &scan::ScanReport| {
        let (names, _) = report.hosts[0].result.clone().expect("EPMD answers");
        names
    };
    let first = rt.block_on(scan::run(
        spec(port),
        scan::Local::default(),
        idle.clone(),
        quiet.clone(),
    ));
    let first = listed(&first);
    std::thread::sleep(pause);
    let (ns0, runs0) = cpu(true);
    for _ in 0..requests {
        let (tx, rx) = std::sync::mpsc::channel();
        let (spec, planner, sink) = (spec(port), idle.clone(), quiet.clone());
        // Spawned from outside the runtime, as `start_scan` does from a BEAM scheduler.
        rt.spawn(async move {
            let report = scan::run(spec, scan::Local::default(), planner, sink).await;
            let _ = tx.send(report);
        });
        let report = rx.recv().expect("a report");
        assert!(report.candidates.is_empty(), "a probe was made");
        assert_eq!(listed(&report), first, "the listing changed during the run");
        std::thread::sleep(pause);
    }
    let (ns1, runs1) = cpu(true);
    let per = |ns: u64| ns as f64 / requests as f64 / 1000.0;
    println!(
        "blocking_us={:.1} runtime_us={:.1} runtime_switches={:.2}",
        per(blocking),
        per(ns1 - ns0),
        (runs1 - runs0) as f64 / requests as f64
    );
}
