//! The Grafana dashboard (`deploy/grafana/turnpike.json`) asks only for
//! metrics `/metrics` serves: every PromQL expression of its panels and
//! template variables is taken apart, and each metric name in it must be a
//! family of the exposition of a fully populated snapshot (a histogram's
//! only through its `_bucket`, `_sum` and `_count` series), and what
//! `rate()` or `increase()` reads must be a counter. Prometheus' own parser
//! (`promtool check rules`, Debian package `prometheus`, installed by
//! `scripts/test`) must accept every expression.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

// The shared snapshot file reads through `super::observe`.
use turnpike::observe;
use turnpike::observe::metrics::{CertificateFacts, ProcessStats, render_parts};

#[path = "support/populated_snapshot.rs"]
mod populated_snapshot;

const DASHBOARD: &str = include_str!("../../../deploy/grafana/turnpike.json");

/// Metric family name → type, from the `# TYPE` lines of everything
/// `/metrics` can show.
fn families() -> BTreeMap<String, String> {
    let text = render_parts(
        &populated_snapshot::populated(),
        Some(&CertificateFacts {
            subject: "CN=turn.example.test".to_owned(),
            not_after: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            generation: 1,
        }),
        Some(&ProcessStats {
            max_fds: Some(1024),
            ..ProcessStats::default()
        }),
    );
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name kind");
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// A metric name an expression reads, and whether a `rate()`-like
/// function reads it (then it must be a counter).
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    name: String,
    rated: bool,
}

/// Words that are neither metric names nor functions.
const KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "atan2"];

/// Modifiers followed by a parenthesised list of label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Aggregation operators: like functions, though `by (…)` may come
/// between the name and its parenthesis.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Functions over a counter's increase.
const RATE_FUNCTIONS: [&str; 3] = ["rate", "irate", "increase"];

/// The metric names in a PromQL expression: identifiers that are not
/// functions, keywords, label names (in `{…}` or `by (…)` lists), string
/// contents, durations, numbers or Grafana variables.
fn references(expr: &str) -> Vec<Reference> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // Set by `rate(` and the like: the next name is read by it.
    let mut rated = false;
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // Index just past the quoted string starting at `at`.
    let skip_string = |mut at: usize| {
        let quote = chars[at];
        at += 1;
        while at < chars.len() && chars[at] != quote {
            at += if chars[at] == '\\' { 2 } else { 1 };
        }
        at + 1
    };
    // Index just past the bracket closing the one at `at` (strings inside
    // skipped whole).
    let skip_group = |mut at: usize, close: char| {
        while at < chars.len() && chars[at] != close {
            at = if matches!(chars[at], '"' | '\'' | '`') {
                skip_string(at)
            } else {
                at + 1
            };
        }
        at + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(i);
        } else if c == '{' {
            i = skip_group(i, '}');
        } else if c == '[' {
            i = skip_group(i, ']');
        } else if c.is_ascii_digit() || c == '.' || c == '$' {
            // A number, a duration or a Grafana variable.
            i += 1;
            while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_word(c) {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if called {
                    i = skip_group(next, ')');
                }
            } else if called || AGGREGATIONS.contains(&word.as_str()) {
                rated = RATE_FUNCTIONS.contains(&word.as_str());
            } else if !KEYWORDS.contains(&word.as_str()) {
                out.push(Reference { name: word, rated });
                rated = false;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every PromQL expression of the dashboard: the panels' `targets[].expr`
/// (nested rows included) and the query variables' metric selectors.
fn expressions(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels(list: &serde_json::Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a target without expr: {target}"));
                out.push(expr.to_owned());
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_else(|| panic!("a query variable without a query: {variable}"));
        // `label_values(selector, label)`: only the selector is PromQL.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map_or(query, |(selector, _label)| selector);
        out.push(selector.to_owned());
    }
    out
}

/// Why `name` is not something the exposition serves, if it is not.
fn check(reference: &Reference, families: &BTreeMap<String, String>) -> Result<(), String> {
    let name = reference.name.as_str();
    let kind = match families.get(name).map(String::as_str) {
        Some("histogram") => {
            return Err(format!(
                "{name} is a histogram: read {name}_bucket, _sum or _count"
            ));
        }
        Some(kind) => kind,
        None => {
            let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let stem = name.strip_suffix(suffix)?;
                (families.get(stem).map(String::as_str) == Some("histogram")).then_some(stem)
            });
            match histogram {
                // A histogram's series are cumulative counters.
                Some(_) => "counter",
                None => return Err(format!("{name} is not served by /metrics")),
            }
        }
    };
    if reference.rated && kind != "counter" {
        return Err(format!("rate() of {name}, a {kind}"));
    }
    Ok(())
}

#[test]
fn the_parser_finds_metric_names_only() {
    let names = |expr: &str| -> Vec<(String, bool)> {
        references(expr)
            .into_iter()
            .map(|r| (r.name, r.rated))
            .collect()
    };
    assert_eq!(
        names(
            "histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{x=\"}by(\",y=~'$z'}[5m]))) \
             / on (instance) group_left(version) b offset 1h > bool 1e3 and c:d"
        ),
        [
            ("a_bucket".to_owned(), true),
            ("b".to_owned(), false),
            ("c:d".to_owned(), false)
        ]
    );
    assert_eq!(
        names("sum without(path) (increase(x_total[$__rate_interval])) - time()"),
        [("x_total".to_owned(), true)]
    );
}

#[test]
fn the_checks_tell_histograms_and_counters_apart() {
    let families = families();
    let reference = |name: &str, rated| Reference {
        name: name.to_owned(),
        rated,
    };
    let ok = |name, rated| check(&reference(name, rated), &families);
    assert_eq!(ok("turnpike_requests_total", true), Ok(()));
    assert_eq!(
        ok("turnpike_allocation_duration_seconds_bucket", true),
        Ok(())
    );
    assert_eq!(
        ok("turnpike_database_lookup_duration_seconds_count", false),
        Ok(())
    );
    assert!(ok("turnpike_allocation_duration_seconds", false).is_err());
    assert!(ok("turnpike_requests_total_count", false).is_err());
    assert!(ok("turnpike_workers_bucket", false).is_err());
    assert!(ok("turnpike_workers", true).is_err());
    assert!(ok("turnpike_no_such_metric", false).is_err());
}

#[test]
fn every_metric_the_dashboard_reads_is_served() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    assert_eq!(dashboard["uid"], "turnpike");
    let families = families();
    let expressions = expressions(&dashboard);
    assert!(expressions.len() >= 15, "{expressions:?}");
    let mut problems = Vec::new();
    let mut read = 0;
    for expr in &expressions {
        let references = references(expr);
        if references.is_empty() {
            problems.push(format!("no metric in {expr:?}"));
        }
        for reference in references {
            read += 1;
            if let Err(problem) = check(&reference, &families) {
                problems.push(format!("{problem} (in {expr:?})"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(read >= expressions.len());
    // The panels the dashboard promises.
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for title in [
        "Current allocations by transport",
        "Relay bandwidth",
        "Error responses by code",
        "Authentication failures by reason",
        "Handshake failures",
        "Database up",
        "Database lookup latency (p99)",
        "Dropped packets by reason",
        "Workers",
    ] {
        assert!(titles.contains(&title), "no panel {title:?} in {titles:?}");
    }
}

/// Every expression is valid PromQL, by Prometheus' own parser: `promtool
/// check rules` on a rule file recording each one (with Grafana's
/// `$__rate_interval` replaced by a duration, as Grafana does).
#[test]
fn every_expression_is_valid_promql() {
    use std::fmt::Write as _;

    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in expressions(&dashboard).iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m");
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(&expr).expect("a string serializes");
        let _ = write!(
            rules,
            "      - record: dashboard:expression_{i}\n        expr: {quoted}\n"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).expect("write the rule file");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian package prometheus (scripts/test does)"
            )
        });
    assert!(
        out.status.success(),
        "promtool check rules: {}\n{}{}\non\n{rules}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
