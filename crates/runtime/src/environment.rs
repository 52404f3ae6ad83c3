//! The environment an instance starts with: a short allow-list inherited from
//! Mayfly's own environment (so `PATH` lookups and interpreters work), the
//! function's variables, and the variables the runtime defines, which win.

use std::collections::BTreeMap;

use crate::definition::{FunctionDefinition, Isolation, RuntimeKind};

/// Variables passed through from Mayfly's own environment; nothing else of it
/// (credentials, tokens) reaches a function.
pub(crate) const INHERITED_VARIABLES: [&str; 9] =
    ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "PYENV_ROOT", "PYENV_VERSION"];

pub(crate) fn function_arn(function: &FunctionDefinition) -> String {
    format!("arn:aws:lambda:local:000000000000:function:{}", function.name)
}

/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`: the limit in MiB, or the machine's memory without one.
fn memory_size_mb(function: &FunctionDefinition) -> u64 {
    match function.memory {
        Some(limit) => limit.bytes() / (1024 * 1024),
        None => {
            // SAFETY: sysconf only reads system configuration values.
            let (pages, page_size) =
                unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
            (u64::try_from(pages).unwrap_or(0) * u64::try_from(page_size).unwrap_or(0)) / (1024 * 1024)
        }
    }
}

/// The complete environment of an instance of `function`. `runtime_api` is the
/// `host:port` of its Runtime API (lambda); `request_id` the invocation
/// (process) and `traceparent` its W3C trace context, if traced (process);
/// `credentials` the variables of its AWS credentials, if it has
/// any (they win over everything, `AWS_REGION` included).
pub(crate) fn instance_environment(
    function: &FunctionDefinition,
    runtime_api: Option<&str>,
    request_id: Option<&str>,
    traceparent: Option<&str>,
    credentials: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    // A container has its image's `PATH` and home; nothing of the host's environment applies there.
    let inherit = matches!(function.isolation, Isolation::Process);
    let mut environment: BTreeMap<String, String> = INHERITED_VARIABLES
        .iter()
        .filter(|_| inherit)
        .filter_map(|name| std::env::var(name).ok().map(|value| ((*name).to_owned(), value)))
        .collect();
    environment.extend(function.env.iter().map(|(name, value)| (name.clone(), value.clone())));
    let mut set = |name: &str, value: String| {
        environment.insert(name.to_owned(), value);
    };
    set("AWS_LAMBDA_FUNCTION_NAME", function.name.to_string());
    set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_size_mb(function).to_string());
    set("AWS_LAMBDA_FUNCTION_VERSION", function.version.clone());
    set("AWS_REGION", "local".to_owned());
    set("AWS_DEFAULT_REGION", "local".to_owned());
    set("TZ", "UTC".to_owned());
    if let Some(request_id) = request_id {
        set("MAYFLY_REQUEST_ID", request_id.to_owned());
    }
    // The invocation's own context wins over a `TRACEPARENT` in the function's `env`.
    if let Some(traceparent) = traceparent {
        set("TRACEPARENT", traceparent.to_owned());
    }
    if function.runtime == RuntimeKind::Lambda {
        if let Some(runtime_api) = runtime_api {
            set("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned());
        }
        set("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", function.name));
        set("AWS_LAMBDA_LOG_STREAM_NAME", format!("mayfly/{}/{}", function.version, std::process::id()));
        set("LAMBDA_TASK_ROOT", function.working_dir.display().to_string());
        set("AWS_EXECUTION_ENV", "mayfly".to_owned());
        if let Some(handler) = &function.handler {
            set("_HANDLER", handler.clone());
        }
    }
    environment.extend(credentials.iter().map(|(name, value)| (name.clone(), value.clone())));
    environment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_variables_win_over_the_functions() {
        let mut function = FunctionDefinition::new(
            "resize".parse().unwrap(),
            RuntimeKind::Lambda,
            vec!["handler".into()],
            "/srv/resize".into(),
        );
        function.env.insert("AWS_LAMBDA_RUNTIME_API".into(), "elsewhere:1".into());
        function.env.insert("GREETING".into(), "hello".into());
        function.memory = Some(mayfly_core::ByteSize(256 * 1024 * 1024));
        function.handler = Some("app.handler".into());
        let environment = instance_environment(&function, Some("127.0.0.1:9001"), None, None, &BTreeMap::new());
        assert_eq!(environment["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(environment["GREETING"], "hello");
        assert_eq!(environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(environment["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
        assert_eq!(environment["_HANDLER"], "app.handler");
        assert_eq!(environment["LAMBDA_TASK_ROOT"], "/srv/resize");
        assert_eq!(environment["TZ"], "UTC");
        assert_eq!(function_arn(&function), "arn:aws:lambda:local:000000000000:function:resize");
    }

    #[test]
    fn a_process_invocation_gets_its_trace_context_as_traceparent() {
        let mut function = FunctionDefinition::new(
            "index".parse().unwrap(),
            RuntimeKind::Process,
            vec!["index".into()],
            "/srv".into(),
        );
        function.env.insert("TRACEPARENT".into(), "00-written-in-the-file-01".into());
        let traceparent = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
        let traced = instance_environment(&function, None, Some("r1"), Some(traceparent), &BTreeMap::new());
        assert_eq!(traced["TRACEPARENT"], traceparent);
        assert_eq!(traced["MAYFLY_REQUEST_ID"], "r1");
        let untraced = instance_environment(&function, None, Some("r2"), None, &BTreeMap::new());
        assert_eq!(untraced["TRACEPARENT"], "00-written-in-the-file-01", "the function's own, untouched");
    }
}
