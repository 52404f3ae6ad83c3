//! `mayfly demo`: a fresh project on embedded defaults, driven end to end
//! through the same library calls the commands use — deploy, objects landing
//! in a bucket, their events routed into a queue, a worker leasing, processing
//! and acknowledging them, a poison message dead-lettered after its receives
//! run out, and a redrive. It verifies every step and exits non-zero if any
//! check fails.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use mayfly_core::Name;
use mayfly_spec::RouteTarget;
use mayfly_state::{DeleteOutcome, OutgoingMessage, ReceiveRequest, StateStore};
use serde::Serialize;

use crate::commands::spec::{DeployArgs, InitArgs};
use crate::output::Output;
use crate::project::Project;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the demo project (default: a new directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many charts land in the inbox.
    #[arg(long, default_value_t = 200)]
    pub objects: u32,
    /// Keep the project afterwards (it is always kept with --dir).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct DemoSummary {
    pub project: PathBuf,
    pub objects_put: u32,
    pub events_routed: u64,
    pub messages_processed: u64,
    pub archived: usize,
    pub dead_lettered: u64,
    pub redriven: u64,
    pub elapsed_ms: u128,
}

fn name(text: &str) -> Name {
    Name::new(text).expect("demo resource names are valid") // constant names, checked by the demo test
}

fn step(output: Output, text: impl AsRef<str>) {
    if !output.json && !output.silent {
        println!("==> {}", text.as_ref());
    }
}

pub async fn run(args: DemoArgs, output: Output) -> Result<()> {
    let started = Instant::now();
    let keep = args.keep || args.dir.is_some();
    let dir = match args.dir.clone() {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("mayfly-demo-{}", std::process::id())),
    };
    let result = run_in(&dir, &args, output).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut summary = result?;
    summary.elapsed_ms = started.elapsed().as_millis();
    output.emit(&summary, || {
        format!(
            "demo passed in {:.1}s: {} objects put, {} events routed, {} messages processed, {} archived, {} dead-lettered and redriven{}",
            summary.elapsed_ms as f64 / 1000.0,
            summary.objects_put,
            summary.events_routed,
            summary.messages_processed,
            summary.archived,
            summary.dead_lettered,
            if keep { format!("\nproject kept in {}", dir.display()) } else { String::new() }
        )
    })
}

async fn run_in(dir: &std::path::Path, args: &DemoArgs, output: Output) -> Result<DemoSummary> {
    let mut summary = DemoSummary { project: dir.to_path_buf(), ..DemoSummary::default() };
    step(output, format!("creating a project in {}", dir.display()));
    if dir.join(crate::project::SPEC_FILE_NAME).exists() {
        bail!("{} already holds a project; the demo needs a fresh directory", dir.display());
    }
    // The sub-commands run silently: the demo narrates.
    crate::commands::spec::init(InitArgs { dir: dir.to_path_buf(), name: Some("mayfly-demo".into()) }, Output::silent())?;
    step(output, "deploying mayfly.toml (buckets inbox, archive, logs; queues work, work-dlq)");
    crate::commands::spec::deploy(DeployArgs { force: false, dry_run: false }, Some(dir), Output::silent()).await?;

    let located = Project::locate(Some(dir))?;
    let architecture = mayfly_spec::load(&located.spec_path())?.architecture;
    let opened = located.open(false)?;
    let (inbox, archive, work) = (name("inbox"), name("archive"), name("work"));
    let dead_letter = opened.state.queue(&work)?.config.dead_letter.context("the scaffold's `work` queue has no dead-letter queue")?;

    step(output, format!("putting {} charts into bucket inbox", args.objects));
    for number in 0..args.objects {
        let body = format!("patient {number:05}: chest pain, troponin elevated, ECG ST elevation\n");
        opened.buckets.put_bytes(&inbox, &format!("incoming/charts/{number:05}.txt"), body.into_bytes().into()).await?;
    }
    summary.objects_put = args.objects;

    step(output, "routing bucket events from the event log by the file's [[routes]] (inbox incoming/ -> work)");
    let consumer = "demo-router";
    let mut cursor = opened.state.consumer_cursor(consumer)?;
    loop {
        let events = opened.state.object_events_after(cursor, 500)?;
        let Some(last) = events.last() else { break };
        for route in &architecture.routes {
            let RouteTarget::Queue(queue) = &route.to else { continue };
            let messages: Vec<OutgoingMessage> = events
                .iter()
                .filter(|event| route.matches(event))
                .map(|event| OutgoingMessage::new(serde_json::json!({"bucket": event.bucket, "key": event.key}).to_string()))
                .collect();
            // Send, then advance the cursor: a crash in between re-sends (at least once).
            opened.state.send_messages(queue, &messages)?;
            summary.events_routed += messages.len() as u64;
        }
        cursor = last.sequence;
        opened.state.set_consumer_cursor(consumer, cursor)?;
    }
    ensure!(summary.events_routed == u64::from(args.objects), "routed {} events for {} objects", summary.events_routed, args.objects);
    print_stats(output, opened.state.as_ref(), &[work.clone(), dead_letter.clone()])?;

    step(output, "a worker leases batches of 10, archives each chart under a new name and acknowledges it");
    let poison_key = "incoming/charts/00013.txt";
    let short_lease = Duration::from_millis(150);
    let mut idle_rounds = 0;
    while idle_rounds < 20 {
        let batch = opened.state.receive_messages(&work, ReceiveRequest { max_messages: 10, visibility_timeout: Some(short_lease) })?;
        if batch.is_empty() {
            // Only the poison message's lease is outstanding; wait for it to lapse.
            idle_rounds += 1;
            tokio::time::sleep(short_lease).await;
            continue;
        }
        idle_rounds = 0;
        let mut receipts = Vec::new();
        for message in &batch {
            let request: serde_json::Value = serde_json::from_slice(&message.body)?;
            let key = request["key"].as_str().context("message without a key")?;
            if key == poison_key {
                continue; // this chart always "fails": never acknowledged
            }
            let new_key = key.replace("incoming/charts/", "coded/").replace(".txt", ".coded.txt");
            opened.buckets.copy((&inbox, key), (&archive, &new_key)).await?;
            receipts.push(message.receipt);
        }
        let outcomes = opened.state.delete_messages(&work, &receipts)?;
        summary.messages_processed += outcomes.iter().filter(|o| **o == DeleteOutcome::Deleted).count() as u64;
        let stats = opened.state.queue_stats(&work)?;
        if stats.visible + stats.in_flight + stats.delayed == 0 {
            break;
        }
    }
    summary.archived = opened.buckets.list(&archive, Some("coded/")).await?.len();
    ensure!(summary.archived == args.objects as usize - 1, "archived {} of {} charts", summary.archived, args.objects - 1);

    let dead = opened.state.peek_messages(&dead_letter, 10)?;
    summary.dead_lettered = dead.len() as u64;
    ensure!(summary.dead_lettered == 1, "expected the poison message in {dead_letter}, found {}", dead.len());
    if let Some(info) = &dead[0].dead_letter {
        step(output, format!("poison message dead-lettered from {}: {}", info.source_queue, info.reason));
    }
    print_stats(output, opened.state.as_ref(), &[work.clone(), dead_letter.clone()])?;

    step(output, format!("redriving {dead_letter} back into work"));
    summary.redriven = opened.state.redrive_dead_letters(&dead_letter, None)?;
    ensure!(summary.redriven == 1, "redrove {} messages", summary.redriven);
    print_stats(output, opened.state.as_ref(), &[work, dead_letter])?;
    Ok(summary)
}

fn print_stats(output: Output, state: &dyn StateStore, queues: &[Name]) -> Result<()> {
    if output.json || output.silent {
        return Ok(());
    }
    for queue in queues {
        let stats = state.queue_stats(queue)?;
        println!(
            "    {:<10} visible {:>4}  in flight {:>4}  delayed {:>3}  oldest {}",
            queue.as_str(),
            stats.visible,
            stats.in_flight,
            stats.delayed,
            stats.oldest_age.map(|age| format!("{}ms", age.as_millis())).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}
