//! Filter parsing: strict, and one line when it fails.

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
