//! The pages, rendered with `maud` (every interpolated value is
//! HTML-escaped). Pure: view models and records in, markup out. Live parts
//! carry `data-live` (a JSON URL whose fields update `data-field` elements),
//! `data-live-rows` (one JSON URL for every `data-live-row` of a table) or
//! `data-fragment` (a URL whose markup replaces the element's content);
//! `assets/dashboard.js` polls them.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use mayfly_core::Timestamp;
use mayfly_core::run::ItemStatus;
use mayfly_state::{
    AttemptOutcome, AuditRecord, AuditSeverity, ExperimentOutcome, ExperimentRecord, RunItem, WorkerRecord,
};

use crate::chart::{self, LatencyRow, Timeline};
use crate::format;
use crate::model::{FunctionRow, Progress, QueueRow, RunSummary, status_label, status_tone};

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Runs,
    Queues,
    Functions,
    Experiments,
    Audit,
}

/// What every signed-in page shares.
#[derive(Debug, Clone)]
pub struct Chrome<'a> {
    pub project: &'a str,
    pub principal: &'a str,
    pub now: Timestamp,
}

fn document(title: &str, project: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (project) " · Mayfly" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body { (body) }
        }
    }
}

/// A signed-in page: the top bar with the navigation, then `content`.
pub fn page(chrome: &Chrome<'_>, section: Section, title: &str, content: Markup) -> Markup {
    let link = |target: Section, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(target == section).then_some("page")] { (label) } }
    };
    document(
        title,
        chrome.project,
        html! {
            header class="topbar" {
                a class="brand" href="/" { span class="logo" aria-hidden="true" { "◆" } "Mayfly" span class="project" { (chrome.project) } }
                nav aria-label="Sections" {
                    (link(Section::Runs, "/", "Runs"))
                    (link(Section::Queues, "/queues", "Queues"))
                    (link(Section::Functions, "/functions", "Functions"))
                    (link(Section::Experiments, "/experiments", "Experiments"))
                    (link(Section::Audit, "/audit", "Audit"))
                }
                form class="who" method="post" action="/sign-out" {
                    span class="principal" title="Signed in as" { (chrome.principal) }
                    button type="submit" class="button-quiet" { "Sign out" }
                }
            }
            main { (content) }
            footer { "Rendered " (format::instant(chrome.now)) ". Live figures refresh on their own." }
        },
    )
}

/// The sign-in page; `error` says why the last attempt failed.
pub fn sign_in(project: &str, next: &str, error: Option<&str>) -> Markup {
    document(
        "Sign in",
        project,
        html! {
            main class="sign-in" {
                form class="card sign-in-card" method="post" action="/sign-in" {
                    h1 { span class="logo" aria-hidden="true" { "◆" } " Mayfly" }
                    p class="muted" { "Dashboard of project " strong { (project) } ". Paste an API token (from " code { "mayfly tokens create" } ") to sign in." }
                    @if let Some(error) = error {
                        p class="alert" role="alert" { (error) }
                    }
                    label for="token" { "Token" }
                    input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required autofocus;
                    input type="hidden" name="next" value=(next);
                    button type="submit" class="button-primary" { "Sign in" }
                    p class="fine-print" { "The token is kept in a secure, HttpOnly cookie for this browser session only." }
                }
            }
        },
    )
}

/// The page for a request that could not be checked or recorded: nothing
/// of the project is shown, and reloading may work.
pub fn unavailable(project: &str, message: &str) -> Markup {
    document(
        "Unavailable",
        project,
        html! {
            main class="sign-in" {
                section class="card sign-in-card" {
                    h1 { span class="logo" aria-hidden="true" { "◆" } " Mayfly" }
                    p class="alert" role="alert" { (message) }
                    p { "Nothing is shown until the access is recorded. Reload the page to try again." }
                }
            }
        },
    )
}

/// A page for an error: what happened, and a way back.
pub fn error_page(chrome: &Chrome<'_>, status: u16, message: &str) -> Markup {
    page(
        chrome,
        Section::Runs,
        "Error",
        html! {
            section class="empty" {
                h1 { (status) }
                p { (message) }
                p { a href="/" { "Back to the runs" } }
            }
        },
    )
}

fn badge(status: mayfly_core::run::RunStatus) -> Markup {
    html! { span class={ "badge badge-" (status_tone(status)) } data-badge { (status_label(status)) } }
}

fn item_badge(status: ItemStatus) -> Markup {
    let tone = match status {
        ItemStatus::Pending => "neutral",
        ItemStatus::Leased => "active",
        ItemStatus::Done => "good",
        ItemStatus::DeadLettered => "bad",
        ItemStatus::Returned => "neutral",
    };
    let label = match status {
        ItemStatus::DeadLettered => "dead-lettered",
        ItemStatus::Returned => "back in its queue",
        other => other.as_str(),
    };
    html! { span class={ "badge badge-" (tone) } { (label) } }
}

/// A progress bar as SVG (so its parts are attributes the page's security
/// policy allows, not inline styles): done, dead-lettered and leased.
fn progress_bar(progress: &Progress, large: bool) -> Markup {
    let [done_x, done_w] = progress.segments.done;
    let [dead_x, dead_w] = progress.segments.dead_lettered;
    let [leased_x, leased_w] = progress.segments.leased;
    html! {
        svg class={ "progress" @if large { " progress-large" } } viewBox="0 0 100 10" preserveAspectRatio="none"
            role="progressbar" aria-label="Items finished" aria-valuemin="0" aria-valuemax="100" {
            rect class="segment-track" x="0" y="0" width="100" height="10" {}
            rect class="segment-done" data-segment="done" x=(done_x) y="0" width=(done_w) height="10" {}
            rect class="segment-dead" data-segment="dead_lettered" x=(dead_x) y="0" width=(dead_w) height="10" {}
            rect class="segment-leased" data-segment="leased" x=(leased_x) y="0" width=(leased_w) height="10" {}
        }
    }
}

/// The runs list, newest first.
pub fn runs(chrome: &Chrome<'_>, runs: &[RunSummary]) -> Markup {
    page(
        chrome,
        Section::Runs,
        "Runs",
        html! {
            div class="page-head" {
                h1 { "Runs" }
                p class="muted" { "Batch-job runs, newest first. Progress of running jobs updates live." }
            }
            @if runs.is_empty() {
                section class="empty card" {
                    h2 { "No runs yet" }
                    p { "Start one with " code { "mayfly run JOB" } ", or let a schedule or an alarm start it." }
                }
            } @else {
                div class="table-wrap card" {
                    table class="data" {
                        thead { tr {
                            th { "Run" } th { "Job" } th { "Status" } th class="progress-col" { "Progress" }
                            th { "Started" } th class="num" { "Makespan" } th class="num" { "Cost" }
                        } }
                        tbody data-live-rows=[runs.iter().any(|run| !run.is_finished()).then_some("/runs.json")] {
                            @for run in runs {
                                @let progress = run.progress();
                                tr data-run-id=(run.id) data-live-row=[(!run.is_finished()).then_some("")] {
                                    td { a class="mono" href={ "/runs/" (run.id) } { (run.id) } }
                                    td { (run.job) }
                                    td { (badge(run.status)) }
                                    td class="progress-col" {
                                        div class="progress-cell" {
                                            (progress_bar(&progress, false))
                                            span class="num progress-text" { span data-field="percent" { (progress.percent) } " · " span data-field="summary" { (progress.summary) } }
                                        }
                                    }
                                    td { @if let Some(started) = run.started_at { time datetime=(started.to_rfc3339()) { (format::instant(started)) } } @else { span class="muted" { "not yet" } } }
                                    td class="num" data-field="makespan" { (progress.makespan) }
                                    td class="num" data-field="cost" { (progress.cost) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What a run's page shows besides its summary.
pub struct RunDetail<'a> {
    pub run: &'a RunSummary,
    pub timeline: &'a Timeline,
    pub workers: &'a [WorkerRecord],
    pub ledger: &'a LedgerPage<'a>,
}

/// One page of a run's item ledger.
pub struct LedgerPage<'a> {
    pub items: &'a [RunItem],
    pub status: Option<ItemStatus>,
    /// The item this page starts after (`None` on the first page).
    pub after: Option<&'a str>,
    /// Whether there is a page after this one.
    pub has_more: bool,
}

/// A run's page: live progress, report, timeline, workers and the ledger.
pub fn run(chrome: &Chrome<'_>, detail: &RunDetail<'_>) -> Markup {
    let run = detail.run;
    let progress = run.progress();
    page(
        chrome,
        Section::Runs,
        &run.id,
        html! {
            nav class="crumbs" aria-label="Breadcrumb" { a href="/" { "Runs" } " / " span class="mono" { (run.id) } }
            section class="run-head" data-live=[(!run.is_finished()).then(|| format!("/runs/{}/progress.json", run.id))] {
                div class="page-head" {
                    h1 { "Run of " span class="job" { (run.job) } " " (badge(run.status)) }
                    p class="muted" {
                        "Triggered by " code { (run.trigger) } " · created " (format::instant(run.created_at))
                        @if let Some(started) = run.started_at { " · started " (format::instant(started)) }
                        @if let Some(finished) = run.finished_at { " · finished " (format::instant(finished)) }
                    }
                    p { a class="button-quiet" href={ "/runs/" (run.id) "/logs" } { "Live log tail →" } }
                }
                div class="cards" {
                    div class="card stat stat-wide" {
                        div class="stat-label" { "Progress" }
                        div class="stat-value" { span data-field="percent" id="progress-percent" { (progress.percent) } }
                        (progress_bar(&progress, true))
                        div class="stat-note" { span data-field="summary" id="progress-summary" { (progress.summary) } " finished · " span data-field="attempts" { (progress.attempts) } " attempts" }
                    }
                    div class="card stat" { div class="stat-label" { "Done" } div class="stat-value num" data-field="done" { (progress.done) } }
                    div class="card stat" { div class="stat-label" { "In flight" } div class="stat-value num" data-field="leased" { (progress.leased) } }
                    div class="card stat" { div class="stat-label" { "Pending" } div class="stat-value num" data-field="pending" { (progress.pending) } }
                    div class="card stat" { div class="stat-label" title="Items that failed their last allowed attempt" { "Dead letters" } div class="stat-value num" data-field="dead_lettered" { (progress.dead_lettered) } }
                    div class="card stat" { div class="stat-label" data-field="makespan_label" { (progress.makespan_label) } div class="stat-value num" data-field="makespan" { (progress.makespan) } }
                    div class="card stat" title="Estimated under the project's pricing; known when the run reports" { div class="stat-label" { "Cost (est.)" } div class="stat-value num" data-field="cost" { (progress.cost) } }
                }
            }
            @if let Some(error) = &run.error { p class="alert" role="alert" { strong { "The run failed: " } (error) } }
            @if let Some(error) = &run.report_error { p class="alert" role="alert" { (error) } }
            @if let Some(report) = &run.report {
                section class="card" {
                    h2 { "Report" }
                    dl class="facts" {
                        dt { "Items expected" } dd class="num" { (format::count(report.items_expected)) }
                        dt { "Done" } dd class="num" { (format::count(report.items_done)) }
                        dt { "Failed attempts" } dd class="num" { (format::count(report.items_failed_attempts)) }
                        dt { "Dead-lettered" } dd class="num" { (format::count(report.items_dead_lettered)) }
                        dt { "Retries" } dd class="num" { (format::count(report.retries)) }
                        dt { "Makespan" } dd class="num" { (format::duration(report.makespan)) }
                        dt { "Estimated cost" } dd class="num" { (format::cost(report.estimated_cost)) }
                    }
                    @if !report.notes.is_empty() {
                        ul class="notes" { @for note in &report.notes { li { (note) } } }
                    }
                }
            }
            section class="card" {
                div class="section-head" {
                    h2 { "Timeline" }
                    ul class="legend" {
                        @for outcome in AttemptOutcome::ALL {
                            li { span class={ "swatch swatch-" (outcome.as_str()) } {} (chart::outcome_label(outcome)) }
                        }
                    }
                }
                div class="chart" data-fragment=[(!run.is_finished()).then(|| format!("/runs/{}/timeline.svg", run.id))] {
                    @if detail.timeline.bars.is_empty() { p class="muted" { "No item has been leased yet." } }
                    @else { (chart::timeline_svg(detail.timeline)) }
                }
            }
            section class="card" {
                h2 { "Workers" }
                div class="table-wrap" data-fragment=[(!run.is_finished()).then(|| format!("/runs/{}/workers.html", run.id))] {
                    (workers_table(detail.workers))
                }
            }
            section class="card" id="ledger" { (ledger(&run.id, detail.ledger)) }
        },
    )
}

/// The workers of a run as a table (also served alone, for live refresh).
pub fn workers_table(workers: &[WorkerRecord]) -> Markup {
    html! {
        @if workers.is_empty() {
            p class="muted" { "No worker has started yet." }
        } @else {
            table class="data" {
                thead { tr {
                    th { "Worker" } th { "Resource" } th { "Started" } th { "Ended" }
                    th class="num" { "Done" } th class="num" { "Failed" } th class="num" { "Busy" } th { "Sealed log" }
                } }
                tbody {
                    @for worker in workers {
                        tr {
                            td class="mono" { (worker.worker) }
                            td class="mono muted" { (worker.resource) }
                            td { (format::instant(worker.started_at)) }
                            td {
                                @match (&worker.end, worker.stopped_at) {
                                    (Some(end), Some(at)) => { (end) " · " (format::instant(at)) }
                                    (Some(end), None) => { (end) }
                                    _ => { span class="badge badge-active" { "live" } }
                                }
                            }
                            td class="num" { (format::count(worker.items_done)) }
                            td class="num" { (format::count(worker.items_failed)) }
                            td class="num" { (format::duration(worker.busy)) }
                            td class="mono small" {
                                @if let Some(key) = &worker.log_object {
                                    span title=[worker.log_sha256.as_ref().map(|sha| format!("SHA-256 {sha}"))] { (key) }
                                } @else { span class="muted" { "—" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn ledger(run: &str, page: &LedgerPage<'_>) -> Markup {
    let filter_link = |status: Option<ItemStatus>, label: &str| {
        let href = match status {
            Some(status) => format!("/runs/{run}?status={}#ledger", status.as_str()),
            None => format!("/runs/{run}#ledger"),
        };
        html! { a href=(href) class="tab" aria-current=[(status == page.status).then_some("true")] { (label) } }
    };
    let status_query = page.status.map(|status| format!("status={}&", status.as_str())).unwrap_or_default();
    html! {
        div class="section-head" {
            h2 { "Item ledger" }
            nav class="tabs" aria-label="Filter items by status" {
                (filter_link(None, "All"))
                (filter_link(Some(ItemStatus::Pending), "Pending"))
                (filter_link(Some(ItemStatus::Leased), "Leased"))
                (filter_link(Some(ItemStatus::Done), "Done"))
                (filter_link(Some(ItemStatus::DeadLettered), "Dead-lettered"))
            }
        }
        @if page.items.is_empty() {
            p class="muted" { @if page.after.is_some() { "No more items." } @else { "No items here." } }
        } @else {
            div class="table-wrap" {
                table class="data" {
                    thead { tr { th { "Item" } th { "Status" } th class="num" { "Attempts" } th { "Worker" } th { "Updated" } th { "Last error" } } }
                    tbody {
                        @for item in page.items {
                            tr {
                                td class="mono" { (item.item) }
                                td { (item_badge(item.status)) }
                                td class="num" { (item.attempts) }
                                td class="mono" { (item.worker.as_deref().unwrap_or("—")) }
                                td { (format::instant(item.updated_at)) }
                                td class="error-text" { (item.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        div class="pager" {
            @if page.after.is_some() { a href={ "/runs/" (run) "?" (status_query) "#ledger" } { "← First page" } }
            @if let (true, Some(last)) = (page.has_more, page.items.last()) {
                a href={ "/runs/" (run) "?" (status_query) "after=" (encode(&last.item)) "#ledger" } { "Next page →" }
            }
        }
    }
}

/// Percent-encode a query value.
fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, crate::auth::QUERY_VALUE).to_string()
}

/// One line of a live log, as the tail shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    pub worker: String,
    pub text: String,
}

/// What the log tail page shows: the lines so far, or the sealed logs of a finished run.
pub struct LogTail<'a> {
    pub run: &'a RunSummary,
    pub lines: &'a [LogLine],
    /// Where polling resumes (see `crate::live_logs::Cursor`).
    pub cursor: &'a str,
    /// Lines left out at the start (the tail shows only the last ones).
    pub skipped: usize,
    pub workers: &'a [WorkerRecord],
}

/// The live log tail of a run.
pub fn log_tail(chrome: &Chrome<'_>, tail: &LogTail<'_>) -> Markup {
    let run = tail.run;
    page(
        chrome,
        Section::Runs,
        &format!("Logs of {}", run.id),
        html! {
            nav class="crumbs" aria-label="Breadcrumb" { a href="/" { "Runs" } " / " a class="mono" href={ "/runs/" (run.id) } { (run.id) } " / logs" }
            div class="page-head" {
                h1 { "Log tail " (badge(run.status)) }
                p class="muted" { "Workers' output of run " span class="mono" { (run.id) } " (job " (run.job) "), newest at the bottom." }
            }
            @if run.is_finished() {
                section class="card" {
                    h2 { "The run has ended" }
                    p { "Its workers' logs were sealed (zstd, SHA-256) into the job's logs bucket. Read them with " code { "mayfly logs " (run.id) } "." }
                    (workers_table(tail.workers))
                }
            } @else {
                section class="card log-card" {
                    div class="section-head" {
                        h2 { "Live" }
                        p class="muted small" { span data-log-status { "following" } " · " span data-log-count { (tail.lines.len()) } " lines" }
                    }
                    @if tail.skipped > 0 { p class="muted small" { (format::count(tail.skipped as u64)) " earlier lines not shown." } }
                    pre class="log" data-log-url={ "/runs/" (run.id) "/logs.json" } data-cursor=(tail.cursor) tabindex="0" aria-live="polite" {
                        @for line in tail.lines { (log_line(line)) }
                    }
                }
            }
        },
    )
}

fn log_line(line: &LogLine) -> Markup {
    html! { span class="line" { span class="worker" { (line.worker) } " " (line.text) "\n" } }
}

/// The queues: depth, in flight, oldest age, and dead-letter depth.
pub fn queues(chrome: &Chrome<'_>, queues: &[QueueRow]) -> Markup {
    page(
        chrome,
        Section::Queues,
        "Queues",
        html! {
            div class="page-head" {
                h1 { "Queues" }
                p class="muted" { "Counts are exact at the moment this page was rendered." }
            }
            @if queues.is_empty() {
                section class="empty card" { h2 { "No queues" } p { "Declare queues in " code { "mayfly.toml" } " and run " code { "mayfly deploy" } "." } }
            } @else {
                div class="table-wrap card" {
                    table class="data" {
                        thead { tr {
                            th { "Queue" } th class="num" { "Depth" } th class="num" { "Visible" } th class="num" { "In flight" }
                            th class="num" { "Delayed" } th class="num" { "Oldest" } th { "Dead-letter queue" } th class="num" { "DLQ depth" }
                        } }
                        tbody {
                            @for queue in queues {
                                tr {
                                    td { span class="mono" { (queue.name) } @if queue.is_dead_letter_queue { " " span class="badge badge-neutral" { "DLQ" } } }
                                    td class="num strong" { (format::count(queue.depth())) }
                                    td class="num" { (format::count(queue.stats.visible)) }
                                    td class="num" { (format::count(queue.stats.in_flight)) }
                                    td class="num" { (format::count(queue.stats.delayed)) }
                                    td class="num" { (queue.stats.oldest_age.map(format::duration).unwrap_or_else(|| "—".to_owned())) }
                                    td class="mono" { (queue.dead_letter.as_ref().map(|(name, _)| name.as_str()).unwrap_or("—")) }
                                    td class="num" {
                                        @match &queue.dead_letter {
                                            Some((_, 0)) => { "0" }
                                            Some((_, depth)) => { span class="badge badge-bad" { (format::count(*depth)) } }
                                            None => { "—" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The functions: invocations, errors, p50/p95 and cold starts, with a latency chart.
pub fn functions(chrome: &Chrome<'_>, functions: &[FunctionRow], deployed: bool) -> Markup {
    let latency: Vec<LatencyRow> = functions
        .iter()
        .filter_map(|row| {
            Some(LatencyRow { function: row.name.clone(), p50: row.stats.p50_duration?, p95: row.stats.p95_duration? })
        })
        .collect();
    page(
        chrome,
        Section::Functions,
        "Functions",
        html! {
            div class="page-head" {
                h1 { "Functions" }
                p class="muted" { "From the invocation ledger: every invocation, recorded without instrumenting the code." }
            }
            @if functions.is_empty() {
                section class="empty card" {
                    h2 { "No functions" }
                    p { @if deployed { "The deployed architecture declares no functions." } @else { "Nothing is deployed yet: run " code { "mayfly deploy" } "." } }
                }
            } @else {
                @if !latency.is_empty() {
                    section class="card" {
                        div class="section-head" {
                            h2 { "Duration" }
                            ul class="legend" { li { span class="swatch swatch-p50" {} "p50" } li { span class="swatch swatch-p95" {} "p95" } }
                        }
                        div class="chart" { (chart::latency_svg(&latency)) }
                    }
                }
                div class="table-wrap card" {
                    table class="data" {
                        thead { tr {
                            th { "Function" } th { "Runtime" } th class="num" { "Invocations" } th class="num" { "Errors" } th class="num" { "Error rate" }
                            th class="num" { "p50" } th class="num" { "p95" } th class="num" { "Cold starts" } th { "Last invoked" }
                        } }
                        tbody {
                            @for row in functions {
                                tr {
                                    td class="mono" { (row.name) }
                                    td { (row.runtime) }
                                    td class="num" { (format::count(row.stats.invocations)) }
                                    td class="num" { @if row.stats.errors > 0 { span class="badge badge-bad" { (format::count(row.stats.errors)) } } @else { "0" } }
                                    td class="num" { (row.error_rate()) }
                                    td class="num" { (row.stats.p50_duration.map(format::millis).unwrap_or_else(|| "—".to_owned())) }
                                    td class="num" { (row.stats.p95_duration.map(format::millis).unwrap_or_else(|| "—".to_owned())) }
                                    td class="num" { (format::count(row.stats.cold_starts)) }
                                    td { (row.stats.last_invoked.map(|at| format::ago(at, chrome.now)).unwrap_or_else(|| "never".to_owned())) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The latest audit: when, what ran it, how much it checked, and its findings
/// in the order the audit gave them (most serious rules first).
pub fn audit(chrome: &Chrome<'_>, latest: Option<&AuditRecord>) -> Markup {
    page(
        chrome,
        Section::Audit,
        "Audit",
        html! {
            div class="page-head" {
                h1 { "Audit findings" }
                p class="muted" { "The latest " code { "mayfly audit" } ": it runs after every deploy and every run, and by hand." }
            }
            @match latest {
                None => {
                    section class="empty card" {
                        h2 { "No audit has run" }
                        p { "The state store holds no audit: run " code { "mayfly audit" } ". "
                            "Its findings (required tags, encryption, networks, orphaned workers, budgets) appear here." }
                    }
                }
                Some(audit) => {
                    div class="cards" {
                        div class="card stat" { div class="stat-label" { "Audited" } div class="stat-value" { (format::ago(audit.at, chrome.now)) } }
                        div class="card stat" { div class="stat-label" { "Trigger" } div class="stat-value mono" { (audit.trigger) } }
                        div class="card stat" { div class="stat-label" { "Resources" } div class="stat-value num" { (format::count(audit.resources_checked)) } }
                        div class="card stat" { div class="stat-label" { "Violations" } div class="stat-value num" { (audit.count(AuditSeverity::Violation)) } }
                        div class="card stat" { div class="stat-label" { "Warnings" } div class="stat-value num" { (audit.count(AuditSeverity::Warning)) } }
                    }
                    @if audit.findings.is_empty() {
                        section class="empty card" {
                            h2 { "Nothing found" }
                            p { "Every resource the audit inventoried meets the policy." }
                        }
                    } @else {
                        div class="table-wrap card" {
                            table class="data" {
                                thead { tr { th { "Severity" } th { "Rule" } th { "Resource" } th { "Finding" } th { "Remedy" } } }
                                tbody {
                                    @for finding in &audit.findings {
                                        tr data-severity=(finding.severity.as_str()) {
                                            td { span class={ "badge " (severity_tone(finding.severity)) } { (finding.severity.as_str()) } }
                                            td class="mono" { (finding.rule) }
                                            td { span class="muted" { (finding.resource_kind) " " } span class="mono" { (finding.resource) } }
                                            td { (finding.message) }
                                            td { (finding.remedy) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn outcome_tone(outcome: ExperimentOutcome) -> &'static str {
    match outcome {
        ExperimentOutcome::Completed | ExperimentOutcome::Applied => "badge-good",
        ExperimentOutcome::Failed | ExperimentOutcome::Refused => "badge-bad",
    }
}

/// The recorded experiments, newest first: what ran, how it ended, its verdict.
pub fn experiments(chrome: &Chrome<'_>, records: &[ExperimentRecord]) -> Markup {
    page(
        chrome,
        Section::Experiments,
        "Experiments",
        html! {
            div class="page-head" {
                h1 { "Experiments" }
                p class="muted" { code { "mayfly experiment run" } " and " code { "mayfly deploy --evaluate" } ": variants compared by measurement, newest first." }
            }
            @if records.is_empty() {
                section class="empty card" {
                    h2 { "No experiment recorded" }
                    p { "Run " code { "mayfly experiment run FILE" } ", or deploy with " code { "--evaluate" } "; its verdicts appear here." }
                }
            } @else {
                div class="table-wrap card" {
                    table class="data" {
                        thead { tr { th { "#" } th { "Experiment" } th { "Outcome" } th { "Finished" } th { "Runs" } th { "Verdict" } } }
                        tbody {
                            @for record in records {
                                @let experiment = &record.experiment;
                                tr data-experiment=(record.id) {
                                    td class="num" { a href={ "/experiments/" (record.id) } { (record.id) } }
                                    td { a href={ "/experiments/" (record.id) } { (experiment.name) } div class="muted" { (experiment.trigger) } }
                                    td {
                                        span class={ "badge " (outcome_tone(experiment.outcome)) } { (experiment.outcome.as_str()) }
                                        @if let Some(version) = experiment.deployment_version { " " span class="muted" { "as version " (version) } }
                                    }
                                    td { (format::ago(record.finished_at, chrome.now)) }
                                    td class="num" { (experiment.details.runs.len()) }
                                    td {
                                        @if let Some(error) = &experiment.details.error {
                                            (error.lines().next().unwrap_or_default())
                                        } @else {
                                            @for summary in &experiment.details.summaries { div { (summary) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One experiment: its verdicts, each metric's ratio with its interval and
/// p-value, a strip plot of every run per metric (the HTML report's), and
/// the runs in the order they ran.
pub fn experiment(chrome: &Chrome<'_>, record: &ExperimentRecord) -> Markup {
    let experiment = &record.experiment;
    let details = &experiment.details;
    let title = format!("Experiment {}", record.id);
    page(
        chrome,
        Section::Experiments,
        &title,
        html! {
            nav class="crumbs" aria-label="Breadcrumb" { a href="/experiments" { "Experiments" } " / " span class="mono" { (record.id) } }
            div class="page-head" {
                h1 { (experiment.name) }
                p class="muted" {
                    span class={ "badge " (outcome_tone(experiment.outcome)) } { (experiment.outcome.as_str()) }
                    " " (experiment.trigger) " · baseline " span class="mono" { (experiment.baseline) }
                    " · " (details.repetitions) " repetitions, seed " (details.seed)
                    " · started " (format::instant(experiment.started_at)) ", finished " (format::ago(record.finished_at, chrome.now))
                    @if let Some(version) = experiment.deployment_version { " · applied as deployment version " (version) }
                }
            }
            @if let Some(error) = &details.error {
                section class="card" data-error="" { h2 { "Error" } pre class="mono" { (error) } }
            }
            @if !details.summaries.is_empty() {
                section class="card" {
                    h2 { "Verdict" }
                    ul { @for summary in &details.summaries { li { (summary) } } }
                }
            }
            @if !details.comparisons.is_empty() {
                div class="table-wrap card" {
                    table class="data" {
                        thead { tr { th { "Metric" } th { "Variant" } th { "Median" } th { "Baseline" } th { "Ratio (95% CI)" } th { "p" } th { "Verdict" } } }
                        tbody {
                            @for comparison in &details.comparisons {
                                @let metric = mayfly_experiment::Metric::from_name(&comparison.metric);
                                @let shown = |value: f64| metric.map_or_else(|| format!("{value:.3}"), |metric| metric.format(value));
                                tr data-metric=(comparison.metric) data-differs=(comparison.differs) {
                                    td class="mono" { (comparison.metric) }
                                    td class="mono" { (comparison.variant) }
                                    td class="num" { (shown(comparison.median)) }
                                    td class="num" { (shown(comparison.baseline_median)) }
                                    td class="num" {
                                        @match comparison.ratio {
                                            Some(ratio) => { (format!("{:.3} ({:.3}–{:.3})", ratio.ratio, ratio.low, ratio.high)) }
                                            None => { "—" }
                                        }
                                    }
                                    td class="num" { (comparison.p_value.map_or("—".to_owned(), |p| format!("{p:.4}"))) }
                                    td { @if comparison.differs { strong { (comparison.verdict) } } @else { (comparison.verdict) } }
                                }
                            }
                        }
                    }
                }
            }
            @if !details.runs.is_empty() {
                section class="card" {
                    h2 { "Per run" }
                    @for name in &details.metrics {
                        @if let Some(metric) = mayfly_experiment::Metric::from_name(name) {
                            (PreEscaped(mayfly_experiment::report::strip_chart(&format!("{name} per run"), metric, &strip_rows(record, name))))
                        }
                    }
                }
                div class="table-wrap card" {
                    table class="data" {
                        thead { tr { th { "#" } th { "Variant" } th { "Repetition" } th { "Run" } th { "Status" } @for name in &details.metrics { th { (name) } } } }
                        tbody {
                            @for run in &details.runs {
                                tr {
                                    td class="num" { (run.order) }
                                    td class="mono" { (run.variant) }
                                    td class="num" { (run.repetition) }
                                    td class="mono" { (run.run_id) }
                                    td { (run.status) }
                                    @for name in &details.metrics {
                                        td class="num" {
                                            @match (run.metrics.get(name), mayfly_experiment::Metric::from_name(name)) {
                                                (Some(value), Some(metric)) => { (metric.format(*value)) }
                                                _ => { "—" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Each variant's values of metric `name`, one per run, in the experiment's variant order.
fn strip_rows(record: &ExperimentRecord, name: &str) -> Vec<(String, Vec<f64>)> {
    record
        .experiment
        .variants
        .iter()
        .map(|variant| {
            let values = record
                .experiment
                .details
                .runs
                .iter()
                .filter(|run| &run.variant == variant)
                .filter_map(|run| run.metrics.get(name).copied())
                .collect();
            (variant.clone(), values)
        })
        .collect()
}

fn severity_tone(severity: AuditSeverity) -> &'static str {
    match severity {
        AuditSeverity::Violation => "badge-bad",
        AuditSeverity::Warning => "badge-active",
        AuditSeverity::Notice => "badge-neutral",
    }
}

/// Raw markup for an SVG fragment served alone.
pub fn svg_fragment(markup: Markup) -> PreEscaped<String> {
    PreEscaped(markup.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_core::run::RunStatus;
    use mayfly_state::{RunItemCounts, RunRecord};

    fn chrome() -> Chrome<'static> {
        Chrome { project: "chart-coding", principal: "token:ops", now: Timestamp(10_000) }
    }

    fn summary(id: &str, status: RunStatus) -> RunSummary {
        let record = RunRecord {
            id: id.to_owned(),
            job: mayfly_core::Name::new("nightly").unwrap(),
            deployment_version: Some(1),
            trigger: "manual".to_owned(),
            status,
            created_at: Timestamp(0),
            started_at: Some(Timestamp(1_000)),
            finished_at: None,
            deadline: Timestamp(99_000),
            budget: None,
            lease_owner: None,
            lease_until: None,
            coordinator_attempts: 1,
            error: None,
            report: None,
        };
        let counts =
            RunItemCounts { total: 4, pending: 2, leased: 1, done: 1, dead_lettered: 0, returned: 0, attempts: 2 };
        RunSummary::new(&record, counts, Timestamp(10_000))
    }

    #[test]
    fn the_audit_page_lists_the_latest_findings_escaped_or_says_none_ran() {
        assert!(audit(&chrome(), None).into_string().contains("No audit has run"));
        let finding = |severity, resource: &str| mayfly_state::AuditFinding {
            rule: "required-tags".to_owned(),
            severity,
            resource_kind: "bucket".to_owned(),
            resource: resource.to_owned(),
            message: "lacks <owner>".to_owned(),
            remedy: "add it".to_owned(),
        };
        let record = AuditRecord {
            id: 3,
            at: Timestamp(9_000),
            trigger: "run:run-1".to_owned(),
            resources_checked: 12,
            findings: vec![finding(AuditSeverity::Violation, "inbox"), finding(AuditSeverity::Notice, "logs")],
        };
        let html = audit(&chrome(), Some(&record)).into_string();
        assert!(html.contains("run:run-1") && html.contains("inbox") && html.contains("logs"), "{html}");
        assert!(html.contains("lacks &lt;owner&gt;"), "messages are escaped: {html}");
        assert_eq!(html.matches(r#"data-severity="violation""#).count(), 1);
        assert!(html.contains(r#"<span class="badge badge-bad">violation</span>"#), "{html}");
        let clean = AuditRecord { findings: Vec::new(), ..record };
        assert!(audit(&chrome(), Some(&clean)).into_string().contains("Nothing found"));
    }

    #[test]
    fn only_unfinished_runs_poll_for_progress_and_names_are_escaped() {
        let finished_only = runs(&chrome(), &[summary("run-old", RunStatus::Succeeded)]).into_string();
        assert!(!finished_only.contains("data-live"), "nothing to poll when every run has finished");
        let html =
            runs(&chrome(), &[summary("run-live", RunStatus::Running), summary("run-<b>", RunStatus::Succeeded)])
                .into_string();
        assert!(html.contains(r#"<tbody data-live-rows="/runs.json">"#), "{html}");
        assert!(html.contains(r#"<tr data-run-id="run-live" data-live-row="">"#), "{html}");
        assert_eq!(html.matches("data-live-row=").count(), 1, "a finished run does not poll");
        assert!(html.contains("run-&lt;b&gt;") && !html.contains("run-<b>"));
        assert!(html.contains("1 of 4 items") && html.contains("25%"));
        assert!(html.contains(r#"aria-current="page">Runs"#));
    }

    #[test]
    fn empty_states_say_what_to_do() {
        assert!(runs(&chrome(), &[]).into_string().contains("No runs yet"));
        assert!(queues(&chrome(), &[]).into_string().contains("No queues"));
        assert!(functions(&chrome(), &[], false).into_string().contains("Nothing is deployed yet"));
        assert!(audit(&chrome(), None).into_string().contains("No audit has run"));
    }

    #[test]
    fn the_sign_in_page_keeps_where_to_go_next_and_shows_the_error() {
        let html = sign_in("chart-coding", "/runs/run-1", Some("That token is not valid.")).into_string();
        assert!(html.contains(r#"name="next" value="/runs/run-1""#));
        assert!(html.contains("That token is not valid.") && html.contains(r#"type="password""#));
    }

    #[test]
    fn the_ledger_pages_by_item_and_keeps_its_filter() {
        let item = RunItem {
            run_id: "run-1".to_owned(),
            item: "a/b c".to_owned(),
            payload: vec![],
            status: ItemStatus::DeadLettered,
            attempts: 3,
            worker: Some("w-1".to_owned()),
            not_before: Timestamp(0),
            last_error: Some("exit 3".to_owned()),
            updated_at: Timestamp(5_000),
        };
        let page = LedgerPage {
            items: std::slice::from_ref(&item),
            status: Some(ItemStatus::DeadLettered),
            after: None,
            has_more: true,
        };
        let html = ledger("run-1", &page).into_string();
        assert!(html.contains("/runs/run-1?status=dead_lettered&amp;after=a%2Fb%20c#ledger"), "{html}");
        assert!(html.contains("dead-lettered") && html.contains("exit 3"));
    }
}
