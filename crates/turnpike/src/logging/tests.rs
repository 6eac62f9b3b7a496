//! Filter parsing (strict, one line when it fails) and the live subscriber's
//! changes of level and format.

use std::sync::Arc;

use super::*;

#[test]
fn valid_filters_parse() {
    for ok in ["info", "warn,turnpike_core=debug", "turnpike=trace", "off"] {
        parse_filter(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn invalid_filters_are_errors_not_panics() {
    for bad in ["info,turnpike=loud", "=info", "foo[bar"] {
        let err = parse_filter(bad).unwrap_err();
        assert!(!err.contains('\n'), "{bad}: {err}");
    }
}

/// Everything written, for the tests of a live subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Capture {
    type Writer = Capture;
    fn make_writer(&'w self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// The level and the format change while the subscriber runs, and a span
/// opened before the switch to JSON is written in JSON after it.
#[test]
fn level_and_format_change_live() {
    let capture = Capture::default();
    let (subscriber, control) = subscriber(
        parse_filter("info").unwrap(),
        false,
        LogFormat::Text,
        capture.clone(),
        false,
    );
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("worker", id = 3);
        let _entered = span.enter();
        tracing::debug!("hidden");
        tracing::info!(answer = 42, "shown");
        let text = capture.take();
        assert!(!text.contains("hidden"), "{text}");
        assert!(
            text.contains("INFO")
                && text.contains("worker{id=3}")
                && text.contains("shown answer=42"),
            "{text}"
        );

        assert_eq!(control.apply("debug", LogFormat::Json).unwrap(), None);
        tracing::debug!(answer = 43, "now seen");
        let json = capture.take();
        let line: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
        assert_eq!(line["level"], "DEBUG");
        assert_eq!(line["message"], "now seen");
        assert_eq!(line["answer"], 43);
        assert_eq!(line["span"]["id"], 3, "{json}");

        assert_eq!(control.apply("warn", LogFormat::Text).unwrap(), None);
        tracing::info!("quiet again");
        tracing::warn!("loud");
        let text = capture.take();
        assert!(
            !text.contains("quiet again") && text.contains("WARN"),
            "{text}"
        );
        assert!(!text.starts_with('{'), "{text}");

        // A filter that does not parse changes nothing.
        assert!(
            control
                .apply("info,turnpike=loud", LogFormat::Json)
                .is_err()
        );
        tracing::info!("still quiet");
        tracing::warn!("still text");
        let text = capture.take();
        assert!(
            !text.contains("still quiet") && text.contains("still text") && !text.starts_with('{'),
            "{text}"
        );
    });
}

/// With `RUST_LOG` in effect the level stays its own (the answer says
/// so), and the format still changes.
#[test]
fn rust_log_keeps_its_level() {
    let capture = Capture::default();
    let (subscriber, control) = subscriber(
        parse_filter("warn").unwrap(),
        true,
        LogFormat::Text,
        capture.clone(),
        false,
    );
    tracing::subscriber::with_default(subscriber, || {
        let note = control.apply("debug", LogFormat::Json).unwrap();
        assert!(note.is_some_and(|n| n.contains("RUST_LOG") && !n.contains('\n')));
        tracing::info!("hidden");
        tracing::warn!("shown");
        let json = capture.take();
        assert!(!json.contains("hidden"), "{json}");
        assert!(json.starts_with('{') && json.contains("shown"), "{json}");
    });
}
