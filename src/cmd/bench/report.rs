//! Bench output: a table for people, JSON for scripts, an SVG chart to glance at.

use std::fmt::Write as _;

use serde_json::json;

use super::runner::Measured;

/// MB/s, or `-` for operations that move no data (a metadata walk).
fn rate(m: &Measured) -> String {
    if m.bytes == 0 { "-".into() } else { format!("{:.0}", m.bytes as f64 / 1e6 / m.median()) }
}

/// Median time of the strata row a row is compared with.
fn pair_median(all: &[Measured], m: &Measured) -> Option<f64> {
    all.iter().find(|r| r.name == m.pair).map(Measured::median)
}

pub fn table(all: &[Measured], skipped: &[(String, String)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<70} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "tool", "median s", "min s", "max s", "MB/s", "vs strata", "peak RSS"
    );
    for m in all {
        let ratio = pair_median(all, m).map_or_else(|| "-".to_owned(), |p| format!("{:.2}x", m.median() / p));
        let rss = m.peak_rss_kb.map_or_else(|| "-".to_owned(), |k| format!("{:.0} MB", k as f64 / 1024.0));
        let _ = writeln!(
            out,
            "{:<70} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>10} {:>10}",
            m.name,
            m.median(),
            m.min(),
            m.max(),
            rate(m),
            ratio,
            rss
        );
    }
    for (tool, why) in skipped {
        let _ = writeln!(out, "{tool:<70} skipped: {why}");
    }
    let _ =
        writeln!(out, "vs strata = time / time of the strata row it is paired with (above 1.00x: strata is faster)");
    out
}

pub fn json(all: &[Measured], skipped: &[(String, String)], workload: serde_json::Value) -> serde_json::Value {
    let rows: Vec<_> = all
        .iter()
        .map(|m| {
            json!({"tool": m.name, "paired_with": m.pair, "seconds": m.seconds, "median_seconds": m.median(),
                   "min_seconds": m.min(), "max_seconds": m.max(), "megabytes_per_second": (m.bytes > 0).then(|| m.bytes as f64 / 1e6 / m.median()),
                   "ratio_to_strata": pair_median(all, m).map(|p| m.median() / p), "peak_rss_kb": m.peak_rss_kb})
        })
        .collect();
    let skipped: Vec<_> = skipped.iter().map(|(t, w)| json!({"tool": t, "why": w})).collect();
    json!({"workload": workload, "results": rows, "skipped": skipped})
}

/// A horizontal bar chart of MB/s, strata rows in one colour, peers in another. Written
/// by hand: a dozen rectangles do not need a plotting library.
pub fn svg(all: &[Measured], title: &str) -> String {
    let all: Vec<&Measured> = all.iter().filter(|m| m.bytes > 0).collect();
    let (row, left, width) = (28.0, 420.0, 420.0);
    let max = all.iter().map(|m| m.bytes as f64 / 1e6 / m.median()).fold(1.0, f64::max);
    let height = 60.0 + row * all.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(title),
        w = left + width + 90.0
    );
    for (i, m) in all.iter().enumerate() {
        let y = 44.0 + row * i as f64;
        let rate = m.bytes as f64 / 1e6 / m.median();
        let bar = (rate / max * width).max(1.0);
        let colour = if m.name.starts_with("strata") { "#2b6cb0" } else { "#a0aec0" };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left}\" y=\"{}\" width=\"{bar:.1}\" height=\"18\" fill=\"{colour}\"/>\n<text x=\"{}\" y=\"{}\">{rate:.0} MB/s</text>\n",
            left - 8.0,
            y + 14.0,
            escape(&m.name),
            y,
            left + bar + 6.0,
            y + 14.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
