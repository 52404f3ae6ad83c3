//! The experiment's HTML report: one self-contained file (inline CSS and
//! SVG, no script, nothing fetched), so that it opens offline and can be
//! archived with the data it describes.

use std::fmt::Write as _;

use crate::stats::quantile;
use crate::{Comparison, Metric, RunMeasurement};

/// What a report shows besides the measurements.
pub struct ReportContext<'a> {
    pub title: &'a str,
    pub baseline: &'a str,
    /// Variants in the experiment file's order (the baseline first).
    pub variants: &'a [String],
    pub metrics: &'a [Metric],
    pub summaries: &'a [String],
    /// e.g. "2026-12-04 23:59 UTC, 5 repetitions, seed 7".
    pub details: &'a str,
}

/// The whole report as one HTML document.
pub fn html(context: &ReportContext<'_>, runs: &[RunMeasurement], comparisons: &[Comparison]) -> String {
    let mut page = String::new();
    let title = escape(context.title);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n<p class=\"details\">{}</p>\n",
        escape(context.details)
    );
    page.push_str("<h2>Verdict</h2>\n<ul>");
    for summary in context.summaries {
        let _ = write!(page, "<li>{}</li>", escape(summary));
    }
    page.push_str("</ul>\n<h2>Per metric</h2>\n<table><tr><th>metric</th><th>variant</th><th>median</th><th>baseline median</th><th>ratio (95% CI)</th><th>p</th><th>verdict</th></tr>\n");
    for comparison in comparisons {
        let ratio =
            comparison.ratio.map_or("—".to_owned(), |r| format!("{:.3} ({:.3}–{:.3})", r.ratio, r.low, r.high));
        let p = comparison.p_value.map_or("—".to_owned(), |p| format!("{p:.4}"));
        let _ = writeln!(
            page,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{ratio}</td><td>{p}</td><td>{}</td></tr>",
            if comparison.differs { "differs" } else { "same" },
            comparison.metric.name(),
            escape(&comparison.variant),
            escape(&comparison.metric.format(comparison.median)),
            escape(&comparison.metric.format(comparison.baseline_median)),
            escape(&comparison.verdict)
        );
    }
    page.push_str("</table>\n<h2>Plots</h2>\n");
    for &metric in context.metrics {
        let rows: Vec<(String, Vec<f64>)> = context
            .variants
            .iter()
            .map(|variant| {
                let values = runs
                    .iter()
                    .filter(|run| &run.variant == variant)
                    .filter_map(|run| run.metrics.get(&metric).copied())
                    .collect();
                (variant.clone(), values)
            })
            .collect();
        page.push_str(&strip_chart(&format!("{} per run", metric.name()), metric, &rows));
    }
    let durations: Vec<(String, Vec<f64>)> = context
        .variants
        .iter()
        .map(|variant| {
            let values =
                runs.iter().filter(|run| &run.variant == variant).flat_map(|run| run.item_durations.clone()).collect();
            (variant.clone(), values)
        })
        .collect();
    page.push_str(&box_chart("item durations (every attempt of every run)", &durations));
    page.push_str("<h2>Runs, in the order they ran</h2>\n<table><tr><th>#</th><th>variant</th><th>repetition</th><th>run</th><th>status</th>");
    for metric in context.metrics {
        let _ = write!(page, "<th>{}</th>", metric.name());
    }
    page.push_str("</tr>\n");
    let mut ordered: Vec<&RunMeasurement> = runs.iter().collect();
    ordered.sort_by_key(|run| run.order);
    for run in ordered {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            run.order,
            escape(&run.variant),
            run.repetition,
            escape(&run.run_id),
            escape(&run.status)
        );
        for metric in context.metrics {
            let value = run.metrics.get(metric).map_or("—".to_owned(), |value| metric.format(*value));
            let _ = write!(page, "<td>{}</td>", escape(&value));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
tr.differs td:last-child{font-weight:bold}.details{color:#555}svg{display:block;margin:1em 0}\
svg text{font-size:12px;fill:#222}";

const WIDTH: f64 = 640.0;
const LABEL: f64 = 120.0;
const ROW: f64 = 28.0;

/// One row of dots per variant (each run), with a tick at the median, on a
/// shared axis from 0: one self-contained SVG element, every label escaped
/// (the dashboard draws stored experiments with it too).
pub fn strip_chart(title: &str, metric: Metric, rows: &[(String, Vec<f64>)]) -> String {
    let max = rows.iter().flat_map(|(_, values)| values.iter().copied()).fold(0.0_f64, f64::max);
    let scale = |value: f64| LABEL + (WIDTH - LABEL - 20.0) * if max > 0.0 { value / max } else { 0.0 };
    let height = 40.0 + ROW * rows.len() as f64;
    let mut svg = open_svg(title, height);
    for (i, (label, values)) in rows.iter().enumerate() {
        let y = 34.0 + ROW * i as f64;
        let _ = write!(svg, "<text x=\"0\" y=\"{:.1}\">{}</text>", y + 4.0, escape(label));
        let _ = write!(
            svg,
            "<line x1=\"{LABEL}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>",
            WIDTH - 20.0
        );
        for value in values {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#3367d6\" fill-opacity=\"0.6\"><title>{}</title></circle>",
                scale(*value),
                escape(&metric.format(*value))
            );
        }
        if let Some(median) = quantile(values, 0.5) {
            let x = scale(median);
            let _ = write!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#d33\" stroke-width=\"2\"><title>median {}</title></line>",
                y - 9.0,
                y + 9.0,
                escape(&metric.format(median))
            );
        }
    }
    close_with_axis(&mut svg, height, &metric.format(max));
    svg
}

/// Box plots (5th, 25th, 50th, 75th, 95th percentiles) of item durations per variant.
fn box_chart(title: &str, rows: &[(String, Vec<f64>)]) -> String {
    let max = rows.iter().filter_map(|(_, values)| quantile(values, 0.95)).fold(0.0_f64, f64::max);
    let scale = |value: f64| LABEL + (WIDTH - LABEL - 20.0) * if max > 0.0 { (value / max).min(1.0) } else { 0.0 };
    let height = 40.0 + ROW * rows.len() as f64;
    let mut svg = open_svg(title, height);
    for (i, (label, values)) in rows.iter().enumerate() {
        let y = 34.0 + ROW * i as f64;
        let _ = write!(svg, "<text x=\"0\" y=\"{:.1}\">{} (n={})</text>", y + 4.0, escape(label), values.len());
        let q = |p: f64| quantile(values, p).map(scale);
        let (Some(p5), Some(p25), Some(p50), Some(p75), Some(p95)) = (q(0.05), q(0.25), q(0.5), q(0.75), q(0.95))
        else {
            continue;
        };
        let _ = write!(
            svg,
            "<line x1=\"{p5:.1}\" y1=\"{y:.1}\" x2=\"{p95:.1}\" y2=\"{y:.1}\" stroke=\"#555\"/>\
<rect x=\"{p25:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" fill=\"#9bb7ee\" stroke=\"#555\"/>\
<line x1=\"{p50:.1}\" y1=\"{:.1}\" x2=\"{p50:.1}\" y2=\"{:.1}\" stroke=\"#d33\" stroke-width=\"2\"/>",
            y - 8.0,
            (p75 - p25).max(1.0),
            y - 8.0,
            y + 8.0
        );
    }
    close_with_axis(&mut svg, height, &Metric::ItemP95.format(max));
    svg
}

/// An SVG of the report's width, titled.
fn open_svg(title: &str, height: f64) -> String {
    let title = escape(title);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"{title}\"><text x=\"0\" y=\"14\">{title}</text>"
    )
}

/// The axis' two ends (0 and the largest value shown) under the rows, and the end of the SVG.
fn close_with_axis(svg: &mut String, height: f64, max_label: &str) {
    let _ = writeln!(
        svg,
        "<text x=\"{LABEL}\" y=\"{:.1}\">0</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text></svg>",
        height - 4.0,
        WIDTH - 20.0,
        height - 4.0,
        escape(max_label)
    );
}

/// Text as HTML (and SVG) character data or a quoted attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_report_is_one_offline_document_with_escaped_text_and_a_plot_per_metric() {
        let run = |variant: &str, order: u32, makespan: f64| RunMeasurement {
            variant: variant.to_owned(),
            repetition: 1,
            order,
            run_id: format!("run-{order}"),
            status: "succeeded".to_owned(),
            metrics: BTreeMap::from([(Metric::Makespan, makespan)]),
            item_durations: vec![0.01, 0.02, 0.03],
        };
        let runs = vec![run("a<b>", 2, 2.0), run("base", 1, 1.0)];
        let variants = vec!["base".to_owned(), "a<b>".to_owned()];
        let context = ReportContext {
            title: "experiment <x>",
            baseline: "base",
            variants: &variants,
            metrics: &[Metric::Makespan],
            summaries: &["variant `a<b>` is slower".to_owned()],
            details: "1 repetition",
        };
        let page = html(&context, &runs, &[]);
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("<b>") && page.contains("a&lt;b&gt;"), "labels are escaped");
        for fetching in ["src=", "<link", "<script", "@import", "url("] {
            assert!(!page.contains(fetching), "nothing is fetched or run: {fetching}");
        }
        assert_eq!(page.matches("<svg").count(), 2, "one strip chart per metric and the item-duration box plot");
        assert!(page.find("run-1").unwrap() < page.find("run-2").unwrap(), "runs listed in the order they ran");
    }
}
