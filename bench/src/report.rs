//! Results: the metrics of one measurement, medians over rounds, and the comparison table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::driver::System;

/// Which direction of a metric is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (latency, memory, time).
    Lower,
    /// Context only (CPU used, say).
    Neither,
}

/// One number of one measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// What it is, with its unit.
    pub name: &'static str,
    /// The value.
    pub value: f64,
    /// Which way is good.
    pub better: Better,
}

/// Everything one measurement of one system found.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// The numbers, in the order they are reported.
    pub metrics: Vec<Metric>,
}

impl Measurement {
    /// Adds a metric.
    pub fn push(&mut self, name: &'static str, value: f64, better: Better) {
        self.metrics.push(Metric {
            name,
            value,
            better,
        });
    }

    /// One line for the progress log.
    pub fn one_line(&self) -> String {
        self.metrics
            .iter()
            .map(|m| format!("{} {}", m.name, fmt(m.value)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The median; the mean of the two middle values for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// A number with a sensible amount of precision.
pub fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Results of every round, per system.
#[derive(Debug, Default)]
pub struct Results {
    /// The systems in the order they are reported (the first is the one ratios are taken of).
    pub systems: Vec<System>,
    /// Per system, the measurement of each round that succeeded.
    pub runs: BTreeMap<&'static str, Vec<Measurement>>,
    /// Per system, the errors of rounds that failed.
    pub errors: BTreeMap<&'static str, Vec<String>>,
}

impl Results {
    /// The Markdown table: one row per metric, the median of each system, and the ratio of the
    /// first system to every other.
    pub fn table(&self) -> String {
        let Some(&base) = self.systems.first() else {
            return String::new();
        };
        let mut names: Vec<(&'static str, Better)> = Vec::new();
        for ms in self.runs.values() {
            for m in ms.iter().flat_map(|m| &m.metrics) {
                if !names.iter().any(|(n, _)| *n == m.name) {
                    names.push((m.name, m.better));
                }
            }
        }
        let median_of = |system: System, name: &str| {
            let values: Vec<f64> = self
                .runs
                .get(system.name())
                .into_iter()
                .flatten()
                .flat_map(|m| &m.metrics)
                .filter(|m| m.name == name)
                .map(|m| m.value)
                .collect();
            median(&values)
        };
        let mut out = String::from("| metric | better |");
        for s in &self.systems {
            let n = self.runs.get(s.name()).map_or(0, Vec::len);
            let _ = write!(out, " {} (median of {n}) |", s.name());
        }
        for s in &self.systems[1..] {
            let _ = write!(out, " {}/{} |", base.name(), s.name());
        }
        out.push_str("\n| --- | --- |");
        for _ in 0..self.systems.len() * 2 - 1 {
            out.push_str(" ---: |");
        }
        out.push('\n');
        for (name, better) in names {
            let arrow = match better {
                Better::Higher => "higher",
                Better::Lower => "lower",
                Better::Neither => "",
            };
            let _ = write!(out, "| {name} | {arrow} |");
            let medians: Vec<Option<f64>> =
                self.systems.iter().map(|&s| median_of(s, name)).collect();
            for m in &medians {
                let _ = write!(out, " {} |", m.map_or("failed".into(), fmt));
            }
            for m in &medians[1..] {
                let ratio = match (medians[0], m) {
                    (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}×", a / b),
                    _ => "–".into(),
                };
                let _ = write!(out, " {ratio} |");
            }
            out.push('\n');
        }
        for (system, errors) in &self.errors {
            for e in errors {
                let _ = writeln!(out, "\n{system}: round failed: {e}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt(1234567.4), "1,234,567");
        assert_eq!(fmt(-1234.0), "-1,234");
        assert_eq!(fmt(123.4), "123");
        assert_eq!(fmt(12.34), "12.3");
        assert_eq!(fmt(1.234), "1.23");
        assert_eq!(fmt(0.01234), "0.012");
    }

    #[test]
    fn table_has_medians_and_ratios() {
        let mut r = Results {
            systems: vec![System::Runwire, System::NodeWs],
            ..Results::default()
        };
        for (sys, vals) in [
            ("runwire", [30.0, 10.0, 20.0]),
            ("node-ws", [5.0, 5.0, 6.0]),
        ] {
            for v in vals {
                let mut m = Measurement::default();
                m.push("events/s", v, Better::Higher);
                r.runs.entry(sys).or_default().push(m);
            }
        }
        r.errors.insert("node-ws", vec!["boom".into()]);
        let t = r.table();
        assert!(
            t.contains("| events/s | higher | 20.0 | 5.00 | 4.00× |"),
            "{t}"
        );
        assert!(t.contains("node-ws: round failed: boom"), "{t}");
    }
}
