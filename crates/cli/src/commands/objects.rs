//! Object commands: `put`, `get`, `ls`, `rm`, `cp` and `events`. Objects are
//! addressed as `BUCKET/KEY`; bodies stream from and to files or stdio.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use mayfly_buckets::ObjectInfo;
use mayfly_core::Name;
use serde::Serialize;

use crate::output::{Output, human_bytes, json_pairs, json_time, table};
use crate::project::Project;

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Where to store it: BUCKET/KEY.
    pub address: String,
    /// The file to read (default, or `-`: stdin).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The object: BUCKET/KEY.
    pub address: String,
    /// The file to write (default, or `-`: stdout).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// BUCKET or BUCKET/PREFIX; without it, list the buckets.
    pub address: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The object: BUCKET/KEY.
    pub address: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// The source object: BUCKET/KEY.
    pub from: String,
    /// The destination: BUCKET/KEY.
    pub to: String,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `BUCKET/KEY` (key required) or `BUCKET[/PREFIX]` (key optional).
fn parse_address(address: &str, key_required: bool) -> Result<(Name, Option<String>)> {
    let (bucket, key) = match address.split_once('/') {
        Some((bucket, key)) => (bucket, Some(key.to_owned()).filter(|k| !k.is_empty())),
        None => (address, None),
    };
    let bucket = Name::new(bucket).with_context(|| format!("`{address}` does not start with a bucket name"))?;
    if key_required && key.is_none() {
        anyhow::bail!("`{address}` names no object; write BUCKET/KEY, e.g. `inbox/charts/17.txt`");
    }
    Ok((bucket, key))
}

fn is_stdio(file: &Option<PathBuf>) -> bool {
    file.as_deref().is_none_or(|path| path == Path::new("-"))
}

/// An object as `--json` prints it.
#[derive(Serialize)]
struct ObjectView {
    bucket: Name,
    key: String,
    size: u64,
    etag: Option<String>,
    last_modified: String,
}

impl From<&ObjectInfo> for ObjectView {
    fn from(info: &ObjectInfo) -> ObjectView {
        ObjectView {
            bucket: info.bucket.clone(),
            key: info.key.clone(),
            size: info.size,
            etag: info.etag.clone(),
            last_modified: json_time(info.last_modified),
        }
    }
}

fn describe(info: &ObjectInfo) -> String {
    format!("{}/{} ({})", info.bucket, info.key, human_bytes(info.size))
}

pub async fn put(args: PutArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let (bucket, key) = parse_address(&args.address, true)?;
    let key = key.unwrap_or_default();
    let opened = Project::locate(project)?.open(false)?;
    let info = if is_stdio(&args.file) {
        opened.buckets.put(&bucket, &key, tokio::io::stdin()).await
    } else {
        let path = args.file.as_deref().unwrap_or(Path::new("-"));
        let file = tokio::fs::File::open(path).await.with_context(|| format!("cannot read {}", path.display()))?;
        opened.buckets.put(&bucket, &key, file).await
    }
    .with_context(|| format!("cannot put {}", args.address))?;
    output.emit(&ObjectView::from(&info), || format!("stored {}", describe(&info)))
}

pub async fn get(args: GetArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let (bucket, key) = parse_address(&args.address, true)?;
    let key = key.unwrap_or_default();
    let opened = Project::locate(project)?.open(false)?;
    if is_stdio(&args.file) {
        // The body goes to stdout, so nothing else may; `--json` has no effect here.
        opened.buckets.get(&bucket, &key, tokio::io::stdout()).await.map_err(|error| {
            // Only stdout is written here: a closed pipe is its reader leaving.
            if crate::output::is_broken_pipe(&error) {
                crate::output::StdoutClosed.into()
            } else {
                anyhow::Error::new(error).context(format!("cannot get {}", args.address))
            }
        })?;
        return Ok(());
    }
    let path = args.file.clone().unwrap_or_default();
    // Write next to the target and rename, so a failed download never leaves a partial file.
    let partial = path.with_extension(format!(
        "{}mayfly-partial",
        path.extension().map(|e| format!("{}.", e.to_string_lossy())).unwrap_or_default()
    ));
    let file =
        tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
    let result = opened.buckets.get(&bucket, &key, file).await;
    let info = match result {
        Ok(info) => info,
        Err(error) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error).with_context(|| format!("cannot get {}", args.address));
        }
    };
    tokio::fs::rename(&partial, &path).await.with_context(|| format!("cannot write {}", path.display()))?;
    output.emit(&ObjectView::from(&info), || format!("wrote {} to {}", describe(&info), path.display()))
}

pub async fn ls(args: LsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let Some(address) = args.address else {
        let buckets = opened.state.buckets()?;
        #[derive(Serialize)]
        struct BucketView {
            name: Name,
            created_at: String,
            tags: std::collections::BTreeMap<String, String>,
        }
        let views: Vec<BucketView> = buckets
            .iter()
            .map(|b| BucketView {
                name: b.name.clone(),
                created_at: json_time(b.created_at),
                tags: json_pairs(&b.tags),
            })
            .collect();
        return output.emit(&views, || {
            if buckets.is_empty() {
                return "no buckets; declare them in mayfly.toml and run `mayfly deploy`".to_owned();
            }
            table(
                &["BUCKET", "CREATED", "TAGS"],
                &buckets
                    .iter()
                    .map(|b| {
                        let tags = b.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
                        vec![b.name.to_string(), b.created_at.to_rfc3339(), tags]
                    })
                    .collect::<Vec<_>>(),
            )
        });
    };
    let (bucket, prefix) = parse_address(&address, false)?;
    let objects =
        opened.buckets.list(&bucket, prefix.as_deref()).await.with_context(|| format!("cannot list {address}"))?;
    let views: Vec<ObjectView> = objects.iter().map(ObjectView::from).collect();
    output.emit(&views, || {
        if objects.is_empty() {
            return format!("no objects in {address}");
        }
        let total: u64 = objects.iter().map(|o| o.size).sum();
        let mut text = table(
            &["KEY", "SIZE", "MODIFIED"],
            &objects
                .iter()
                .map(|o| vec![o.key.clone(), human_bytes(o.size), o.last_modified.to_rfc3339()])
                .collect::<Vec<_>>(),
        );
        text.push_str(&format!("{} object(s), {}", objects.len(), human_bytes(total)));
        text
    })
}

pub async fn rm(args: RmArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let (bucket, key) = parse_address(&args.address, true)?;
    let opened = Project::locate(project)?.open(false)?;
    opened
        .buckets
        .delete(&bucket, key.as_deref().unwrap_or_default())
        .await
        .with_context(|| format!("cannot delete {}", args.address))?;
    #[derive(Serialize)]
    struct Deleted {
        bucket: Name,
        key: String,
        deleted: bool,
    }
    let deleted = Deleted { bucket, key: key.unwrap_or_default(), deleted: true };
    output.emit(&deleted, || format!("deleted {}", args.address))
}

pub async fn cp(args: CpArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let (from_bucket, from_key) = parse_address(&args.from, true)?;
    let (to_bucket, to_key) = parse_address(&args.to, true)?;
    let opened = Project::locate(project)?.open(false)?;
    let info = opened
        .buckets
        .copy((&from_bucket, &from_key.unwrap_or_default()), (&to_bucket, &to_key.unwrap_or_default()))
        .await
        .with_context(|| format!("cannot copy {} to {}", args.from, args.to))?;
    output.emit(&ObjectView::from(&info), || format!("copied {} to {}", args.from, describe(&info)))
}

pub async fn mv(args: CpArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let (from_bucket, from_key) = parse_address(&args.from, true)?;
    let (to_bucket, to_key) = parse_address(&args.to, true)?;
    let (from_key, to_key) = (from_key.unwrap_or_default(), to_key.unwrap_or_default());
    let opened = Project::locate(project)?.open(false)?;
    // Copy first, then delete: a failure in between leaves both, never neither.
    let info = opened
        .buckets
        .copy((&from_bucket, &from_key), (&to_bucket, &to_key))
        .await
        .with_context(|| format!("cannot move {} to {}", args.from, args.to))?;
    opened
        .buckets
        .delete(&from_bucket, &from_key)
        .await
        .with_context(|| format!("copied {} to {} but cannot delete the original", args.from, args.to))?;
    output.emit(&ObjectView::from(&info), || format!("moved {} to {}", args.from, describe(&info)))
}

pub fn events(args: EventsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let events = opened.state.object_events_after(args.after, args.limit)?;
    #[derive(Serialize)]
    struct EventView {
        sequence: u64,
        bucket: Name,
        key: String,
        kind: mayfly_core::event::ObjectEventKind,
        size: u64,
        etag: Option<String>,
        at: String,
        /// Why Mayfly deleted the object itself; `null` for a user's delete and for `created`.
        reason: Option<mayfly_core::event::DeletionReason>,
    }
    let views: Vec<EventView> = events
        .iter()
        .map(|e| EventView {
            sequence: e.sequence,
            bucket: e.bucket.clone(),
            key: e.key.clone(),
            kind: e.kind,
            size: e.size,
            etag: e.etag.clone(),
            at: json_time(e.at),
            reason: e.reason,
        })
        .collect();
    output.emit(&views, || {
        if events.is_empty() {
            return format!("no events after {}", args.after);
        }
        table(
            &["SEQ", "AT", "EVENT", "OBJECT", "SIZE", "REASON"],
            &events
                .iter()
                .map(|e| {
                    vec![
                        e.sequence.to_string(),
                        e.at.to_rfc3339(),
                        e.kind.as_str().to_owned(),
                        format!("{}/{}", e.bucket, e.key),
                        human_bytes(e.size),
                        e.reason.map_or("-", |reason| reason.as_str()).to_owned(),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let (bucket, key) = parse_address("inbox/a/b.txt", true).unwrap();
        assert_eq!((bucket.as_str(), key.as_deref()), ("inbox", Some("a/b.txt")));
        assert_eq!(parse_address("inbox", false).unwrap().1, None);
        assert_eq!(parse_address("inbox/", false).unwrap().1, None);
        assert!(parse_address("inbox", true).unwrap_err().to_string().contains("names no object"));
        assert!(parse_address("In box/x", true).is_err());
    }
}
