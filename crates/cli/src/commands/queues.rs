//! Queue commands: `send`, `receive`, `ack`, `extend`, `queues` (statistics),
//! `peek` and `dlq list|redrive`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mayfly_core::queue::ReceiptHandle;
use mayfly_core::{Name, format_duration, parse_duration};
use mayfly_state::{DeleteOutcome, OutgoingMessage, ReceiveRequest, StateStore, StoredMessage};
use serde::Serialize;

use crate::exit_code::{Refused, UsageError};
use crate::output::{Output, json_millis, json_pairs, table};
use crate::project::Project;

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|error| error.to_string())
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not an attribute; write NAME=VALUE"))
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The queue.
    pub queue: Name,
    /// The message body (omit it to use --file, --lines or stdin).
    pub body: Option<String>,
    /// Read the body from this file (`-`: stdin).
    #[arg(long, conflicts_with_all = ["body", "lines"])]
    pub file: Option<PathBuf>,
    /// Send one message per line of stdin, in batches of 1,000 committed together.
    #[arg(long, conflicts_with = "body")]
    pub lines: bool,
    /// A message attribute NAME=VALUE; repeatable.
    #[arg(long = "attribute", value_parser = parse_attribute, value_name = "NAME=VALUE")]
    pub attributes: Vec<(String, String)>,
    /// Keep the message invisible this long (overrides the queue's delay).
    #[arg(long, value_parser = parse_duration_arg)]
    pub delay: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    pub queue: Name,
    /// At most this many messages.
    #[arg(long, default_value_t = 1)]
    pub max: usize,
    /// How long the messages stay leased (default: the queue's visibility timeout).
    #[arg(long, value_parser = parse_duration_arg)]
    pub visibility_timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct AckArgs {
    pub queue: Name,
    /// Receipts printed by `mayfly receive`.
    #[arg(required = true)]
    pub receipts: Vec<ReceiptHandle>,
}

#[derive(Debug, Args)]
pub struct ExtendArgs {
    pub queue: Name,
    pub receipt: ReceiptHandle,
    /// The lease ends this long from now; `0s` makes the message visible at once.
    #[arg(long, value_parser = parse_duration_arg)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Only this queue.
    pub queue: Option<Name>,
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    pub queue: Name,
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the messages in a queue's dead-letter queue, with why each is there.
    #[command(after_help = "Examples:\n  mayfly dlq list work\n  mayfly dlq list work-dlq --limit 50")]
    List {
        /// The queue, or its dead-letter queue.
        queue: Name,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Move every message of a dead-letter queue back to the queue it came from.
    #[command(after_help = "Examples:\n  mayfly dlq redrive work\n  mayfly dlq redrive work-dlq --to work-retry")]
    Redrive {
        /// The queue, or its dead-letter queue.
        queue: Name,
        /// Send them here instead of back where they came from.
        #[arg(long)]
        to: Option<Name>,
    },
}

fn read_body(args: &SendArgs) -> Result<Vec<u8>> {
    if let Some(body) = &args.body {
        return Ok(body.clone().into_bytes());
    }
    match args.file.as_deref() {
        Some(path) if path != Path::new("-") => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        }
        _ => {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body).context("cannot read stdin")?;
            Ok(body)
        }
    }
}

/// Refuse an attribute named twice (a message attribute has one value, and
/// `--json` shows attributes as an object, which cannot hold both) and one
/// named as the reserved trace header, which is no user attribute.
fn refuse_duplicate_attributes(attributes: &[(String, String)]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in attributes {
        if name == mayfly_core::TRACE_HEADER_ATTRIBUTE {
            return Err(UsageError(format!(
                "--attribute `{name}` is reserved: it holds the message's trace context, which Mayfly sets; choose another NAME"
            ))
            .into());
        }
        if !seen.insert(name.as_str()) {
            return Err(UsageError(format!(
                "--attribute `{name}` is given more than once; a message attribute has one value, so give each NAME once"
            ))
            .into());
        }
    }
    Ok(())
}

pub fn send(args: SendArgs, project: Option<&Path>, output: Output) -> Result<()> {
    refuse_duplicate_attributes(&args.attributes)?;
    let opened = Project::locate(project)?.open(false)?;
    if let Some(delay) = args.delay {
        let retention = opened.state.queue(&args.queue)?.config.retention;
        if delay >= retention {
            // The message would be dropped before it ever became visible.
            bail!(
                "--delay {} is not shorter than the retention of queue `{}` ({}), so the message would expire before it became visible; nothing was sent. Use a shorter --delay",
                mayfly_core::format_duration(delay),
                args.queue,
                mayfly_core::format_duration(retention)
            );
        }
    }
    let make = |body: Vec<u8>| OutgoingMessage { body, attributes: args.attributes.clone(), delay: args.delay };
    let mut ids = Vec::new();
    if args.lines {
        const BATCH: usize = 1_000;
        let mut batch = Vec::with_capacity(BATCH);
        for (number, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.with_context(|| format!("cannot read line {} of stdin", number + 1))?;
            if line.is_empty() {
                continue;
            }
            batch.push(make(line.into_bytes()));
            if batch.len() == BATCH {
                ids.extend(opened.state.send_messages(&args.queue, &batch).with_context(|| {
                    format!("cannot send to `{}` (the {} message(s) sent before were committed)", args.queue, ids.len())
                })?);
                batch.clear();
            }
        }
        if !batch.is_empty() {
            ids.extend(opened.state.send_messages(&args.queue, &batch).with_context(|| {
                format!("cannot send to `{}` (the {} message(s) sent before were committed)", args.queue, ids.len())
            })?);
        }
    } else {
        let message = make(read_body(&args)?);
        ids = opened
            .state
            .send_messages(&args.queue, std::slice::from_ref(&message))
            .with_context(|| format!("cannot send to `{}`", args.queue))?;
    }
    #[derive(Serialize)]
    struct Sent<'a> {
        queue: &'a Name,
        message_ids: &'a [u64],
    }
    output.emit(&Sent { queue: &args.queue, message_ids: &ids }, || match ids.as_slice() {
        [id] => format!("sent message {id} to {}", args.queue),
        _ => format!("sent {} message(s) to {}", ids.len(), args.queue),
    })
}

#[derive(Serialize)]
struct ReceivedView {
    message_id: u64,
    receipt: String,
    receive_count: u32,
    sent_at: String,
    lease_until: String,
    attributes: std::collections::BTreeMap<String, String>,
    /// UTF-8 bodies as text; others base16-encoded in `body_hex`.
    body: Option<String>,
    body_hex: Option<String>,
}

fn body_views(body: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(body) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(body.iter().map(|b| format!("{b:02x}")).collect())),
    }
}

pub fn receive(args: ReceiveArgs, project: Option<&Path>, output: Output) -> Result<()> {
    if args.max == 0 {
        bail!("--max must be at least 1");
    }
    let opened = Project::locate(project)?.open(false)?;
    let request = ReceiveRequest { max_messages: args.max, visibility_timeout: args.visibility_timeout };
    let messages = opened
        .state
        .receive_messages(&args.queue, request)
        .with_context(|| format!("cannot receive from `{}`", args.queue))?;
    let views: Vec<ReceivedView> = messages
        .iter()
        .map(|m| {
            let (body, body_hex) = body_views(&m.body);
            ReceivedView {
                message_id: m.message_id,
                receipt: m.receipt.to_string(),
                receive_count: m.receive_count,
                sent_at: m.sent_at.to_rfc3339(),
                lease_until: m.lease_until.to_rfc3339(),
                attributes: json_pairs(&mayfly_core::user_attributes(&m.attributes)),
                body,
                body_hex,
            }
        })
        .collect();
    output.emit(&views, || {
        if views.is_empty() {
            return format!("no visible messages in {}", args.queue);
        }
        let mut text = String::new();
        for view in &views {
            text.push_str(&format!(
                "receipt {}  (message {}, receive {}, leased until {})\n",
                view.receipt, view.message_id, view.receive_count, view.lease_until
            ));
            for (name, value) in &view.attributes {
                text.push_str(&format!("  {name}: {value}\n"));
            }
            match (&view.body, &view.body_hex) {
                (Some(body), _) => text.push_str(&format!("  {body}\n")),
                (None, Some(hex)) => text.push_str(&format!("  (binary, hex) {hex}\n")),
                _ => {}
            }
        }
        text.push_str(&format!("acknowledge with: mayfly ack {} <receipt>...", args.queue));
        text
    })
}

pub fn ack(args: AckArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let outcomes = opened
        .state
        .delete_messages(&args.queue, &args.receipts)
        .with_context(|| format!("cannot delete from `{}`", args.queue))?;
    #[derive(Serialize)]
    struct Outcome {
        receipt: String,
        deleted: bool,
    }
    #[derive(Serialize)]
    struct Acknowledged<'a> {
        queue: &'a Name,
        receipts: &'a [Outcome],
    }
    let rows: Vec<Outcome> = args
        .receipts
        .iter()
        .zip(&outcomes)
        .map(|(receipt, outcome)| Outcome { receipt: receipt.to_string(), deleted: *outcome == DeleteOutcome::Deleted })
        .collect();
    output.emit(&Acknowledged { queue: &args.queue, receipts: &rows }, || {
        rows.iter()
            .map(|row| {
                if row.deleted {
                    format!("deleted {}", row.receipt)
                } else {
                    format!(
                        "{}: lease lost (it lapsed, or the message was received again or deleted); not deleted",
                        row.receipt
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let lost = rows.iter().filter(|row| !row.deleted).count();
    if lost > 0 {
        return Err(Refused(format!("{lost} of {} receipt(s) no longer held their lease", rows.len())).into());
    }
    Ok(())
}

pub fn extend(args: ExtendArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    opened
        .state
        .change_visibility(&args.queue, args.receipt, args.timeout)
        .with_context(|| format!("cannot change the lease of {} in `{}`", args.receipt, args.queue))?;
    #[derive(Serialize)]
    struct Extended<'a> {
        queue: &'a Name,
        receipt: String,
        timeout_ms: u64,
    }
    let extended =
        Extended { queue: &args.queue, receipt: args.receipt.to_string(), timeout_ms: json_millis(args.timeout) };
    output.emit(&extended, || {
        if args.timeout.is_zero() {
            format!("{} is visible again", args.receipt)
        } else {
            format!("{} stays leased for {}", args.receipt, format_duration(args.timeout))
        }
    })
}

#[derive(Serialize)]
struct QueueRow {
    queue: Name,
    visible: u64,
    in_flight: u64,
    delayed: u64,
    oldest_age_ms: Option<u64>,
    dead_letter: Option<Name>,
    dead_letter_depth: Option<u64>,
}

pub fn stats(args: QueuesArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let records = match &args.queue {
        Some(name) => vec![opened.state.queue(name)?],
        None => opened.state.queues()?,
    };
    let mut rows = Vec::new();
    for record in records {
        let stats = opened.state.queue_stats(&record.name)?;
        // This queue's own dead letters: a dead-letter queue may serve several queues.
        let dead_letter_depth = match &record.config.dead_letter {
            Some(dlq) => Some(opened.state.dead_letters_from(dlq, &record.name)?),
            None => None,
        };
        rows.push(QueueRow {
            queue: record.name,
            visible: stats.visible,
            in_flight: stats.in_flight,
            delayed: stats.delayed,
            oldest_age_ms: stats.oldest_age.map(json_millis),
            dead_letter: record.config.dead_letter,
            dead_letter_depth,
        });
    }
    output.emit(&rows, || {
        if rows.is_empty() {
            return "no queues; declare them in mayfly.toml and run `mayfly deploy`".to_owned();
        }
        table(
            &["QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST", "DEAD LETTERS"],
            &rows
                .iter()
                .map(|row| {
                    vec![
                        row.queue.to_string(),
                        row.visible.to_string(),
                        row.in_flight.to_string(),
                        row.delayed.to_string(),
                        row.oldest_age_ms.map(|ms| format_age(Duration::from_millis(ms))).unwrap_or_else(|| "-".into()),
                        match (&row.dead_letter, row.dead_letter_depth) {
                            (Some(dlq), Some(depth)) => format!("{depth} in {dlq}"),
                            _ => "-".into(),
                        },
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}

/// `3m12s`-style ages.
fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0 => format!("{}ms", age.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs / 60) % 60),
    }
}

#[derive(Serialize)]
struct StoredView {
    message_id: u64,
    sent_at: String,
    visible_at: String,
    receive_count: u32,
    attributes: std::collections::BTreeMap<String, String>,
    body: Option<String>,
    body_hex: Option<String>,
    dead_letter_source: Option<Name>,
    dead_letter_reason: Option<String>,
}

fn stored_views(messages: &[StoredMessage]) -> Vec<StoredView> {
    messages
        .iter()
        .map(|m| {
            let (body, body_hex) = body_views(&m.body);
            StoredView {
                message_id: m.message_id,
                sent_at: m.sent_at.to_rfc3339(),
                visible_at: m.visible_at.to_rfc3339(),
                receive_count: m.receive_count,
                attributes: json_pairs(&mayfly_core::user_attributes(&m.attributes)),
                body,
                body_hex,
                dead_letter_source: m.dead_letter.as_ref().map(|d| d.source_queue.clone()),
                dead_letter_reason: m.dead_letter.as_ref().map(|d| d.reason.clone()),
            }
        })
        .collect()
}

fn render_stored(views: &[StoredView], empty: String) -> String {
    if views.is_empty() {
        return empty;
    }
    let mut text = String::new();
    for view in views {
        text.push_str(&format!(
            "message {}  sent {}  receives {}\n",
            view.message_id, view.sent_at, view.receive_count
        ));
        if let (Some(source), Some(reason)) = (&view.dead_letter_source, &view.dead_letter_reason) {
            text.push_str(&format!("  from {source}: {reason}\n"));
        }
        match (&view.body, &view.body_hex) {
            (Some(body), _) => text.push_str(&format!("  {body}\n")),
            (None, Some(hex)) => text.push_str(&format!("  (binary, hex) {hex}\n")),
            _ => {}
        }
    }
    text
}

pub fn peek(args: PeekArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let messages = opened
        .state
        .peek_messages(&args.queue, args.limit)
        .with_context(|| format!("cannot peek at `{}`", args.queue))?;
    let views = stored_views(&messages);
    output.emit(&views, || render_stored(&views, format!("{} is empty", args.queue)))
}

/// The dead-letter queue meant by `queue`: its configured dead-letter queue,
/// or `queue` itself when it is one (some queue names it) or has none.
fn dead_letter_queue_of(state: &dyn StateStore, queue: &Name) -> Result<Name> {
    let record = state.queue(queue)?;
    if let Some(dlq) = record.config.dead_letter {
        return Ok(dlq);
    }
    let is_some_queues_dead_letter = state.queues()?.iter().any(|q| q.config.dead_letter.as_ref() == Some(queue));
    if is_some_queues_dead_letter {
        return Ok(queue.clone());
    }
    Err(Refused(format!(
        "queue `{queue}` has no dead-letter queue and is not one; set `dead_letter` on it in mayfly.toml"
    ))
    .into())
}

pub fn dlq(command: DlqCommand, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    match command {
        DlqCommand::List { queue, limit } => {
            let dlq = dead_letter_queue_of(opened.state.as_ref(), &queue)?;
            let views = stored_views(&opened.state.peek_messages(&dlq, limit)?);
            output.emit(&views, || render_stored(&views, format!("dead-letter queue {dlq} is empty")))
        }
        DlqCommand::Redrive { queue, to } => {
            let dlq = dead_letter_queue_of(opened.state.as_ref(), &queue)?;
            let moved = opened
                .state
                .redrive_dead_letters(&dlq, to.as_ref())
                .with_context(|| format!("cannot redrive `{dlq}`"))?;
            #[derive(Serialize)]
            struct Redriven<'a> {
                dead_letter_queue: &'a Name,
                moved: u64,
            }
            output.emit(&Redriven { dead_letter_queue: &dlq, moved }, || match &to {
                Some(target) => format!("moved {moved} message(s) from {dlq} to {target}"),
                None => format!("moved {moved} message(s) from {dlq} back to their queues"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(format_age(Duration::from_millis(250)), "250ms");
        assert_eq!(format_age(Duration::from_secs(42)), "42s");
        assert_eq!(format_age(Duration::from_secs(192)), "3m12s");
        assert_eq!(format_age(Duration::from_secs(7_260)), "2h01m");
    }

    #[test]
    fn attributes_parse() {
        assert_eq!(parse_attribute("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_attribute("novalue").is_err());
        assert!(parse_attribute("=x").is_err());
    }
}
