//! `GET /metrics`: a [`Snapshot`](super::Snapshot) in Prometheus' text format.
