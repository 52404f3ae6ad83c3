//! `mayfly tokens create|list|revoke`: the HTTPS API's bearer tokens. A new
//! token is printed once; the state store keeps only the SHA-256 of its secret.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mayfly_api::access::{Grant, issue_token};
use mayfly_core::{Clock, SystemClock};
use mayfly_state::{ApiTokenRecord, NewApiToken, StateStore};
use serde::Serialize;

use crate::output::{Output, table};
use crate::project::Project;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once.
    #[command(
        after_help = "Examples:\n  mayfly tokens create --name ci --scope results:read --scope runs:read --job nightly\n  mayfly tokens create --name ingest --scope objects:write --bucket inbox --expires 30d\n  mayfly tokens create --name ops --scope admin\n\nScopes: objects:read, objects:write, messages:write, queues:read, functions:invoke, runs:read, runs:write, results:read, logs:read, metrics:read, admin (implies all)."
    )]
    Create(CreateArgs),
    /// List tokens (never their secrets).
    #[command(after_help = "Examples:\n  mayfly tokens list\n  mayfly tokens list --json")]
    List,
    /// Revoke a token: it stops working at once.
    #[command(after_help = "Example:\n  mayfly tokens revoke 3f9a0c1d2e4b5a69")]
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for people; unique among tokens not revoked.
    #[arg(long)]
    pub name: String,
    /// A scope the token holds (repeat for several).
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    pub scopes: Vec<String>,
    /// Limit the token to this job (repeat for several); runs, results and logs of other jobs are refused.
    #[arg(long = "job", value_name = "JOB")]
    pub jobs: Vec<String>,
    /// Limit the token to this bucket (repeat for several).
    #[arg(long = "bucket", value_name = "BUCKET")]
    pub buckets: Vec<String>,
    /// Make the token expire after this long, e.g. 12h or 30d.
    #[arg(long, value_parser = parse_expiry_arg)]
    pub expires: Option<Duration>,
    /// Also issue AWS credentials (an access key id and a secret access key)
    /// for the AWS-compatible endpoint (S3 and SQS), with the same scopes, limits and expiry.
    #[arg(long)]
    pub aws: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id (the part after `mf_`, as `mayfly tokens list` shows it).
    pub id: String,
}

/// A token's lifetime: a duration longer than zero (a token expiring at once
/// would be refused on its first use).
fn parse_expiry_arg(text: &str) -> Result<Duration, String> {
    let duration = mayfly_core::parse_duration(text).map_err(|error| error.to_string())?;
    if duration.is_zero() {
        return Err("a token expiring at once could never be used; give a lifetime such as 12h or 30d, or omit --expires for a token that does not expire".to_owned());
    }
    Ok(duration)
}

/// A token as listed: everything but its hash.
#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    scopes: Vec<String>,
    jobs: Vec<String>,
    buckets: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    status: &'static str,
}

fn view(record: ApiTokenRecord, now: mayfly_core::Timestamp) -> TokenView {
    let status = if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else {
        "active"
    };
    TokenView {
        id: record.id,
        name: record.name,
        scopes: record.scopes,
        jobs: record.jobs,
        buckets: record.buckets,
        created_at: record.created_at.to_rfc3339(),
        expires_at: record.expires_at.map(|at| at.to_rfc3339()),
        revoked_at: record.revoked_at.map(|at| at.to_rfc3339()),
        status,
    }
}

pub fn run(command: TokensCommand, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let state: &dyn StateStore = opened.state.as_ref();
    let now = SystemClock.now();
    match command {
        TokensCommand::Create(args) => {
            let grant = Grant::parse(&args.scopes, args.jobs.clone(), args.buckets.clone())
                .context("cannot create the token")?;
            if args.name.trim().is_empty() {
                anyhow::bail!("cannot create the token: `--name` must not be empty");
            }
            let issued = issue_token(rand::random(), rand::random());
            let aws_secret = args.aws.then(mayfly_aws::new_secret);
            let record = state.create_api_token(NewApiToken {
                id: issued.id.clone(),
                name: args.name,
                secret_sha256: issued.secret_sha256,
                scopes: grant.scopes.iter().map(|scope| scope.as_str().to_owned()).collect(),
                jobs: grant.jobs,
                buckets: grant.buckets,
                expires_at: args.expires.map(|expires| now.saturating_add(expires)),
                aws_secret: aws_secret.clone(),
            })?;
            #[derive(Serialize)]
            struct Created {
                token: String,
                aws_access_key_id: Option<String>,
                aws_secret_access_key: Option<String>,
                #[serde(flatten)]
                details: TokenView,
            }
            let created = Created {
                token: issued.token,
                aws_access_key_id: aws_secret.is_some().then(|| mayfly_aws::access_key_id(&issued.id)),
                aws_secret_access_key: aws_secret,
                details: view(record, now),
            };
            output.emit(&created, || {
                let mut text = format!(
                    "{}\n\ntoken {} (`{}`) created with {}; it is shown only now: store it in a secret manager.\nuse it as `Authorization: Bearer <token>`",
                    created.token,
                    created.details.id,
                    created.details.name,
                    created.details.scopes.join(", ")
                );
                if let (Some(key), Some(secret)) = (&created.aws_access_key_id, &created.aws_secret_access_key) {
                    text.push_str(&format!(
                        "\n\nAWS credentials for the S3 and SQS endpoint (same scopes, limits and expiry; shown only now):\n  AWS_ACCESS_KEY_ID={key}\n  AWS_SECRET_ACCESS_KEY={secret}"
                    ));
                }
                text
            })
        }
        TokensCommand::List => {
            let tokens: Vec<TokenView> = state.api_tokens()?.into_iter().map(|record| view(record, now)).collect();
            output.emit(&tokens, || {
                if tokens.is_empty() {
                    return "no tokens yet; create one with `mayfly tokens create --name N --scope SCOPE`".into();
                }
                table(
                    &["ID", "NAME", "SCOPES", "LIMITED TO", "STATUS", "CREATED", "EXPIRES"],
                    &tokens
                        .iter()
                        .map(|token| {
                            let limits: Vec<String> = token
                                .jobs
                                .iter()
                                .map(|job| format!("job {job}"))
                                .chain(token.buckets.iter().map(|bucket| format!("bucket {bucket}")))
                                .collect();
                            vec![
                                token.id.clone(),
                                token.name.clone(),
                                token.scopes.join(","),
                                if limits.is_empty() { "-".into() } else { limits.join(",") },
                                token.status.to_owned(),
                                token.created_at.clone(),
                                token.expires_at.clone().unwrap_or_else(|| "never".into()),
                            ]
                        })
                        .collect::<Vec<_>>(),
                )
            })
        }
        TokensCommand::Revoke(args) => {
            let record = state.revoke_api_token(&args.id)?;
            let revoked = view(record, now);
            output.emit(&revoked, || format!("token {} (`{}`) is revoked", revoked.id, revoked.name))
        }
    }
}
