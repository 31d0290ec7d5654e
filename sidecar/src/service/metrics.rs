//! `/metrics`: the sidecar's counters in the OpenMetrics text format, encoded by the Prometheus
//! org's `prometheus-client`. Nothing is counted here: a [`Collector`] reads a
//! [`MetricsSnapshot`] of `stats::GlobalStats` at each scrape (the same atomics STATS reports),
//! so the hot path never touches the client library's own metric types (its histogram takes a
//! lock per observation).
//!
//! Families (all prefixed `shmpipe_`; OpenMetrics adds `_total` to counter samples):
//! `requests_total{op,status}`, `request_duration_seconds{op}` (histogram), `bytes_in_total`,
//! `bytes_out_total`, `slots{state}`, `clients`, `sessions_total`, `segments_live`,
//! `slots_reclaimed_total`, `async_in_flight`, `ring_full_waits_total{ring}`,
//! `protocol_violations_total`, `store_errors_total{kind}`, `store_retries_total`,
//! `build_info{version}`. Every label combination is always present, zeros included.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::stats::{
    self, GlobalStats, MetricsSnapshot, Ring, StoreErrorKind, LATENCY_BOUNDS_NS, OP_LABELS, SLOT_STATES, STATUSES,
};

/// The content type of [`Metrics::encode`]'s output (what prometheus-client documents for its
/// text encoder).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PREFIX: &str = "shmpipe";

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(global: Arc<GlobalStats>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(SidecarCollector { global }));
        Self { registry }
    }

    /// One scrape: the whole exposition, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(32 << 10);
        // Writing into a String cannot fail; an Err would be a bug in an encoder.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

#[derive(Debug)]
struct SidecarCollector {
    global: Arc<GlobalStats>,
}

fn counter(m: MetricEncoder, v: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(m)
}

fn gauge(m: MetricEncoder, v: u64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(m)
}

/// Label value of the build: the crate version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Collector for SidecarCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s: MetricsSnapshot = self.global.metrics_snapshot();

        let mut fam = enc.encode_descriptor(
            "requests",
            "Requests completed, by op and status (ok or the SHMPIPE_E_* code); op unknown = refused before its opcode was known",
            None,
            MetricType::Counter,
        )?;
        for op in 0..OP_LABELS {
            for status in 0..STATUSES {
                let labels = [("op", stats::op_label_name(op)), ("status", stats::status_label_name(status))];
                counter(fam.encode_family(&labels)?, s.completions[op][status])?;
            }
        }

        let seconds = Unit::Seconds;
        let mut fam = enc.encode_descriptor(
            "request_duration",
            "From the dispatcher turn that took a request off the SQ to the turn that posted its completion",
            Some(&seconds),
            MetricType::Histogram,
        )?;
        for op in 0..OP_LABELS {
            let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_NS
                .iter()
                .map(|ns| *ns as f64 / 1e9)
                .chain([f64::INFINITY])
                .zip(s.latency[op])
                .collect();
            let count = s.latency[op].iter().sum();
            let sum = s.latency_sum_ns[op] as f64 / 1e9;
            fam.encode_family(&[("op", stats::op_label_name(op))])?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        counter(enc.encode_descriptor("bytes_in", "Payload bytes the sidecar read from slots (ECHO)", None, MetricType::Counter)?, s.bytes_in)?;
        counter(
            enc.encode_descriptor("bytes_out", "Payload bytes the sidecar wrote to slots (STATS documents)", None, MetricType::Counter)?,
            s.bytes_out,
        )?;

        let mut fam = enc.encode_descriptor(
            "slots",
            "Slots of running sessions by state: free (sidecar's), granted (in the GQ or held by the agent), in_flight (named by a running request)",
            None,
            MetricType::Gauge,
        )?;
        for (state, v) in SLOT_STATES.iter().zip(s.slots) {
            gauge(fam.encode_family(&[("state", *state)])?, v)?;
        }

        gauge(enc.encode_descriptor("clients", "Connected clients (from an accepted hello until the session ends)", None, MetricType::Gauge)?, s.clients)?;
        counter(enc.encode_descriptor("sessions", "Sessions opened", None, MetricType::Counter)?, s.sessions_total)?;
        gauge(enc.encode_descriptor("segments_live", "Segments mapped by the sidecar", None, MetricType::Gauge)?, s.segments_live)?;
        counter(
            enc.encode_descriptor("slots_reclaimed", "Slots taken back from agents when their session ended", None, MetricType::Counter)?,
            s.slots_reclaimed_total,
        )?;
        gauge(
            enc.encode_descriptor("async_in_flight", "Async ops (DELAY, ECHO over 64 KiB) running", None, MetricType::Gauge)?,
            s.async_in_flight,
        )?;

        let mut fam = enc.encode_descriptor(
            "ring_full_waits",
            "cq: completions that waited in the overflow queue because the CQ was full; gq: grant top-ups cut short by a full GQ",
            None,
            MetricType::Counter,
        )?;
        for (ring, v) in Ring::ALL.iter().zip(s.ring_full_waits) {
            counter(fam.encode_family(&[("ring", ring.name())])?, v)?;
        }

        counter(
            enc.encode_descriptor("protocol_violations", "Sessions closed because the agent broke the ring invariants", None, MetricType::Counter)?,
            s.protocol_violations,
        )?;

        let mut fam = enc.encode_descriptor("store_errors", "Failed object store operations by kind", None, MetricType::Counter)?;
        for (kind, v) in StoreErrorKind::ALL.iter().zip(s.store_errors) {
            counter(fam.encode_family(&[("kind", kind.name())])?, v)?;
        }
        counter(enc.encode_descriptor("store_retries", "Object store requests retried", None, MetricType::Counter)?, s.store_retries)?;

        gauge(
            enc.encode_descriptor("build_info", "The sidecar build; always 1", None, MetricType::Gauge)?.encode_family(&[("version", VERSION)])?,
            1,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_protocol::{ErrorCode, Opcode};

    fn sample<'a>(text: &'a str, name_and_labels: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
    }

    #[test]
    fn empty_registry_lists_every_family_with_zeros() {
        let text = Metrics::new(Arc::new(GlobalStats::default())).encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for (family, kind) in [
            ("requests", "counter"),
            ("request_duration_seconds", "histogram"),
            ("bytes_in", "counter"),
            ("bytes_out", "counter"),
            ("slots", "gauge"),
            ("clients", "gauge"),
            ("sessions", "counter"),
            ("ring_full_waits", "counter"),
            ("protocol_violations", "counter"),
            ("store_errors", "counter"),
            ("store_retries", "counter"),
            ("build_info", "gauge"),
        ] {
            assert!(text.contains(&format!("# TYPE shmpipe_{family} {kind}\n")), "{family}\n{text}");
            assert!(text.contains(&format!("# HELP shmpipe_{family} ")), "{family}");
        }
        assert!(text.contains("# UNIT shmpipe_request_duration_seconds seconds\n"));
        assert_eq!(sample(&text, r#"shmpipe_requests_total{op="nop",status="ok"}"#), Some("0"));
        assert_eq!(sample(&text, r#"shmpipe_requests_total{op="unknown",status="SHMPIPE_E_MALFORMED"}"#), Some("0"));
        assert_eq!(sample(&text, r#"shmpipe_store_errors_total{kind="unavailable"}"#), Some("0"));
        assert_eq!(sample(&text, r#"shmpipe_ring_full_waits_total{ring="gq"}"#), Some("0"));
        assert_eq!(sample(&text, r#"shmpipe_slots{state="in_flight"}"#), Some("0"));
        assert_eq!(sample(&text, &format!(r#"shmpipe_build_info{{version="{VERSION}"}}"#)), Some("1"));
        let requests = text.lines().filter(|l| l.starts_with("shmpipe_requests_total{")).count();
        assert_eq!(requests, OP_LABELS * STATUSES);
    }

    #[test]
    fn values_and_labels_follow_the_counters() {
        let g = Arc::new(GlobalStats::default());
        g.completion(Some(Opcode::Echo), ErrorCode::InvalidSlot.status());
        g.completion(Some(Opcode::Echo), 0);
        g.completion(Some(Opcode::Echo), 0);
        g.observe_latency(stats::op_label(Some(Opcode::Nop)), 700, 3);
        g.observe_latency(stats::op_label(Some(Opcode::Nop)), 20_000_000_000, 1);
        g.adjust_slots([0; 3], [5, 2, 1]);
        g.store_error(StoreErrorKind::NotFound);
        g.store_retry();
        let text = Metrics::new(g).encode();
        assert_eq!(sample(&text, r#"shmpipe_requests_total{op="echo",status="ok"}"#), Some("2"));
        assert_eq!(sample(&text, r#"shmpipe_requests_total{op="echo",status="SHMPIPE_E_INVALID_SLOT"}"#), Some("1"));
        // Buckets are cumulative; le in seconds; +Inf equals the count.
        assert_eq!(sample(&text, r#"shmpipe_request_duration_seconds_bucket{le="5e-7",op="nop"}"#), Some("0"));
        assert_eq!(sample(&text, r#"shmpipe_request_duration_seconds_bucket{le="0.000001",op="nop"}"#), Some("3"));
        assert_eq!(sample(&text, r#"shmpipe_request_duration_seconds_bucket{le="10.0",op="nop"}"#), Some("3"));
        assert_eq!(sample(&text, r#"shmpipe_request_duration_seconds_bucket{le="+Inf",op="nop"}"#), Some("4"));
        assert_eq!(sample(&text, r#"shmpipe_request_duration_seconds_count{op="nop"}"#), Some("4"));
        let sum: f64 = sample(&text, r#"shmpipe_request_duration_seconds_sum{op="nop"}"#).unwrap().parse().unwrap();
        assert!((sum - 20.0000021).abs() < 1e-9, "{sum}");
        assert_eq!(sample(&text, r#"shmpipe_slots{state="free"}"#), Some("5"));
        assert_eq!(sample(&text, r#"shmpipe_store_errors_total{kind="not_found"}"#), Some("1"));
        assert_eq!(sample(&text, "shmpipe_store_retries_total"), Some("1"));
    }
}
