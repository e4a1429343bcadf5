//! The process's metrics recorder and its Prometheus text exposition.
//!
//! Counters and gauges are atomics; histograms have fixed buckets ([`BUCKETS`]) counted by
//! atomics as samples arrive, so nothing accumulates between scrapes and a scrape only reads.
//! Rendering writes straight into one buffer per metric family: 1,000 tenants and 50 pools
//! export ~90,000 series, which a general-purpose exporter took ~120 ms to render (hashing and
//! allocating per series; `bench/scrape.sh`); this takes a fraction of that. Help text comes
//! from the [`crate::metrics_catalog`].

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{Registry, Storage};

use crate::metrics_catalog::{Kind, METRICS};

/// Upper bounds of every histogram's buckets, in seconds (a `+Inf` bucket follows).
pub const BUCKETS: [f64; 19] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// A histogram: a count per bucket (not cumulative; the last is `+Inf`) and the sum.
pub struct Buckets {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum: AtomicU64,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0f64.to_bits()) }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // Bucket `le` holds values ≤ le; NaN goes to +Inf.
        let i = BUCKETS.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some((f64::from_bits(s) + value).to_bits()));
    }
}

struct Atomics;

impl Storage<Key> for Atomics {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<Buckets>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::new(AtomicU64::new(0))
    }
    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::new(AtomicU64::new(0f64.to_bits()))
    }
    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::new(Buckets::new())
    }
}

/// The recorder (install it with `metrics::set_global_recorder`) and, cloned, the handle that
/// renders what it holds.
#[derive(Clone)]
pub struct Exporter(Arc<Registry<Key, Atomics>>);

impl Default for Exporter {
    fn default() -> Self {
        Exporter(Arc::new(Registry::new(Atomics)))
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Recorder for Exporter {
    // Help text comes from the catalog.
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0.get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

static HELP: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| METRICS.iter().map(|m| (m.name, m.help)).collect());

/// `le` label values, written once.
static LE: LazyLock<Vec<String>> = LazyLock::new(|| BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_owned()]).collect());

impl Exporter {
    /// Calls `f` with the name, labels and value of every counter and gauge (the metric
    /// history samples the server's figures from here).
    pub fn each_value(&self, mut f: impl FnMut(&str, &Key, f64)) {
        self.0.visit_counters(|k, c| f(k.name(), k, c.load(Ordering::Relaxed) as f64));
        self.0.visit_gauges(|k, g| f(k.name(), k, f64::from_bits(g.load(Ordering::Relaxed))));
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric registered so far,
    /// families sorted by name.
    pub fn render(&self) -> String {
        let mut families: HashMap<String, (Kind, String)> = HashMap::new();
        self.0.visit_counters(|k, c| {
            let out = family(&mut families, k.name(), Kind::Counter);
            sample(out, k.name(), "", k, None);
            let _ = writeln!(out, " {}", c.load(Ordering::Relaxed));
        });
        self.0.visit_gauges(|k, g| {
            let out = family(&mut families, k.name(), Kind::Gauge);
            sample(out, k.name(), "", k, None);
            out.push(' ');
            float(out, f64::from_bits(g.load(Ordering::Relaxed)));
            out.push('\n');
        });
        self.0.visit_histograms(|k, h| {
            let out = family(&mut families, k.name(), Kind::Histogram);
            let mut total = 0;
            for (i, le) in LE.iter().enumerate() {
                total += h.counts[i].load(Ordering::Relaxed);
                sample(out, k.name(), "_bucket", k, Some(le));
                let _ = writeln!(out, " {total}");
            }
            sample(out, k.name(), "_sum", k, None);
            out.push(' ');
            float(out, f64::from_bits(h.sum.load(Ordering::Relaxed)));
            out.push('\n');
            sample(out, k.name(), "_count", k, None);
            let _ = writeln!(out, " {total}");
        });
        let mut names: Vec<&String> = families.keys().collect();
        names.sort();
        let mut text = String::with_capacity(families.values().map(|(_, b)| b.len() + 200).sum());
        for name in names {
            let (kind, body) = &families[name];
            if let Some(help) = HELP.get(name.as_str()) {
                let _ = writeln!(text, "# HELP {name} {help}");
            }
            let _ = writeln!(text, "# TYPE {name} {}", kind.as_str());
            text.push_str(body);
            text.push('\n');
        }
        text
    }
}

/// The buffer of the family `name`, made on its first sample.
fn family<'a>(families: &'a mut HashMap<String, (Kind, String)>, name: &str, kind: Kind) -> &'a mut String {
    if !families.contains_key(name) {
        families.insert(name.to_owned(), (kind, String::new()));
    }
    &mut families.get_mut(name).expect("inserted above").1
}

/// `name{labels}` of one sample, `le` last for a bucket.
fn sample(out: &mut String, name: &str, suffix: &str, key: &Key, le: Option<&str>) {
    out.push_str(name);
    out.push_str(suffix);
    let mut labels = key.labels().peekable();
    if labels.peek().is_none() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for l in labels {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(l.key());
        out.push_str("=\"");
        escape(out, l.value());
        out.push('"');
    }
    if let Some(le) = le {
        if !first {
            out.push(',');
        }
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
    }
    out.push('}');
}

fn escape(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_family_once_with_its_type_and_escaped_labels() {
        let e = Exporter::default();
        metrics::with_local_recorder(&e, || {
            metrics::counter!("hodei_jobs_submitted_total", "tenant" => "a\"b", "priority" => "normal").increment(3);
            metrics::counter!("hodei_jobs_submitted_total", "tenant" => "c", "priority" => "high").increment(1);
            metrics::gauge!("hodei_scheduler_leader").set(1.0);
            metrics::gauge!("hodei_tenant_fair_share", "tenant" => "c").set(f64::NAN);
            let h = metrics::histogram!("hodei_dispatch_latency_seconds", "pool" => "p");
            for v in [0.0005, 0.0006, 2.0, 7200.0] {
                h.record(v);
            }
        });
        let text = e.render();
        assert_eq!(text.matches("# TYPE hodei_jobs_submitted_total counter").count(), 1, "{text}");
        assert!(text.contains("# HELP hodei_jobs_submitted_total Jobs accepted"), "{text}");
        assert!(text.contains(r#"hodei_jobs_submitted_total{tenant="a\"b",priority="normal"} 3"#), "{text}");
        assert!(text.contains("hodei_scheduler_leader 1\n"), "{text}");
        assert!(text.contains(r#"hodei_tenant_fair_share{tenant="c"} NaN"#), "{text}");
        // Cumulative buckets: 0.0005 holds the sample equal to its bound.
        assert!(text.contains(r#"hodei_dispatch_latency_seconds_bucket{pool="p",le="0.0005"} 1"#), "{text}");
        assert!(text.contains(r#"hodei_dispatch_latency_seconds_bucket{pool="p",le="0.001"} 2"#), "{text}");
        assert!(text.contains(r#"hodei_dispatch_latency_seconds_bucket{pool="p",le="2.5"} 3"#), "{text}");
        assert!(text.contains(r#"hodei_dispatch_latency_seconds_bucket{pool="p",le="3600"} 3"#), "{text}");
        assert!(text.contains(r#"hodei_dispatch_latency_seconds_bucket{pool="p",le="+Inf"} 4"#), "{text}");
        assert!(text.contains(r#"hodei_dispatch_latency_seconds_count{pool="p"} 4"#), "{text}");
        assert!(text.contains(r#"hodei_dispatch_latency_seconds_sum{pool="p"} 7202.0011"#), "{text}");
        // Families come sorted by name.
        let order: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }
}
