//! The commented `mayfly.toml` that `mayfly init` writes: a small working
//! pipeline (files dropped in `inbox` are queued, renamed by a function and
//! stored in `archive`) that doubles as a tour of the file's sections.

use mayfly_core::Name;

/// The starter architecture file for a project named `project_name`.
pub fn scaffold(project_name: &Name) -> String {
    TEMPLATE.replace("{project_name}", project_name.as_str())
}

const TEMPLATE: &str = r#"# Mayfly architecture file (schema version 1).
# Check it with `mayfly validate`; apply it with `mayfly deploy`.

version = 1
name = "{project_name}"

# Tags every resource carries; a resource's own `tags` override these.
tags = { owner = "change-me", data-class = "internal" }

# Rules that `mayfly validate` and `mayfly audit` enforce.
[policy]
require_tags = ["owner", "data-class"]
encryption = "required"        # every bucket encrypted at rest
tls = "required"               # every network path leaving the machine is TLS
# networks = ["10.77.0.0/16"]  # docker workers may only run inside these
max_run_cost = 5.0             # largest estimated cost of one job run
log_retention = "90d"          # how long sealed run logs are kept

# Unit prices for cost estimates (in `currency`).
[pricing]
cpu_second = 0.00001
gb_second = 0.0000025
invocation = 0.0000002
worker_hour = 0.05
currency = "USD"

# Buckets hold objects and emit `created` / `deleted` events.
[buckets.inbox]                # drop files here

[buckets.archive]              # renamed files end up here

[buckets.logs]                 # sealed logs of job runs
retention = "90d"

# Queues deliver each message at least once.
[queues.work]
visibility_timeout = "2m"      # a received message is hidden this long
max_receives = 3               # then it moves to the dead-letter queue
dead_letter = "work-dlq"

[queues.work-dlq]              # messages that failed 3 times wait here
retention = "14d"

# Every file created under inbox/incoming/ becomes a message on `work`.
[[routes]]
from = { bucket = "inbox", events = ["created"], prefix = "incoming/" }
to = { queue = "work" }

# A function: event JSON on stdin, result JSON on stdout, logs on stderr.
[functions.rename]
runtime = "process"
command = ["python3", "functions/rename.py"]
env = { TARGET_BUCKET = "archive" }
timeout = "5m"
memory = "256MiB"
concurrency = 4
retries = { max_attempts = 3, backoff = "10s" }

# Messages on `work` invoke `rename`, up to 10 at a time.
[[triggers]]
queue = "work"
function = "rename"
batch_size = 10
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_is_valid_and_names_the_project() {
        let name = Name::new("chart-coding").unwrap();
        let text = scaffold(&name);
        let architecture = crate::parse("mayfly.toml", &text).unwrap_or_else(|diagnostics| panic!("{diagnostics}"));
        assert_eq!(architecture.name, name);
        for bucket in ["inbox", "archive", "logs"] {
            assert!(architecture.buckets.contains_key(&Name::new(bucket).unwrap()), "{bucket}");
        }
        let work = &architecture.queues[&Name::new("work").unwrap()];
        assert_eq!(work.dead_letter, Some(Name::new("work-dlq").unwrap()));
        let rename = &architecture.functions[&Name::new("rename").unwrap()];
        assert_eq!(rename.command, ["python3", "functions/rename.py"]);
        assert_eq!(architecture.routes.len(), 1);
        assert_eq!(architecture.tags.keys().collect::<Vec<_>>(), ["data-class", "owner"]);
    }
}
