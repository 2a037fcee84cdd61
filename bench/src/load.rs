//! A load generator for the API: many concurrent clients, mixed operations, a bounded time.
//!
//! Run as `credguard-load [--socket PATH] [--clients N] [--seconds S] [--json]` (in dev mode
//! `cargo run --release -- load ...`, pointed at `run/lsa.sock`) and by the reliability tests
//! (`tests/reliability.rs`). Each client has its own connection and loops over a mix of calls until the
//! deadline; the report gives throughput, p50 and p99 per operation and errors by gRPC code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use credguard_proto::lsa;

use credguard_client as client;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The API socket.
    pub socket: PathBuf,
    /// Concurrent clients, each with its own connection.
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
}

/// Latencies of one operation.
#[derive(Debug, Clone, Default)]
pub struct OpStats {
    /// Successful calls.
    pub ok: u64,
    /// Latencies of successful calls, in microseconds (sorted once the run ends).
    pub latencies_us: Vec<u32>,
}

impl OpStats {
    /// The `p`-quantile latency (0..=1) in microseconds, 0 when there were no calls.
    pub fn quantile_us(&self, p: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i]
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per operation ("status", "logon", "logoff", "list").
    pub ops: BTreeMap<&'static str, OpStats>,
    /// Failed calls by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Clients that could not connect at all.
    pub connect_failures: u64,
}

impl LoadReport {
    /// Successful calls of every operation.
    pub fn total_ok(&self) -> u64 {
        self.ops.values().map(|o| o.ok).sum()
    }

    /// Successful calls per second.
    pub fn throughput(&self) -> f64 {
        self.total_ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: LoadReport) {
        for (k, v) in other.ops {
            let o = self.ops.entry(k).or_default();
            o.ok += v.ok;
            o.latencies_us.extend(v.latencies_us);
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.connect_failures += other.connect_failures;
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let ops: serde_json::Map<String, serde_json::Value> = self
            .ops
            .iter()
            .map(|(k, o)| {
                let v = serde_json::json!({"ok": o.ok, "p50_us": o.quantile_us(0.5), "p99_us": o.quantile_us(0.99)});
                ((*k).to_string(), v)
            })
            .collect();
        serde_json::json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "calls_ok": self.total_ok(),
            "calls_per_s": self.throughput(),
            "ops": ops,
            "errors": self.errors,
            "connect_failures": self.connect_failures,
        })
    }

    /// A human-readable summary, one line per operation.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} calls in {:.1} s: {:.0} calls/s\n",
            self.total_ok(),
            self.elapsed.as_secs_f64(),
            self.throughput()
        );
        for (name, o) in &self.ops {
            s += &format!(
                "  {name:<7} {:>8} ok  p50 {:>6} us  p99 {:>6} us\n",
                o.ok,
                o.quantile_us(0.5),
                o.quantile_us(0.99)
            );
        }
        if self.errors.is_empty() && self.connect_failures == 0 {
            s += "  no errors\n";
        }
        for (code, n) in &self.errors {
            s += &format!("  error {code}: {n}\n");
        }
        if self.connect_failures > 0 {
            s += &format!("  clients that could not connect: {}\n", self.connect_failures);
        }
        s
    }
}

fn record<T>(report: &mut LoadReport, op: &'static str, started: Instant, r: Result<T, tonic::Status>) -> Option<T> {
    match r {
        Ok(v) => {
            let o = report.ops.entry(op).or_default();
            o.ok += 1;
            o.latencies_us
                .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            Some(v)
        }
        Err(e) => {
            *report.errors.entry(format!("{:?}", e.code())).or_default() += 1;
            None
        }
    }
}

async fn one_client(socket: PathBuf, id: usize, deadline: Instant) -> LoadReport {
    let mut report = LoadReport::default();
    let Ok(mut c) = client::connect(&socket).await else {
        report.connect_failures = 1;
        return report;
    };
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        // The mix: every round a Status; every other round a logon, a list and a logoff.
        let t = Instant::now();
        let r = c.status(lsa::StatusRequest {}).await.map(|r| r.into_inner());
        record(&mut report, "status", t, r);
        if i.is_multiple_of(2) {
            let req = lsa::LogonRequest {
                user: format!("load{id}"),
                domain: "LOAD".into(),
                realm: String::new(),
                kdc: String::new(),
                secret: Some(lsa::logon_request::Secret::Password(format!("load-pw-{id}-{i}"))),
                ..Default::default()
            };
            let t = Instant::now();
            let r = c.logon(req).await.map(|r| r.into_inner());
            if let Some(session) = record(&mut report, "logon", t, r) {
                let t = Instant::now();
                let r = c
                    .list_sessions(lsa::ListSessionsRequest {})
                    .await
                    .map(|r| r.into_inner());
                record(&mut report, "list", t, r);
                let t = Instant::now();
                let r = c
                    .logoff(lsa::LogoffRequest {
                        session_id: session.session_id,
                    })
                    .await;
                record(&mut report, "logoff", t, r);
            }
        }
    }
    report
}

/// Runs the load and returns the merged report.
pub async fn run(config: LoadConfig) -> LoadReport {
    let start = Instant::now();
    let deadline = start + config.duration;
    let tasks: Vec<_> = (0..config.clients)
        .map(|id| tokio::spawn(one_client(config.socket.clone(), id, deadline)))
        .collect();
    let mut report = LoadReport::default();
    for t in tasks {
        match t.await {
            Ok(r) => report.merge(r),
            Err(_) => report.connect_failures += 1,
        }
    }
    report.elapsed = start.elapsed();
    for o in report.ops.values_mut() {
        o.latencies_us.sort_unstable();
    }
    report
}
