//! `hearth bench --out` charts (SVG, drawn with plotters): speed against file size, KL divergence
//! against file size, and local against cloud cost per 1M generated tokens.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::MIB;
use super::compare::Bench;

type Res = Result<(), Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (760, 460);
const PP: RGBColor = RGBColor(31, 119, 180);
const TG: RGBColor = RGBColor(214, 39, 40);
const LOCAL: RGBColor = RGBColor(44, 160, 44);
const CLOUD: RGBColor = RGBColor(127, 127, 127);

/// Writes `speed_vs_size.svg`, `kl_vs_size.svg` and `cost_per_1m.svg` into `dir`.
pub fn write_all(b: &Bench, dir: &Path) -> Result<(), String> {
    let run = |name: &str, f: &dyn Fn(&Bench, &Path) -> Res| f(b, &dir.join(name)).map_err(|e| format!("drawing {name}: {e}"));
    run("speed_vs_size.svg", &speed_vs_size)?;
    run("kl_vs_size.svg", &kl_vs_size)?;
    run("cost_per_1m.svg", &cost_per_1m)
}

fn upper(v: impl Iterator<Item = f64>) -> f64 {
    let m = v.fold(0.0, f64::max);
    if m > 0.0 {
        m * 1.2
    } else {
        1.0
    }
}

/// A labelled scatter of (size, value) per variant, one series per `(label, colour, value)`.
fn scatter(b: &Bench, path: &Path, title: &str, y_desc: &str, series: &[(&str, RGBColor, &dyn Fn(usize) -> f64)]) -> Res {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let size = |i: usize| b.variants[i].file_bytes as f64 / MIB;
    let n = b.variants.len();
    let xmax = upper((0..n).map(size));
    let ymax = upper(series.iter().flat_map(|(_, _, f)| (0..n).map(f)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
    chart.configure_mesh().x_desc("file size (MiB)").y_desc(y_desc).draw()?;
    for &(label, colour, f) in series {
        chart
            .draw_series((0..n).map(|i| Circle::new((size(i), f(i)), 6, colour.filled())))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
        chart.draw_series((0..n).map(|i| Text::new(b.variants[i].file_type.clone(), (size(i), f(i)), ("sans-serif", 13))))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn speed_vs_size(b: &Bench, path: &Path) -> Res {
    let pp = format!("prompt (pp{})", b.pp);
    let tg = format!("generation (tg{})", b.tg);
    scatter(
        b,
        path,
        &format!("Speed vs size · {} threads", b.threads),
        "tokens/s",
        &[(&pp, PP, &|i| b.variants[i].speed.pp_tps), (&tg, TG, &|i| b.variants[i].speed.tg_tps)],
    )
}

fn kl_vs_size(b: &Bench, path: &Path) -> Res {
    let reference = b.variants.iter().find(|v| v.reference).map_or("", |v| v.name.as_str());
    scatter(
        b,
        path,
        &format!("KL divergence vs size · against {reference}"),
        "KL divergence (nats)",
        &[("mean KL", TG, &|i| b.variants[i].quality.kl_mean), ("99th percentile / 10", PP, &|i| b.variants[i].quality.kl_p99 / 10.0)],
    )
}

fn cost_per_1m(b: &Bench, path: &Path) -> Res {
    let mut bars: Vec<(String, f64, RGBColor)> =
        b.variants.iter().map(|v| (format!("local {}", v.file_type), v.local_per_1m.total, LOCAL)).collect();
    bars.extend(b.cloud.iter().map(|c| (c.id.clone(), c.output_per_1m, CLOUD)));
    bars.retain(|(_, v, _)| *v > 0.0 && v.is_finite());
    let lo = bars.iter().map(|b| b.1).fold(f64::INFINITY, f64::min).min(1.0) / 3.0;
    let hi = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(lo * 10.0) * 3.0;
    let n = bars.len();
    let root = SVGBackend::new(path, (SIZE.0, 120 + 28 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Cost of 1M generated tokens ({}, log scale)", b.currency), ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bars.get(*i).map_or(String::new(), |b| b.0.clone()),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .x_desc(format!("{} per 1M generated tokens", b.currency))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, colour))| {
        let mut r = Rectangle::new([(lo, SegmentValue::Exact(i)), (*v, SegmentValue::Exact(i + 1))], colour.filled());
        r.set_margin(4, 4, 0, 0);
        r
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, _))| {
        let text = if *v >= 1.0 { format!("{v:.2}") } else { format!("{v:.3}") };
        Text::new(text, (*v * 1.08, SegmentValue::CenterOf(i)), ("sans-serif", 12))
    }))?;
    root.present()?;
    Ok(())
}

/// `pass1_vs_cost.svg`: each variant's pass@1 against its local cost per solved problem, with the
/// cloud models that have a published pass@1 as points (their cost per solved for the same tokens).
pub fn write_tasks(results: &[super::tasks::TaskResult], dir: &Path) -> Result<(), String> {
    let path = dir.join("pass1_vs_cost.svg");
    tasks_chart(results, &path).map_err(|e| format!("drawing pass1_vs_cost.svg: {e}"))
}

fn tasks_chart(results: &[super::tasks::TaskResult], path: &Path) -> Res {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let local: Vec<(f64, f64, &str)> = results.iter().filter_map(|r| r.local_per_solved.map(|c| (c, r.pass_at_1 * 100.0, r.variant.as_str()))).collect();
    let cloud: Vec<(f64, f64, &str)> = results
        .first()
        .map(|r| r.cloud.iter().filter_map(|c| Some((c.per_solved?, c.pass_at_1? * 100.0, c.model.as_str()))).collect())
        .unwrap_or_default();
    let currency = results.first().map_or("USD", |r| r.currency.as_str());
    let xmax = upper(local.iter().chain(&cloud).map(|p| p.0));
    let mut chart = ChartBuilder::on(&root)
        .caption("pass@1 against cost per solved problem", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax, 0f64..100f64)?;
    chart.configure_mesh().x_desc(format!("cost per solved problem ({currency})")).y_desc("pass@1 (%)").draw()?;
    for (points, colour, label) in [(&local, LOCAL, "local (this machine)"), (&cloud, CLOUD, "cloud (published pass@1)")] {
        chart
            .draw_series(points.iter().map(|&(x, y, _)| Circle::new((x, y), 6, colour.filled())))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
        chart.draw_series(points.iter().map(|&(x, y, name)| Text::new(name.to_owned(), (x, y), ("sans-serif", 13))))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
