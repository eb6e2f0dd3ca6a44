//! Many run reports → `results.json` (one record per server and viewer count, medians),
//! `docs/benchmarks.md` (conditions, side-by-side table with ratios, variance) and SVG
//! plots of CPU per forwarded packet and worst-viewer loss against viewers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::RunReport;

/// What [`write_summary`] reads and where it writes.
pub struct SummaryInputs {
    pub reports: Vec<RunReport>,
    /// Free text (machine, load, versions) put under "Conditions".
    pub conditions: String,
    pub quick: bool,
    pub out_json: PathBuf,
    pub out_md: Option<PathBuf>,
    pub svg_dir: Option<PathBuf>,
}

/// One record of `results.json`: medians over the runs of one server and viewer count.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRecord {
    pub server: String,
    pub viewers: usize,
    pub bitrate_kbps: u32,
    pub cpu_us_per_packet: f64,
    pub packets_forwarded: u64,
    pub loss_pct_worst: f64,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub join_p95_ms: f64,
    pub rss_kb_per_viewer: f64,
}

/// Median and spread of one metric over runs.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    stddev: f64,
}

fn spread(values: &[f64]) -> Spread {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return Spread {
            median: 0.0,
            min: 0.0,
            max: 0.0,
            stddev: 0.0,
        };
    }
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let variance = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    Spread {
        median,
        min: sorted[0],
        max: sorted[n - 1],
        stddev: variance.sqrt(),
    }
}

struct Group<'a> {
    server: String,
    viewers: usize,
    runs: Vec<&'a RunReport>,
}

impl Group<'_> {
    fn metric(&self, field: impl Fn(&RunReport) -> f64) -> Spread {
        spread(&self.runs.iter().map(|run| field(run)).collect::<Vec<_>>())
    }

    fn record(&self) -> ResultRecord {
        ResultRecord {
            server: self.server.clone(),
            viewers: self.viewers,
            bitrate_kbps: self.runs.first().map(|run| run.bitrate_kbps).unwrap_or(0),
            cpu_us_per_packet: round(self.metric(|r| r.cpu_us_per_packet).median, 3),
            packets_forwarded: self.metric(|r| r.packets_forwarded as f64).median as u64,
            loss_pct_worst: round(self.metric(|r| r.loss_pct_worst).median, 4),
            delay_p50_ms: round(self.metric(|r| r.delay_p50_ms).median, 3),
            delay_p99_ms: round(self.metric(|r| r.delay_p99_ms).median, 3),
            join_p95_ms: round(self.metric(|r| r.join_p95_ms).median, 1),
            rss_kb_per_viewer: round(self.metric(|r| r.rss_kb_per_viewer).median, 1),
        }
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn groups(reports: &[RunReport]) -> Vec<Group<'_>> {
    let mut map: BTreeMap<(usize, String), Vec<&RunReport>> = BTreeMap::new();
    for report in reports {
        map.entry((report.viewers, report.server.clone()))
            .or_default()
            .push(report);
    }
    map.into_iter()
        .map(|((viewers, server), runs)| Group {
            server,
            viewers,
            runs,
        })
        .collect()
}

/// Writes results.json and, if asked, the Markdown report and the SVG plots.
pub fn write_summary(inputs: &SummaryInputs) -> anyhow::Result<()> {
    let groups = groups(&inputs.reports);
    let records: Vec<ResultRecord> = groups.iter().map(Group::record).collect();
    if let Some(parent) = inputs.out_json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        &inputs.out_json,
        serde_json::to_string_pretty(&records)? + "\n",
    )?;
    let mut plots = Vec::new();
    if let Some(dir) = &inputs.svg_dir {
        std::fs::create_dir_all(dir)?;
        let cpu = line_plot(
            "SFU CPU per forwarded packet",
            "µs per packet",
            &records,
            |record| record.cpu_us_per_packet,
        );
        let loss = line_plot(
            "Packet loss of the worst viewer",
            "% lost",
            &records,
            |record| record.loss_pct_worst,
        );
        let cpu_name = "bench-cpu-per-packet.svg";
        let loss_name = "bench-loss.svg";
        std::fs::write(dir.join(cpu_name), cpu)?;
        std::fs::write(dir.join(loss_name), loss)?;
        plots.push(cpu_name);
        plots.push(loss_name);
    }
    if let Some(path) = &inputs.out_md {
        std::fs::write(path, markdown(inputs, &groups, &plots))?;
    }
    Ok(())
}

fn markdown(inputs: &SummaryInputs, groups: &[Group<'_>], plots: &[&str]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Measured results\n");
    let runs_per_point = groups.iter().map(|g| g.runs.len()).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "{} Medians of {} run(s) per point; the spread tables give min–max and standard deviation.\n",
        if inputs.quick {
            "Quick run (`scripts/bench --quick`): one short run per point, indicative only."
        } else {
            "Full run (`scripts/bench`)."
        },
        runs_per_point
    );
    if !inputs.conditions.is_empty() {
        let _ = writeln!(md, "### Conditions\n\n{}\n", inputs.conditions.trim());
    }
    if let Some(run) = inputs.reports.first() {
        let pps: Vec<f64> = inputs
            .reports
            .iter()
            .map(|r| r.packets_per_viewer_per_s)
            .collect();
        let kbps: Vec<f64> = inputs.reports.iter().map(|r| r.publisher_kbps).collect();
        let _ = writeln!(
            md,
            "Stream: VP8 {} kbit/s at {} fps plus Opus-sized audio (80 B every 20 ms); the publisher sent {:.0} kbit/s of payload (median), each viewer received {:.0} media packets/s (median).\n",
            run.bitrate_kbps,
            run.fps,
            spread(&kbps).median,
            spread(&pps).median
        );
        let mut modes: Vec<&str> = inputs
            .reports
            .iter()
            .map(|r| r.viewer_verify.as_str())
            .collect();
        modes.sort_unstable();
        modes.dedup();
        let _ = writeln!(
            md,
            "Viewer verification: {} (sampled: loss and packet counts from every packet's RTP header, SRTP decryption and delays from 1 frame in 16 per stream; full: every packet decrypted).\n",
            modes.join(", ")
        );
    }
    let _ = writeln!(md, "### Side by side (medians)\n");
    let _ = writeln!(
        md,
        "| viewers | server | CPU µs/pkt | CPU % of a core | packets forwarded | worst loss % | delay p50 ms | delay p99 ms | join p50 ms | join p95 ms | RSS KB/viewer | loadgen CPU % |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for group in groups {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.0} | {:.0} | {:.3} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} |",
            group.viewers,
            group.server,
            group.metric(|r| r.cpu_us_per_packet).median,
            group.metric(|r| r.server_cpu_pct).median,
            group.metric(|r| r.packets_forwarded as f64).median,
            group.metric(|r| r.loss_pct_worst).median,
            group.metric(|r| r.delay_p50_ms).median,
            group.metric(|r| r.delay_p99_ms).median,
            group.metric(|r| r.join_p50_ms).median,
            group.metric(|r| r.join_p95_ms).median,
            group.metric(|r| r.rss_kb_per_viewer).median,
            group.metric(|r| r.loadgen_cpu_pct).median,
        );
    }
    let _ = writeln!(
        md,
        "\n### Ratios (Janus ÷ PrivateHub; above 1 means PrivateHub is better)\n"
    );
    let _ = writeln!(
        md,
        "| viewers | CPU per packet | delay p99 | join p95 | RSS per viewer |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let viewer_counts: std::collections::BTreeSet<usize> =
        groups.iter().map(|g| g.viewers).collect();
    for viewers in viewer_counts {
        let find = |server: &str| {
            groups
                .iter()
                .find(|g| g.viewers == viewers && g.server == server)
        };
        let (Some(ours), Some(janus)) = (find("privatehub"), find("janus")) else {
            continue;
        };
        let ratio = |field: &dyn Fn(&RunReport) -> f64| {
            let ours = ours.metric(field).median;
            let theirs = janus.metric(field).median;
            if ours > 0.0 {
                format!("{:.2}", theirs / ours)
            } else {
                "n/a".to_owned()
            }
        };
        let _ = writeln!(
            md,
            "| {viewers} | {} | {} | {} | {} |",
            ratio(&|r| r.cpu_us_per_packet),
            ratio(&|r| r.delay_p99_ms),
            ratio(&|r| r.join_p95_ms),
            ratio(&|r| r.rss_kb_per_viewer),
        );
    }
    let _ = writeln!(md, "\n### Targets\n");
    let _ = writeln!(md, "| target | measured | verdict |");
    let _ = writeln!(md, "|---|---|---|");
    for (target, measured, verdict) in targets(groups) {
        let _ = writeln!(md, "| {target} | {measured} | {verdict} |");
    }
    let _ = writeln!(md, "\n### Spread over runs\n");
    let _ = writeln!(
        md,
        "| viewers | server | runs | CPU µs/pkt min–max (σ) | worst loss % min–max | delay p99 ms min–max | join p95 ms min–max | failed joins (max) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for group in groups {
        let cpu = group.metric(|r| r.cpu_us_per_packet);
        let loss = group.metric(|r| r.loss_pct_worst);
        let delay = group.metric(|r| r.delay_p99_ms);
        let join = group.metric(|r| r.join_p95_ms);
        let failures = group.metric(|r| r.join_failures as f64);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2}–{:.2} ({:.2}) | {:.3}–{:.3} | {:.2}–{:.2} | {:.0}–{:.0} | {:.0} |",
            group.viewers,
            group.server,
            group.runs.len(),
            cpu.min,
            cpu.max,
            cpu.stddev,
            loss.min,
            loss.max,
            delay.min,
            delay.max,
            join.min,
            join.max,
            failures.max,
        );
    }
    let _ = writeln!(md, "\n### Breakdowns (medians)\n");
    let _ = writeln!(
        md,
        "| viewers | server | delay p99 video ms | delay p99 audio ms | delay max ms | join: answer p95 ms | join: connected p95 ms | join: keyframe p95 ms | publisher kbit/s | pkts/s per viewer |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for group in groups {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            group.viewers,
            group.server,
            group.metric(|r| r.delay_video_p99_ms).median,
            group.metric(|r| r.delay_audio_p99_ms).median,
            group.metric(|r| r.delay_max_ms).median,
            group.metric(|r| r.join_signaling_p95_ms).median,
            group.metric(|r| r.join_connected_p95_ms).median,
            group.metric(|r| r.join_p95_ms).median,
            group.metric(|r| r.publisher_kbps).median,
            group.metric(|r| r.packets_per_viewer_per_s).median,
        );
    }
    let checked: Vec<&Group<'_>> = groups
        .iter()
        .filter(|g| g.runs.iter().any(|r| !r.server_metrics_delta.is_empty()))
        .collect();
    if !checked.is_empty() {
        let _ = writeln!(
            md,
            "\n### Cross-check with the SFU's own /metrics (window deltas, medians)\n"
        );
        let _ = writeln!(
            md,
            "| viewers | server | datagrams sent (SFU) | media packets received (viewers) | packets forwarded | packets shed | channel drops | UDP send errors | forward delay p50 / p99 inside the SFU (ms) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for group in checked {
            let counter = |name: &'static str| {
                group
                    .metric(move |r| r.server_metrics_delta.get(name).copied().unwrap_or(0.0))
                    .median
            };
            let delay = |quantile: f64| {
                let values: Vec<f64> = group
                    .runs
                    .iter()
                    .filter_map(|r| {
                        crate::metrics_scrape::histogram_quantile(
                            &r.server_metrics_delta,
                            "media_forward_delay_seconds",
                            quantile,
                        )
                    })
                    .collect();
                median_of(values).map_or("-".to_owned(), |secs| {
                    if secs.is_finite() {
                        format!("≤{}", secs * 1000.0)
                    } else {
                        ">1000".to_owned()
                    }
                })
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} / {} |",
                group.viewers,
                group.server,
                counter("media_packets_out_total"),
                group.metric(|r| r.packets_forwarded as f64).median,
                counter("media_packets_forwarded_total"),
                counter("media_packets_shed_total"),
                counter("media_channel_drops_total"),
                counter("media_udp_send_errors_total"),
                delay(0.5),
                delay(0.99),
            );
        }
    }
    let _ = writeln!(
        md,
        "\n### Busiest server threads (first run of each point, % of one core)\n"
    );
    let _ = writeln!(md, "| viewers | server | threads |");
    let _ = writeln!(md, "|---|---|---|");
    for group in groups {
        if let Some(run) = group.runs.first() {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                group.viewers,
                group.server,
                run.server_threads.join(", ")
            );
        }
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "\n### Plots\n");
        for plot in plots {
            let _ = writeln!(md, "![{plot}]({plot})\n");
        }
    }
    md
}

/// The issue's targets, evaluated on the medians: (target, measured, verdict).
fn targets(groups: &[Group<'_>]) -> Vec<(String, String, String)> {
    let ours = |viewers: usize| {
        groups
            .iter()
            .find(|g| g.server == "privatehub" && g.viewers == viewers)
    };
    let verdict = |met: bool| if met { "met" } else { "**missed**" }.to_owned();
    let not_measured = || "not measured".to_owned();
    let mut rows = Vec::new();

    let mut ratios = Vec::new();
    for group in groups.iter().filter(|g| g.server == "privatehub") {
        if let Some(janus) = groups
            .iter()
            .find(|g| g.server == "janus" && g.viewers == group.viewers)
        {
            let mine = group.metric(|r| r.cpu_us_per_packet).median;
            let theirs = janus.metric(|r| r.cpu_us_per_packet).median;
            if mine > 0.0 {
                ratios.push((group.viewers, theirs / mine));
            }
        }
    }
    let measured = ratios
        .iter()
        .map(|(viewers, ratio)| format!("{ratio:.2}x at {viewers}"))
        .collect::<Vec<_>>()
        .join(", ");
    rows.push((
        "CPU per forwarded packet ≥ 2x lower than Janus".to_owned(),
        if ratios.is_empty() {
            not_measured()
        } else {
            measured
        },
        if ratios.is_empty() {
            not_measured()
        } else {
            verdict(ratios.iter().all(|(_, ratio)| *ratio >= 2.0))
        },
    ));

    let loss_400 = ours(400).map(|g| g.metric(|r| r.loss_pct_worst).median);
    rows.push((
        "zero loss at 400 viewers of 2 Mbit/s".to_owned(),
        loss_400.map_or_else(not_measured, |loss| format!("worst viewer {loss:.3} %")),
        loss_400.map_or_else(not_measured, |loss| verdict(loss == 0.0)),
    ));

    let delay_200 = ours(200).map(|g| g.metric(|r| r.delay_p99_ms).median);
    rows.push((
        "p99 forwarding delay < 5 ms at 200 viewers".to_owned(),
        delay_200.map_or_else(not_measured, |delay| format!("{delay:.2} ms")),
        delay_200.map_or_else(not_measured, |delay| verdict(delay < 5.0)),
    ));

    let joins: Vec<(usize, f64)> = groups
        .iter()
        .filter(|g| g.server == "privatehub")
        .map(|g| (g.viewers, g.metric(|r| r.join_p95_ms).median))
        .collect();
    rows.push((
        "join time p95 < 300 ms".to_owned(),
        joins
            .iter()
            .map(|(viewers, join)| format!("{join:.0} ms at {viewers}"))
            .collect::<Vec<_>>()
            .join(", "),
        if joins.is_empty() {
            not_measured()
        } else {
            verdict(joins.iter().all(|(_, join)| *join < 300.0))
        },
    ));

    let memory: Vec<(usize, f64)> = groups
        .iter()
        .filter(|g| g.server == "privatehub")
        .map(|g| (g.viewers, g.metric(|r| r.rss_kb_per_viewer).median))
        .collect();
    rows.push((
        "< 300 KB of server memory per viewer".to_owned(),
        memory
            .iter()
            .map(|(viewers, kb)| format!("{kb:.0} KB at {viewers}"))
            .collect::<Vec<_>>()
            .join(", "),
        if memory.is_empty() {
            not_measured()
        } else {
            verdict(memory.iter().all(|(_, kb)| *kb < 300.0))
        },
    ));
    rows
}

const PLOT_WIDTH: f64 = 640.0;
const PLOT_HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 130.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;

/// A small hand-written SVG line chart: one line per server, y against viewers.
fn line_plot(
    title: &str,
    y_label: &str,
    records: &[ResultRecord],
    y: impl Fn(&ResultRecord) -> f64,
) -> String {
    let mut servers: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for record in records {
        servers
            .entry(record.server.as_str())
            .or_default()
            .push((record.viewers as f64, y(record)));
    }
    let max_x = records.iter().map(|r| r.viewers as f64).fold(1.0, f64::max);
    let max_y = records.iter().map(&y).fold(0.0, f64::max).max(0.001) * 1.15;
    let inner_w = PLOT_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let inner_h = PLOT_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |x: f64| MARGIN_LEFT + x / max_x * inner_w;
    let py = |v: f64| MARGIN_TOP + inner_h - v / max_y * inner_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{title}</text>"#,
        PLOT_WIDTH / 2.0
    );
    for tick in 0..=4 {
        let value = max_y * f64::from(tick) / 4.0;
        let yy = py(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + inner_w,
            MARGIN_LEFT - 6.0,
            yy + 4.0,
            format_tick(value)
        );
    }
    let mut xs: Vec<usize> = records.iter().map(|r| r.viewers).collect();
    xs.sort_unstable();
    xs.dedup();
    for x in xs {
        let xx = px(x as f64);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#999"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{x}</text>"##,
            MARGIN_TOP + inner_h,
            MARGIN_TOP + inner_h + 5.0,
            MARGIN_TOP + inner_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP}" x2="{MARGIN_LEFT}" y2="{:.1}" stroke="#333"/><line x1="{MARGIN_LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        MARGIN_TOP + inner_h,
        MARGIN_TOP + inner_h,
        MARGIN_LEFT + inner_w,
        MARGIN_TOP + inner_h
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">viewers</text>"#,
        MARGIN_LEFT + inner_w / 2.0,
        PLOT_HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{y_label}</text>"#,
        MARGIN_TOP + inner_h / 2.0,
        MARGIN_TOP + inner_h / 2.0
    );
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    for (index, (server, mut points)) in servers.into_iter().enumerate() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = colors[index % colors.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, v)| format!("{:.1},{:.1}", px(*x), py(*v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, v) in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{server} {x} viewers: {v:.3}</title></circle>"#,
                px(*x),
                py(*v)
            );
        }
        let legend_y = MARGIN_TOP + 10.0 + index as f64 * 20.0;
        let legend_x = MARGIN_LEFT + inner_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}">{server}</text>"#,
            legend_y - 4.0,
            legend_x + 20.0,
            legend_y + 2.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_tick(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Median of `values` (the lower middle for an even count); `None` if empty.
fn median_of(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[(values.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_median_of_even_and_odd_counts() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(spread(&[]).median, 0.0);
    }
}
