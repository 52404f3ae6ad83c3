//! SVG charts, computed without IO: the run timeline (one lane per worker,
//! one bar per item attempt, failures marked) and the functions' latency
//! bars (p50 and p95 side by side). Geometry is plain numbers so it can be
//! tested; [`timeline_svg`] and [`latency_svg`] turn it into escaped markup.

use std::time::Duration;

use maud::{Markup, html};
use mayfly_core::Timestamp;
use mayfly_state::{AttemptOutcome, ItemAttempt};

use crate::format;

/// The timeline's drawing area, in SVG user units.
pub const TIMELINE_WIDTH: f64 = 960.0;
const LANE_LABEL_WIDTH: f64 = 132.0;
const LANE_HEIGHT: f64 = 26.0;
const BAR_HEIGHT: f64 = 16.0;
const AXIS_HEIGHT: f64 = 24.0;
/// A bar is never thinner than this, so a short attempt stays visible.
const MIN_BAR_WIDTH: f64 = 2.0;

/// One bar of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineBar {
    pub lane: usize,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub outcome: AttemptOutcome,
    /// What hovering the bar says: item, attempt, outcome and duration.
    pub title: String,
}

/// A tick on the time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineTick {
    pub x: f64,
    pub label: String,
}

/// A whole timeline: lanes (worker names, top to bottom), bars and ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub lanes: Vec<String>,
    pub bars: Vec<TimelineBar>,
    pub ticks: Vec<TimelineTick>,
    pub height: f64,
}

/// Lay out `attempts` between `start` and `end` (the run's start and its end
/// or now): one lane per worker in `workers` order, then any worker seen only
/// in the attempts, in order of appearance. A running attempt ends at `end`.
pub fn timeline(workers: &[String], attempts: &[ItemAttempt], start: Timestamp, end: Timestamp) -> Timeline {
    let mut lanes: Vec<String> = workers.to_vec();
    for attempt in attempts {
        if !lanes.contains(&attempt.worker) {
            lanes.push(attempt.worker.clone());
        }
    }
    let start = attempts.iter().map(|a| a.started_at).min().map_or(start, |first| first.min(start));
    let end = end.max(start.saturating_add(Duration::from_secs(1)));
    let span = end.duration_since(start).as_secs_f64();
    let plot_width = TIMELINE_WIDTH - LANE_LABEL_WIDTH;
    let x_of = |at: Timestamp| LANE_LABEL_WIDTH + at.duration_since(start).as_secs_f64() / span * plot_width;
    let bars = attempts
        .iter()
        .filter_map(|attempt| {
            let lane = lanes.iter().position(|worker| worker == &attempt.worker)?;
            let finish = attempt.ended_at.unwrap_or(end).min(end);
            let x = x_of(attempt.started_at);
            let width = (x_of(finish) - x).max(MIN_BAR_WIDTH).min(TIMELINE_WIDTH - x);
            let took = finish.duration_since(attempt.started_at);
            let state = match attempt.outcome {
                AttemptOutcome::Running => format!("running for {}", format::duration(took)),
                outcome => format!("{} after {}", outcome_label(outcome), format::duration(took)),
            };
            Some(TimelineBar {
                lane,
                x,
                y: lane as f64 * LANE_HEIGHT + (LANE_HEIGHT - BAR_HEIGHT) / 2.0,
                width,
                outcome: attempt.outcome,
                title: format!("{} · attempt {} · {state}", attempt.item, attempt.attempt),
            })
        })
        .collect();
    let step = tick_step(Duration::from_secs_f64(span));
    let ticks = (0..)
        .map(|index| step * index)
        .take_while(|offset| offset.as_secs_f64() <= span)
        .map(|offset| TimelineTick {
            x: LANE_LABEL_WIDTH + offset.as_secs_f64() / span * plot_width,
            label: if offset.is_zero() { "0".to_owned() } else { format::duration(offset) },
        })
        .collect();
    Timeline { height: lanes.len().max(1) as f64 * LANE_HEIGHT + AXIS_HEIGHT, lanes, bars, ticks }
}

/// A round step for about four to eight ticks across `span`.
pub fn tick_step(span: Duration) -> Duration {
    const STEPS: [u64; 16] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 21_600, 86_400];
    let seconds = span.as_secs_f64();
    let step = STEPS.into_iter().find(|step| seconds / *step as f64 <= 8.0).unwrap_or(86_400);
    Duration::from_secs(step)
}

/// How an outcome reads in a legend or a tooltip.
pub fn outcome_label(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Running => "running",
        AttemptOutcome::Done => "done",
        AttemptOutcome::Failed => "failed, retried",
        AttemptOutcome::DeadLettered => "dead-lettered",
        AttemptOutcome::Released => "released (worker lost)",
    }
}

fn outcome_class(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Running => "bar-running",
        AttemptOutcome::Done => "bar-done",
        AttemptOutcome::Failed => "bar-failed",
        AttemptOutcome::DeadLettered => "bar-dead",
        AttemptOutcome::Released => "bar-released",
    }
}

/// The timeline as an `<svg>` element, scaled to its container's width.
pub fn timeline_svg(timeline: &Timeline) -> Markup {
    let axis_y = timeline.height - AXIS_HEIGHT;
    html! {
        svg class="timeline" viewBox={ "0 0 " (TIMELINE_WIDTH) " " (timeline.height) } role="img"
            aria-label={ "Timeline of " (timeline.bars.len()) " attempts across " (timeline.lanes.len()) " workers" } {
            @for (lane, worker) in timeline.lanes.iter().enumerate() {
                @let y = lane as f64 * LANE_HEIGHT;
                rect class={ "lane " @if lane % 2 == 1 { "lane-odd" } } x="0" y=(y) width=(TIMELINE_WIDTH) height=(LANE_HEIGHT) {}
                text class="lane-label" x="8" y=(y + LANE_HEIGHT / 2.0 + 4.0) { (worker) }
            }
            @for tick in &timeline.ticks {
                line class="tick" x1=(round(tick.x)) x2=(round(tick.x)) y1="0" y2=(axis_y) {}
                text class="tick-label" x=(round(tick.x)) y=(axis_y + 16.0) text-anchor="middle" { (tick.label) }
            }
            @for bar in &timeline.bars {
                rect class={ "bar " (outcome_class(bar.outcome)) } x=(round(bar.x)) y=(bar.y) width=(round(bar.width)) height=(BAR_HEIGHT) rx="2" {
                    title { (bar.title) }
                }
                @if matches!(bar.outcome, AttemptOutcome::Failed | AttemptOutcome::DeadLettered) {
                    // A mark above the bar's end, so a failure stands out even in a thin bar.
                    @let tip = round(bar.x + bar.width);
                    path class="failure-mark" d={ "M" (tip - 4.0) " " (bar.y - 4.0) " L" (tip + 4.0) " " (bar.y - 4.0) " L" (tip) " " (bar.y + 3.0) " Z" } {
                        title { (bar.title) }
                    }
                }
            }
        }
    }
}

/// One function's row in the latency chart.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRow {
    pub function: String,
    pub p50: Duration,
    pub p95: Duration,
}

/// Horizontal bars of p50 (solid) and p95 (light) per function, on one scale.
pub fn latency_svg(rows: &[LatencyRow]) -> Markup {
    const WIDTH: f64 = 700.0;
    const LABEL: f64 = 150.0;
    const ROW: f64 = 30.0;
    const VALUE: f64 = 150.0;
    let longest = rows.iter().map(|row| row.p95.max(row.p50)).max().unwrap_or_default().as_secs_f64();
    let scale =
        |value: Duration| if longest > 0.0 { value.as_secs_f64() / longest * (WIDTH - LABEL - VALUE) } else { 0.0 };
    let height = rows.len() as f64 * ROW + 8.0;
    html! {
        svg class="latency" viewBox={ "0 0 " (WIDTH) " " (height) } role="img" aria-label="p50 and p95 duration per function" {
            @for (index, row) in rows.iter().enumerate() {
                @let y = index as f64 * ROW + 4.0;
                text class="lane-label" x="0" y=(y + 15.0) { (row.function) }
                rect class="bar-p95" x=(LABEL) y=(y + 2.0) width=(round(scale(row.p95).max(1.0))) height="18" rx="2" {
                    title { (row.function) " p95 " (format::millis(row.p95)) }
                }
                rect class="bar-p50" x=(LABEL) y=(y + 6.0) width=(round(scale(row.p50).max(1.0))) height="10" rx="2" {
                    title { (row.function) " p50 " (format::millis(row.p50)) }
                }
                text class="value-label" x=(LABEL + round(scale(row.p95).max(1.0)) + 6.0) y=(y + 15.0) {
                    (format::millis(row.p50)) " / " (format::millis(row.p95))
                }
            }
        }
    }
}

/// SVG coordinates to a tenth of a unit: shorter markup, no visible difference.
fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(item: &str, worker: &str, start: i64, end: Option<i64>, outcome: AttemptOutcome) -> ItemAttempt {
        ItemAttempt {
            item: item.to_owned(),
            attempt: 1,
            worker: worker.to_owned(),
            started_at: Timestamp(start),
            ended_at: end.map(Timestamp),
            outcome,
        }
    }

    #[test]
    fn bars_sit_in_their_workers_lane_in_proportion_to_time() {
        let attempts = [
            attempt("a", "w-1", 0, Some(5_000), AttemptOutcome::Done),
            attempt("b", "w-2", 5_000, Some(10_000), AttemptOutcome::Failed),
            attempt("c", "w-3", 7_500, None, AttemptOutcome::Running),
        ];
        let chart = timeline(&["w-1".to_owned(), "w-2".to_owned()], &attempts, Timestamp(0), Timestamp(10_000));
        assert_eq!(chart.lanes, ["w-1", "w-2", "w-3"], "a worker seen only in attempts gets a lane at the end");
        let plot = TIMELINE_WIDTH - LANE_LABEL_WIDTH;
        let [a, b, c] = &chart.bars[..] else { panic!("three bars, got {:?}", chart.bars) };
        assert_eq!((a.lane, a.x, a.width), (0, LANE_LABEL_WIDTH, plot / 2.0));
        assert_eq!((b.lane, b.x, b.width), (1, LANE_LABEL_WIDTH + plot / 2.0, plot / 2.0));
        assert_eq!((c.lane, c.x, c.width), (2, LANE_LABEL_WIDTH + plot * 0.75, plot / 4.0), "running ends now");
        assert_eq!(b.title, "b · attempt 1 · failed, retried after 5.0 s");
        assert_eq!(c.title, "c · attempt 1 · running for 2.5 s");
        assert!(b.y > a.y && c.y > b.y);
        assert_eq!(chart.height, 3.0 * LANE_HEIGHT + AXIS_HEIGHT);
    }

    #[test]
    fn a_short_attempt_is_still_visible_and_ticks_are_round() {
        let attempts = [attempt("a", "w-1", 1_000, Some(1_001), AttemptOutcome::Done)];
        let chart = timeline(&[], &attempts, Timestamp(0), Timestamp(600_000));
        assert_eq!(chart.bars[0].width, MIN_BAR_WIDTH);
        let labels: Vec<&str> = chart.ticks.iter().map(|tick| tick.label.as_str()).collect();
        assert_eq!(labels, ["0", "2 min 00 s", "4 min 00 s", "6 min 00 s", "8 min 00 s", "10 min 00 s"]);
        assert_eq!(tick_step(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(tick_step(Duration::from_secs(45)), Duration::from_secs(10));
    }

    #[test]
    fn the_svg_marks_failures_and_escapes_names() {
        let attempts = [
            attempt("<script>", "w-1", 0, Some(1_000), AttemptOutcome::DeadLettered),
            attempt("ok", "w-1", 1_000, Some(2_000), AttemptOutcome::Done),
        ];
        let svg = timeline_svg(&timeline(&[], &attempts, Timestamp(0), Timestamp(2_000))).into_string();
        assert_eq!(svg.matches("class=\"failure-mark\"").count(), 1, "{svg}");
        assert!(svg.contains("bar bar-dead") && svg.contains("bar bar-done"));
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
    }

    #[test]
    fn latency_bars_share_one_scale() {
        let rows = [
            LatencyRow { function: "fast".to_owned(), p50: Duration::from_millis(10), p95: Duration::from_millis(20) },
            LatencyRow {
                function: "slow".to_owned(),
                p50: Duration::from_millis(200),
                p95: Duration::from_millis(400),
            },
        ];
        let svg = latency_svg(&rows).into_string();
        assert!(svg.contains("width=\"400\""), "the longest p95 fills the plot: {svg}");
        assert!(svg.contains("width=\"20\""), "20 ms is a twentieth of it");
        assert!(svg.contains("200 ms / 400 ms"));
    }
}
