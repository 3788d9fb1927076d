//! The `/dashboard` page: totals and three charts drawn on the server as inline SVG (cumulative
//! savings over time, requests per day, local against cloud cost per model), so it needs no
//! script, no network and no chart library.

use std::fmt::Write;

use crate::ledger::report::Summary;

pub const SAVED: &str = "#2e7d32";
pub const REQUESTS: &str = "#1565c0";
pub const LOCAL: &str = "#ef6c00";
pub const CLOUD: &str = "#6a1b9a";

const W: f64 = 640.0;
const H: f64 = 260.0;
const PAD_L: f64 = 70.0;
const PAD_R: f64 = 16.0;
const PAD_T: f64 = 16.0;
const PAD_B: f64 = 44.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Three significant digits, in plain decimals (0.000151 rather than 1.51e-4).
fn amount(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let decimals = (2 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    format!("{x:.decimals$}")
}

fn energy(j: f64) -> String {
    if j >= 1e3 {
        format!("{:.1} kJ", j / 1e3)
    } else {
        format!("{j:.1} J")
    }
}

/// The value range a chart's y axis spans: always including zero.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if hi - lo <= 0.0 {
        (lo, lo + 1.0)
    } else {
        (lo, hi)
    }
}

/// An empty chart with its y axis labelled from `lo` to `hi`; `y` maps a value to pixels.
fn axes(out: &mut String, label: &str, lo: f64, hi: f64) -> impl Fn(f64) -> f64 {
    let y = move |v: f64| PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B);
    let _ = write!(out, r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{}">"##, esc(label));
    let _ = write!(out, r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>"##);
    for v in [lo, (lo + hi) / 2.0, hi] {
        let py = y(v);
        let _ = write!(out, r##"<line x1="{PAD_L}" x2="{}" y1="{py}" y2="{py}" stroke="#ddd"/>"##, W - PAD_R);
        let _ = write!(out, r##"<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#444">{}</text>"##, PAD_L - 6.0, py + 4.0, amount(v));
    }
    y
}

fn x_label(out: &mut String, x: f64, text: &str) {
    let _ = write!(out, r##"<text x="{x}" y="{}" font-size="11" text-anchor="middle" fill="#444">{}</text>"##, H - PAD_B + 16.0, esc(text));
}

/// A line with a marker on every point.
pub fn line(label: &str, points: &[(String, f64)], color: &str) -> String {
    let mut out = String::new();
    let (lo, hi) = range(points.iter().map(|p| p.1));
    let y = axes(&mut out, label, lo, hi);
    let step = (W - PAD_L - PAD_R) / points.len().max(1) as f64;
    let x = |i: usize| PAD_L + step * (i as f64 + 0.5);
    let path: Vec<String> = points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.1))).collect();
    let _ = write!(out, r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="3"/>"##, path.join(" "));
    for (i, p) in points.iter().enumerate() {
        let _ = write!(out, r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{color}"><title>{}: {}</title></circle>"##, x(i), y(p.1), esc(&p.0), amount(p.1));
    }
    labels(&mut out, points.iter().map(|p| p.0.as_str()), &x);
    out.push_str("</svg>");
    out
}

/// Bars, one series per colour, grouped by key.
pub fn bars(label: &str, keys: &[String], series: &[(&str, Vec<f64>)]) -> String {
    let mut out = String::new();
    let (lo, hi) = range(series.iter().flat_map(|s| s.1.iter().copied()));
    let y = axes(&mut out, label, lo, hi);
    let step = (W - PAD_L - PAD_R) / keys.len().max(1) as f64;
    let width = (step * 0.7 / series.len().max(1) as f64).min(60.0);
    let x = |i: usize| PAD_L + step * (i as f64 + 0.5);
    for (i, key) in keys.iter().enumerate() {
        let left = x(i) - width * series.len() as f64 / 2.0;
        for (s, (color, values)) in series.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0.0);
            let (top, bottom) = (y(v.max(0.0)), y(v.min(0.0)));
            let _ = write!(
                out,
                r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"##,
                left + width * s as f64,
                width - 2.0,
                (bottom - top).max(1.0),
                esc(key),
                amount(v)
            );
        }
    }
    labels(&mut out, keys.iter().map(String::as_str), &x);
    out.push_str("</svg>");
    out
}

/// Labels under the x axis, thinned so that they do not overlap.
fn labels<'a>(out: &mut String, keys: impl ExactSizeIterator<Item = &'a str>, x: &impl Fn(usize) -> f64) {
    let every = keys.len().div_ceil(8).max(1);
    for (i, k) in keys.enumerate().filter(|(i, _)| i % every == 0) {
        x_label(out, x(i), k);
    }
}

/// The whole page.
/// A section of bars: local against the first comparator's cost for each group of `by`.
fn cost_section(out: &mut String, id: &str, noun: &str, by: &Summary, vs: &str, cur: &str) {
    let keys: Vec<String> = by.groups.iter().map(|g| if g.key.is_empty() { "(unnamed)".into() } else { g.key.clone() }).collect();
    let local: Vec<f64> = by.groups.iter().map(|g| g.local).collect();
    let cloud: Vec<f64> = by.groups.iter().map(|g| g.cloud.first().map_or(0.0, |c| c.amount)).collect();
    let _ = write!(
        out,
        r##"<section id="{id}"><h2>Local against {} cost per {noun} ({cur})</h2><div class="legend"><span style="background:{LOCAL}"></span>local<span style="background:{CLOUD}"></span>{}</div>{}</section>"##,
        esc(vs),
        esc(vs),
        bars(&format!("local and cloud cost per {noun}"), &keys, &[(LOCAL, local), (CLOUD, cloud)])
    );
}

pub fn page(days: &Summary, models: &Summary, instances: &Summary) -> String {
    let cur = &days.currency;
    let vs = days.vs.as_deref().unwrap_or("the cloud");
    let mut running = 0.0;
    let cumulative: Vec<(String, f64)> = days
        .groups
        .iter()
        .map(|g| {
            running += g.saved;
            (g.key.clone(), running)
        })
        .collect();
    let day_keys: Vec<String> = days.groups.iter().map(|g| g.key.clone()).collect();
    let requests: Vec<f64> = days.groups.iter().map(|g| g.totals.requests as f64).collect();
    let t = &days.total;
    let rates: String = days.rates.iter().map(|(c, r)| format!("; 1 {c} = {r} {cur}")).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="60">
<title>hearth — cost ledger</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}}section{{background:#fff;border:1px solid #e5e5e5;border-radius:8px;padding:12px 16px;margin:0 0 16px;display:inline-block;vertical-align:top}}
h1{{font-size:20px}}h2{{font-size:15px;margin:4px 0 8px}}.k{{font-size:22px;font-weight:600}}.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}</style></head><body>
<h1>hearth — what running locally saved</h1>
<p><span class="k" id="saved">{} {cur}</span> saved against {} over {} requests ({} prompt, {} cached and {} generated tokens; {}; local cost {} {cur}).
Amounts in {cur}{rates}.</p>"##,
        amount(t.saved),
        esc(vs),
        t.totals.requests,
        t.totals.prompt_tokens,
        t.totals.cached_tokens,
        t.totals.generated_tokens,
        energy(t.totals.energy_j),
        amount(t.local),
    );
    let _ = write!(out, r##"<section id="cumulative"><h2>Cumulative savings against {} ({cur})</h2>{}</section>"##, esc(vs), line("cumulative savings", &cumulative, SAVED));
    let _ = write!(out, r##"<section id="requests"><h2>Requests per day</h2>{}</section>"##, bars("requests per day", &day_keys, &[(REQUESTS, requests)]));
    cost_section(&mut out, "per-model", "model", models, vs, cur);
    // A fleet sharing one ledger: each server's share.
    if instances.groups.len() > 1 {
        cost_section(&mut out, "per-instance", "server", instances, vs, cur);
    }
    out.push_str("</body></html>\n");
    out
}
