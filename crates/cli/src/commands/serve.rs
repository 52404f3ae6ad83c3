//! `mayfly serve`: the project's HTTPS API and web dashboard (over TLS only) until SIGINT or
//! SIGTERM; and the same server for `mayfly up` when the deployed
//! architecture declares `[api]`.
//!
//! The API follows new deployments (`mayfly_api::following_router`); what
//! is read once, when the server starts, is the listen address, the
//! certificate (`[api].tls`), the dashboard's project name and how
//! coordinators are started.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mayfly_host::api_server::{bind_api_server, function_credentials, invoker_config, serving_certificate_paths};
use mayfly_host::deployment::deployed_architecture;
use mayfly_host::jobs::coordinator_launch;
use mayfly_host::telemetry::start_telemetry;
use mayfly_runtime::Invoker;

use crate::output::{Output, announce_certificate};
use crate::project::Project;
use crate::signals::stop_signal;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (default: `[api].listen`, else 127.0.0.1:8443). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The address of the AWS-compatible endpoint, S3 and SQS (default: `[api].aws_listen`, else 127.0.0.1:8444). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub aws_listen: Option<SocketAddr>,
    /// Reap warm function instances idle this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration_arg)]
    pub idle_timeout: Duration,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    mayfly_core::parse_duration(text).map_err(|error| error.to_string())
}

/// This executable, which starts the coordinators of the runs the API starts.
fn mayfly_bin() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("cannot find the mayfly executable")
}

pub async fn serve(args: ServeArgs, project: Option<&Path>, _output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let telemetry_settings = located.telemetry_settings()?;
    let opened = located.open(false)?;
    let _keyring_follower = opened.follow_keyring_file(&located);
    let deployed = deployed_architecture(&opened)?;
    // Made (or made to name `[api].aws_advertise`) before anything hands it out.
    announce_certificate(&serving_certificate_paths(&located, deployed.1.api.as_ref())?.1);
    let telemetry = start_telemetry(&telemetry_settings, &opened, deployed.1.name.as_str())?;
    let (credentials, made) = function_credentials(&located, &opened, &deployed.1)?;
    announce_certificate(&made);
    let invoker = Invoker::new(invoker_config(args.idle_timeout, credentials.as_ref()));
    let launch = coordinator_launch(&located, mayfly_bin()?)?;
    let server =
        bind_api_server(&located, &opened, deployed, invoker.clone(), args.listen, args.aws_listen, launch).await?;
    announce_certificate(&server.certificate_made);
    if let Some(credentials) = &credentials {
        credentials.set_endpoint(server.aws_address);
    }
    server.announce();
    server.run(stop_signal()).await?;
    invoker.shutdown().await;
    if let Some(telemetry) = telemetry {
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await.context("flushing traces panicked")?;
    }
    eprintln!("mayfly: API stopped");
    Ok(())
}
