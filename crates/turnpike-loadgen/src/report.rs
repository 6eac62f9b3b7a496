//! The load generator's results: [`BenchReport`], printable as a table
//! (`Display`), as JSON ([`BenchReport::to_json`]) or as `key=value` lines
//! for shell scripts ([`BenchReport::to_key_values`]).

use core::fmt;

use serde::Serialize;

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// What was run.
    pub config: ConfigReport,
    /// Opening the allocations.
    pub setup: SetupReport,
    /// The measured traffic; `None` when the duration was zero.
    pub traffic: Option<TrafficReport>,
    /// The generator's own cost.
    pub generator: GeneratorReport,
    /// The observed server process (`BenchOptions::observe_pid`).
    pub server_process: Option<ServerProcessReport>,
    /// Every CPU of the machine: the server, the generator and the kernel's
    /// work for both.
    pub machine: Option<CpusReport>,
    /// The server's CPUs (`BenchOptions::server_cpus`): its process and the
    /// kernel's work on them (on a NIC, the receive processing of the
    /// queues steered there).
    pub server_cores: Option<CpusReport>,
    /// Deleting the allocations at the end (Refresh with lifetime 0).
    pub release: ReleaseReport,
}

/// The run's parameters, as used.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigReport {
    /// Server address.
    pub server: String,
    /// Allocations requested.
    pub allocations: usize,
    /// Application bytes per message.
    pub payload_bytes: usize,
    /// "channel" (ChannelData) or "send-indication".
    pub data_path: &'static str,
    /// "echo" or "client-to-client".
    pub peer_mode: &'static str,
    /// "paced" or "closed-loop".
    pub load: &'static str,
    /// Paced: target aggregate messages per second.
    pub target_rate: Option<u64>,
    /// Closed loop: messages in flight per allocation.
    pub window: Option<u32>,
    /// Worker threads.
    pub threads: usize,
    /// Measured seconds (after warm-up).
    pub duration_secs: f64,
    /// Warm-up seconds (traffic not counted).
    pub warmup_secs: f64,
}

/// Allocation set-up.
#[derive(Clone, Debug, Serialize)]
pub struct SetupReport {
    /// Allocations that succeeded.
    pub allocated: usize,
    /// Allocations that failed.
    pub failed: usize,
    /// Allocate attempts answered 437 (Allocation Mismatch: the server still
    /// remembered the client port) and retried from another port.
    pub retried_437: usize,
    /// Allocations whose ChannelBind/CreatePermission failed (they do not send).
    pub bind_failed: usize,
    /// Wall time of the Allocate phase (401 round trip included).
    pub allocate_secs: f64,
    /// Successful allocations per second of the Allocate phase.
    pub allocations_per_sec: f64,
    /// The generator's CPU use during the Allocate phase, in percent of one
    /// core (near 100 %: the allocation rate is the generator's limit).
    pub generator_cpu_percent: f64,
    /// Wall time of the ChannelBind/CreatePermission phase.
    pub bind_secs: f64,
    /// The first set-up error, if any.
    pub first_error: Option<String>,
}

/// The measured traffic (messages sent during the measurement window and
/// their echoes or deliveries, whenever they arrived before the drain ended).
#[derive(Clone, Debug, Serialize)]
pub struct TrafficReport {
    /// Seconds of the measurement window.
    pub measured_secs: f64,
    /// Messages sent by the allocations.
    pub sent: u64,
    /// Of those, messages that came back (echo) or arrived (client-to-client).
    pub received: u64,
    /// `sent - received` (never negative).
    pub lost: u64,
    /// `lost / sent` in percent.
    pub loss_percent: f64,
    /// Messages that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Messages that arrived twice in a row.
    pub duplicates: u64,
    /// Messages sent per second.
    pub sent_per_sec: f64,
    /// Messages received per second.
    pub received_per_sec: f64,
    /// Application bytes sent per second.
    pub bytes_sent_per_sec: f64,
    /// Application bytes received per second.
    pub bytes_received_per_sec: f64,
    /// Datagrams the generator's kernel refused to send.
    pub send_errors: u64,
    /// Socket errors on receive (e.g. ICMP port unreachable).
    pub recv_errors: u64,
    /// Datagrams that were not ours (bad magic, unknown sender, garbage).
    pub invalid: u64,
    /// Datagrams the echo peer sent back / failed to send back.
    pub echoed: u64,
    /// Datagrams the echo peer failed to send back.
    pub echo_drops: u64,
    /// Closed loop: windows refilled after a stall (loss).
    pub stall_resets: u64,
    /// Refresh/ChannelBind/CreatePermission refreshes during the run.
    pub refreshes_ok: u64,
    /// Refreshes that failed.
    pub refreshes_failed: u64,
    /// "round-trip" (echo) or "one-way" (client-to-client).
    pub latency_kind: &'static str,
    /// Latency distribution.
    pub latency_us: LatencyReport,
    /// The first traffic error, if any.
    pub first_error: Option<String>,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencyReport {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// The generator's own CPU use.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GeneratorReport {
    /// CPU seconds (user + system, all threads) during the measurement
    /// window and drain.
    pub cpu_secs: f64,
    /// `cpu_secs` as a percentage of one core over the same wall time.
    pub cpu_percent: f64,
    /// How many CPUs the generator may run on (its affinity mask).
    pub cpus: usize,
    /// How busy those CPUs were over the window, whoever kept them busy
    /// (softirq work, other processes): near 100 % the generator's side is
    /// saturated and the results say little about the server.
    pub cores_busy_percent: Option<f64>,
}

/// How busy a set of CPUs was over the measurement window, whoever kept it
/// busy: processes and the kernel's interrupt and softirq work. Where the
/// kernel relays (an XDP fast path), that work is charged to no process, so
/// only these figures count it. On a shared machine they include other
/// work.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CpusReport {
    /// How many CPUs.
    pub cpus: usize,
    /// Busy CPU seconds, all of them together.
    pub busy_secs: f64,
    /// `busy_secs` as a percentage of their capacity.
    pub busy_percent: f64,
    /// `busy_secs` in microseconds per message sent.
    pub cpu_us_per_message: Option<f64>,
}

/// Readings of the server process.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ServerProcessReport {
    /// Its PID.
    pub pid: u32,
    /// VmRSS before the allocations were opened (KiB).
    pub rss_kib_before: Option<u64>,
    /// VmRSS after the allocations were opened and bound (and `hold`).
    pub rss_kib_after_setup: Option<u64>,
    /// The growth scaled to 1000 allocations (KiB).
    pub rss_kib_per_1000_allocations: Option<f64>,
    /// Server CPU microseconds per successful allocation during the Allocate
    /// phase (both transactions of the 401 exchange; clock-tick resolution,
    /// so only meaningful for many allocations).
    pub allocate_cpu_us_per_allocation: Option<f64>,
    /// Server CPU seconds during the measurement window and drain.
    pub cpu_secs: Option<f64>,
    /// `cpu_secs` as a percentage of one core.
    pub cpu_percent: Option<f64>,
    /// Server CPU microseconds per message sent in the window (in echo mode
    /// each message is relayed twice: out and back).
    pub cpu_us_per_message: Option<f64>,
}

/// Releasing the allocations.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ReleaseReport {
    /// Allocations deleted.
    pub released: usize,
    /// Allocations whose deletion failed (they expire on their own).
    pub failed: usize,
}

impl BenchReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as `key=value` lines, nested keys joined with `_`
    /// (`traffic_loss_percent=0`, `server_process_cpu_us_per_message=4.2`);
    /// absent values are empty (`traffic_first_error=`). Stable for scripts.
    pub fn to_key_values(&self) -> String {
        let mut out = String::new();
        if let Ok(value) = serde_json::to_value(self) {
            flatten("", &value, &mut out);
        }
        out
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {
            out.push_str(prefix);
            out.push_str("=\n");
        }
        Value::String(s) => {
            // One line per key: newlines in error messages become spaces.
            out.push_str(prefix);
            out.push('=');
            out.push_str(&s.replace(['\n', '\r'], " "));
            out.push('\n');
        }
        other => {
            out.push_str(prefix);
            out.push('=');
            out.push_str(&other.to_string());
            out.push('\n');
        }
    }
}

/// Formats a count per second compactly: 12345 → "12.3k".
fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let load = match (c.target_rate, c.window) {
            (Some(r), _) => format!("paced {r} msg/s"),
            (None, Some(w)) => format!("closed loop, window {w}"),
            _ => c.load.to_owned(),
        };
        writeln!(
            f,
            "TURN load: {} | {} allocations | {} B payload | {} | {} peer | {} | {:.1} s (+{:.1} s warm-up) | {} thread(s)",
            c.server,
            c.allocations,
            c.payload_bytes,
            c.data_path,
            c.peer_mode,
            load,
            c.duration_secs,
            c.warmup_secs,
            c.threads
        )?;
        let s = &self.setup;
        writeln!(
            f,
            "{:<12} {:>14} {:>14} {:>14} {:>14} {:>14}",
            "setup", "allocated", "failed", "bind failed", "437 retries", "allocs/s"
        )?;
        writeln!(
            f,
            "{:<12} {:>14} {:>14} {:>14} {:>14} {:>14.0}",
            "", s.allocated, s.failed, s.bind_failed, s.retried_437, s.allocations_per_sec
        )?;
        writeln!(
            f,
            "{:<12} allocate phase {:.3} s, generator at {:.0} % of one core; bind phase {:.3} s",
            "", s.allocate_secs, s.generator_cpu_percent, s.bind_secs
        )?;
        if let Some(e) = &s.first_error {
            writeln!(f, "{:<12} first error: {e}", "")?;
        }
        if let Some(t) = &self.traffic {
            writeln!(
                f,
                "{:<12} {:>14} {:>14} {:>14} {:>14}",
                "traffic", "sent", "received", "lost", "loss %"
            )?;
            writeln!(
                f,
                "{:<12} {:>14} {:>14} {:>14} {:>14.3}",
                "  messages", t.sent, t.received, t.lost, t.loss_percent
            )?;
            writeln!(
                f,
                "{:<12} {:>14} {:>14} {:>14} {:>14}",
                "  per second",
                si(t.sent_per_sec),
                si(t.received_per_sec),
                "",
                ""
            )?;
            writeln!(
                f,
                "{:<12} {:>14} {:>14} {:>14} {:>14}",
                "  bytes/s",
                si(t.bytes_sent_per_sec),
                si(t.bytes_received_per_sec),
                "",
                ""
            )?;
            writeln!(
                f,
                "{:<12} {:>14} {:>14} {:>14} {:>14}",
                "  anomalies", "reordered", "duplicates", "send errors", "invalid"
            )?;
            writeln!(
                f,
                "{:<12} {:>14} {:>14} {:>14} {:>14}",
                "",
                t.reordered,
                t.duplicates,
                t.send_errors + t.recv_errors,
                t.invalid
            )?;
            let l = &t.latency_us;
            writeln!(
                f,
                "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                format!(
                    "{} µs",
                    if t.latency_kind == "one-way" {
                        "1-way"
                    } else {
                        "rtt"
                    }
                ),
                "p50",
                "p90",
                "p99",
                "p99.9",
                "max",
                "mean"
            )?;
            writeln!(
                f,
                "{:<12} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                "", l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            )?;
            if t.refreshes_ok + t.refreshes_failed > 0 {
                writeln!(
                    f,
                    "{:<12} {} ok, {} failed",
                    "refreshes", t.refreshes_ok, t.refreshes_failed
                )?;
            }
            if let Some(e) = &t.first_error {
                writeln!(f, "{:<12} first error: {e}", "")?;
            }
        }
        let g = &self.generator;
        if self.traffic.is_some() {
            write!(
                f,
                "{:<12} cpu {:.2} s = {:.0} % of one core",
                "generator", g.cpu_secs, g.cpu_percent
            )?;
            match g.cores_busy_percent {
                Some(b) => writeln!(f, " | its {} allowed CPU(s) {b:.0} % busy", g.cpus)?,
                None => writeln!(f)?,
            }
            for (name, cpus) in [
                ("machine", &self.machine),
                ("server cpus", &self.server_cores),
            ] {
                if let Some(c) = cpus {
                    writeln!(
                        f,
                        "{name:<12} {} CPU(s) {:.0} % busy: {} CPU-µs per message, whoever spent them",
                        c.cpus,
                        c.busy_percent,
                        c.cpu_us_per_message
                            .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
                    )?;
                }
            }
        }
        if let Some(p) = &self.server_process {
            let opt = |v: Option<f64>, prec: usize| {
                v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
            };
            writeln!(
                f,
                "{:<12} pid {} | cpu {} s = {} % | {} µs/msg | {} µs/allocation | rss {} → {} KiB ({} KiB per 1000 allocations)",
                "server",
                p.pid,
                opt(p.cpu_secs, 2),
                opt(p.cpu_percent, 0),
                opt(p.cpu_us_per_message, 2),
                opt(p.allocate_cpu_us_per_allocation, 1),
                p.rss_kib_before
                    .map_or_else(|| "-".to_owned(), |v| v.to_string()),
                p.rss_kib_after_setup
                    .map_or_else(|| "-".to_owned(), |v| v.to_string()),
                opt(p.rss_kib_per_1000_allocations, 0),
            )?;
        }
        writeln!(
            f,
            "{:<12} {} released, {} failed",
            "release", self.release.released, self.release.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_flatten_nested_fields() {
        let mut out = String::new();
        let v = serde_json::json!({"a": {"b": 1.5, "c": null}, "d": "x\ny"});
        flatten("", &v, &mut out);
        assert_eq!(out, "a_b=1.5\na_c=\nd=x y\n");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(999.0), "999");
    }
}
