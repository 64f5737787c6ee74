//! `cargo xtask plot RUN_DIR`: PNG charts of a training run's `metrics.jsonl`: loss, learning
//! rate and accuracy against the step, and the ROC curve of every verification record.
//!
//! Charts are drawn with plotters into an RGB buffer and written as PNG by `image` (temp name,
//! then rename). Text uses the DejaVu Sans shipped in `xtask/assets/fonts`, so no fontconfig or
//! system font is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, bail};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;
use plsc_train::records::{EvalRecord, LogRecord, Metrics};

/// Width of every chart, in pixels.
pub const WIDTH: u32 = 960;
/// Height of every chart, in pixels.
pub const HEIGHT: u32 = 600;

/// The font chart text is drawn with (DejaVu Sans 2.37; licence next to it).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
/// The family name charts ask for; the shipped font is registered under it.
const FAMILY: &str = "sans-serif";

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run directory written by `cargo xtask train` (holds metrics.jsonl, and config.toml for
    /// the chart titles).
    run_dir: PathBuf,
    /// Folder for the PNG files (created if missing). Default: the run directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Reads metrics.jsonl (`plsc_train::records::read_metrics`); a file without train records
/// has nothing to plot.
fn read_metrics(path: &Path) -> anyhow::Result<Metrics> {
    let m = plsc_train::records::read_metrics(path)
        .with_context(|| format!("cannot read the metrics file {}", path.display()))?;
    if m.train.is_empty() {
        bail!("{} holds no train records: nothing to plot", path.display());
    }
    Ok(m)
}

/// "run 20261129-073123: iresnet_tiny, dist_arcface, 8 classes" from the directory name and
/// config.toml (settings it lacks are left out; a missing or unreadable file gives the name only).
fn run_title(run_dir: &Path) -> String {
    let name = run_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| run_dir.display().to_string());
    let config = run_dir.join("config.toml");
    let table = match std::fs::read_to_string(&config) {
        Ok(text) => match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{}: {e}; titles without settings", config.display());
                return format!("run {name}");
            }
        },
        Err(_) => return format!("run {name}"),
    };
    let mut parts = Vec::new();
    for key in ["model", "loss"] {
        if let Some(v) = table.get(key).and_then(|v| v.as_str()) {
            parts.push(v.to_string());
        }
    }
    if let Some(c) = table.get("num_classes").and_then(|v| v.as_integer()) {
        parts.push(format!("{c} classes"));
    }
    if parts.is_empty() {
        format!("run {name}")
    } else {
        format!("run {name}: {}", parts.join(", "))
    }
}

/// A file-name-safe form of a target name.
fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One line of a chart.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    /// Draw a dot at every point (for sparse series such as evaluations).
    markers: bool,
}

impl Series {
    fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: RGBColor) -> Self {
        Self {
            label: label.into(),
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
            color,
            markers: false,
        }
    }
}

/// Colours of successive series (matplotlib's tab10).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// `lo..hi` widened by 5% on each side, or by 1 when all values are equal.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= 0.0 {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    } else {
        (lo - span * 0.05, hi + span * 0.05)
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Registers the shipped font once per process.
fn register_font() -> anyhow::Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if !ok {
        bail!("the shipped font xtask/assets/fonts/DejaVuSans.ttf does not parse");
    }
    Ok(())
}

/// Draws into a white RGB canvas with `draw` and writes it to `path` as PNG (temp name, then
/// rename).
fn render(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    register_font()?;
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", file_name.to_string_lossy()));
    image::save_buffer_with_format(
        &tmp,
        &buf,
        WIDTH,
        HEIGHT,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// A chart of lines against the step. `y_range` fixes the y axis (else it fits the data).
fn line_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[Series],
    y_range: Option<(f64, f64)>,
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = bounds(all().map(|p| p.0));
    let (x0, x1) = if x0 == x1 { padded(x0, x1) } else { (x0, x1) };
    let (y0, y1) = y_range.unwrap_or_else(|| {
        let (lo, hi) = bounds(all().map(|p| p.1));
        padded(lo, hi)
    });
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .max_light_lines(4)
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for s in series {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            if s.markers {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(legend)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// A positive axis value in plain decimals, as many as its first significant digit needs
/// (0.001, 0.02, 1).
fn decimal(v: f64) -> String {
    let places = (-v.log10().floor()).clamp(0.0, 12.0) as usize;
    format!("{v:.places$}")
}

/// The ROC chart of one evaluation: TPR against FPR on a log axis from the decade below the
/// smallest positive FPR or FAR target to 1 (points at FPR 0 cannot be shown); the chance
/// diagonal; the TAR@FAR point.
fn roc_chart(path: &Path, title: &str, e: &EvalRecord) -> anyhow::Result<()> {
    let points: Vec<(f64, f64)> = e
        .roc_fpr
        .iter()
        .zip(&e.roc_tpr)
        .map(|(&f, &t)| (f, t))
        .filter(|&(f, t)| f > 0.0 && f.is_finite() && t.is_finite())
        .collect();
    let min_fpr = points.iter().map(|p| p.0).fold(1.0, f64::min);
    let far_point =
        (e.far > 0.0 && e.far.is_finite() && e.tar.is_finite()).then_some((e.far, e.tar));
    let lowest = far_point.map_or(min_fpr, |(f, _)| f.min(min_fpr));
    // The decade below the lowest point (a point on a power of ten gets a decade of room).
    let x0 = 10f64.powf((lowest * 0.999).log10().floor()).min(0.1);
    let auc = if e.auc.is_finite() {
        format!("{:.4}", e.auc)
    } else {
        "?".to_string()
    };
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((x0..1.0).log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (log scale)")
            .y_desc("true positive rate")
            .x_label_formatter(&|v| decimal(*v))
            .max_light_lines(4)
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        let grey = RGBColor(160, 160, 160);
        let steps = 200;
        let diagonal = (0..=steps).map(|i| {
            let f = 10f64.powf(x0.log10() * (1.0 - f64::from(i) / f64::from(steps)));
            (f, f)
        });
        chart
            .draw_series(LineSeries::new(diagonal, grey.stroke_width(1)))?
            .label("chance")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(1)));
        let blue = PALETTE[0];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                blue.stroke_width(2),
            ))?
            .label(format!("ROC, AUC {auc}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
        if let Some((f, t)) = far_point {
            let red = PALETTE[3];
            chart
                .draw_series(std::iter::once(Circle::new((f, t), 5, red.filled())))?
                .label(format!("TAR {t:.4} @ FAR {f:e}"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, red.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Draws every chart of `run_dir`'s metrics.jsonl into `out_dir` (created if missing); returns
/// the paths written: loss.png, lr.png, accuracy.png (when any accuracy was logged), then one
/// roc-<target>-step<N>.png per eval record that carries ROC data.
pub fn plot_run(run_dir: &Path, out_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let metrics_path = run_dir.join("metrics.jsonl");
    let m = read_metrics(&metrics_path)?;
    let title = run_title(run_dir);
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the output folder {}", out_dir.display()))?;
    let mut written = Vec::new();
    let series_of = |f: fn(&LogRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        m.train
            .iter()
            .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.step as f64, v)))
            .collect()
    };

    let loss = Series::new("training loss", series_of(|r| Some(r.loss)), PALETTE[0]);
    if loss.points.is_empty() {
        bail!(
            "{}: no finite loss in any train record",
            metrics_path.display()
        );
    }
    let path = out_dir.join("loss.png");
    line_chart(
        &path,
        &format!("{title}: loss"),
        "loss",
        &[loss],
        None,
        SeriesLabelPosition::UpperRight,
    )?;
    written.push(path);

    let lr = Series::new("learning rate", series_of(|r| Some(r.lr)), PALETTE[1]);
    let path = out_dir.join("lr.png");
    line_chart(
        &path,
        &format!("{title}: learning rate"),
        "learning rate",
        &[lr],
        None,
        SeriesLabelPosition::UpperRight,
    )?;
    written.push(path);

    let mut acc = vec![
        Series::new("train top-1", series_of(|r| r.acc1), PALETTE[0]),
        Series::new("train top-5", series_of(|r| r.acc5), PALETTE[1]),
    ];
    let mut targets: Vec<&str> = Vec::new();
    for e in &m.eval {
        if !targets.contains(&e.target.as_str()) {
            targets.push(&e.target);
        }
    }
    for (i, target) in targets.iter().enumerate() {
        let points = m
            .eval
            .iter()
            .filter(|e| e.target == *target)
            .filter(|e| e.accuracy.is_finite())
            .map(|e| (e.step as f64, e.accuracy))
            .collect();
        let mut s = Series::new(
            format!("{target} verification"),
            points,
            PALETTE[(2 + i) % PALETTE.len()],
        );
        s.markers = true;
        acc.push(s);
    }
    acc.retain(|s| !s.points.is_empty());
    if !acc.is_empty() {
        let path = out_dir.join("accuracy.png");
        line_chart(
            &path,
            &format!("{title}: accuracy"),
            "accuracy",
            &acc,
            Some((0.0, 1.0)),
            SeriesLabelPosition::LowerRight,
        )?;
        written.push(path);
    }

    let mut without_roc = 0;
    for e in &m.eval {
        if e.roc_fpr.is_empty() {
            without_roc += 1;
            continue;
        }
        let path = out_dir.join(format!("roc-{}-step{}.png", file_part(&e.target), e.step));
        let chart_title = format!("{title}: ROC {} at step {}", e.target, e.step);
        roc_chart(&path, &chart_title, e)?;
        written.push(path);
    }
    if without_roc > 0 {
        tracing::warn!(
            "{}: {without_roc} of {} eval records carry no ROC data (roc_fpr, roc_tpr): no ROC chart for them",
            metrics_path.display(),
            m.eval.len()
        );
    }
    Ok(written)
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.run_dir.clone());
    for path in plot_run(&args.run_dir, &out)? {
        println!("{}", path.display());
    }
    Ok(())
}
