//! `promtool check metrics` (Prometheus' own parser and linter, Debian
//! package `prometheus`) finds nothing to say about `/metrics`: the
//! exposition of a fully populated snapshot, with a real TLS certificate
//! and this process' own `/proc` figures, parses and follows the naming
//! conventions (`_total` counters, base units, no reserved suffixes, help
//! on everything).
//!
//! A missing `promtool` fails the test: `scripts/test` installs it.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use turnpike::config::TlsSettings;
use turnpike::observe;
use turnpike::observe::metrics::render;
use turnpike::tls::Certificates;

use support::pki::{KeyType, Pki};

// The shared snapshot file reads through `super::observe`.
#[path = "support/populated_snapshot.rs"]
mod populated_snapshot;

/// Runs `promtool check metrics` on `text`: its exit status and what it
/// printed.
fn promtool_check(text: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian package prometheus (scripts/test does)"
            )
        });
    {
        // Taken (and dropped at the end of the block) so promtool sees the
        // end of its input.
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("wait for promtool");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, printed)
}

#[test]
fn promtool_finds_nothing_to_fix() {
    let pki = Pki::new();
    let leaf = pki.leaf("metrics", KeyType::EcP256Sec1, 30);
    let certs = Certificates::load(&TlsSettings {
        certificate: Some(leaf.chain.clone()),
        private_key: Some(leaf.key.clone()),
        ..TlsSettings::default()
    })
    .unwrap_or_else(|e| panic!("load the test certificate: {e}"));
    let text = render(&populated_snapshot::populated(), Some(&certs));
    // Everything is there: certificate, fast path, database, process.
    for family in [
        "# TYPE turnpike_tls_certificate_info gauge",
        "# TYPE turnpike_xdp_routes gauge",
        "# TYPE turnpike_database_lookup_duration_seconds histogram",
        "# TYPE process_open_fds gauge",
        "# TYPE turnpike_error_responses_total counter",
    ] {
        assert!(text.contains(family), "{family} missing in\n{text}");
    }
    let (status, printed) = promtool_check(&text);
    assert!(
        status.success() && printed.trim().is_empty(),
        "promtool check metrics: {status}\n{printed}\non\n{text}"
    );
}

/// The check is not vacuous: promtool does complain about a badly named
/// counter and about text it cannot parse.
#[test]
fn promtool_complains_about_bad_metrics() {
    let (status, printed) =
        promtool_check("# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n");
    assert!(
        !status.success() && printed.contains("_total"),
        "{status}: {printed}"
    );
    let (status, printed) = promtool_check("this is not an exposition\n");
    assert!(!status.success(), "{status}: {printed}");
    // And the ground truth: an empty `observe::Snapshot` is fine too.
    let (status, printed) = promtool_check(&render(&observe::Snapshot::default(), None));
    assert!(
        status.success() && printed.trim().is_empty(),
        "{status}: {printed}"
    );
}
