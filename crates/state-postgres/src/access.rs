//! [`AccessStore`] on PostgreSQL: the HTTPS API's tokens (`api_tokens`, only
//! a hash of each secret; a token's AWS secret sealed) and its access log
//! (`access_log`), which the database itself keeps append-only: a trigger
//! refuses every UPDATE, and the DELETE of a record younger than six years
//! ([`mayfly_state::ACCESS_LOG_RETENTION`], by the server's clock), for every
//! SQL client.

use mayfly_core::Timestamp;
use mayfly_state::sealing::Record;
use mayfly_state::{AccessRecord, AccessStore, ApiTokenRecord, NewApiToken, Result, StateError, StoredAccessRecord};
use postgres::Transaction;

use crate::errors::PgResultExt;
use crate::{PostgresStore, from_sql_integer, limit_to_sql, to_sql_integer};

const TOKEN_COLUMNS: &str = "id, name, secret_sha256, scopes, jobs, buckets, created_at, expires_at, revoked_at";

fn list_to_json(list: &[String]) -> Result<String> {
    serde_json::to_string(list).map_err(|error| StateError::Backend(format!("could not encode a list: {error}")))
}

fn list_from_json(token: &str, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|error| {
        StateError::Backend(format!("the state store holds an unreadable list for token `{token}`: {error}"))
    })
}

fn token_from_row(row: &postgres::Row) -> Result<ApiTokenRecord> {
    let id: String = row.get(0);
    Ok(ApiTokenRecord {
        name: row.get(1),
        secret_sha256: row.get(2),
        scopes: list_from_json(&id, row.get(3))?,
        jobs: list_from_json(&id, row.get(4))?,
        buckets: list_from_json(&id, row.get(5))?,
        created_at: Timestamp(row.get(6)),
        expires_at: row.get::<_, Option<i64>>(7).map(Timestamp),
        revoked_at: row.get::<_, Option<i64>>(8).map(Timestamp),
        id,
    })
}

fn require_token(transaction: &mut Transaction<'_>, id: &str) -> Result<ApiTokenRecord> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1");
    let row = transaction.query_opt(&sql, &[&id]).with_context(|| format!("look up token `{id}`"))?;
    token_from_row(&row.ok_or_else(|| StateError::not_found("token", id))?)
}

impl AccessStore for PostgresStore {
    fn create_api_token(&self, token: NewApiToken) -> Result<ApiTokenRecord> {
        let now = self.now();
        let aws_secret = self.sealer.seal_optional_text(Record::TokenAwsSecret(&token.id), token.aws_secret.as_deref());
        let (scopes, jobs, buckets) =
            (list_to_json(&token.scopes)?, list_to_json(&token.jobs)?, list_to_json(&token.buckets)?);
        self.transact(&format!("create token `{}`", token.name), |transaction| {
            let name_taken: bool = transaction
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE name = $1 AND revoked_at IS NULL)",
                    &[&token.name],
                )
                .with_context(|| format!("check the name of token `{}`", token.name))?
                .get(0);
            if name_taken {
                return Err(StateError::AlreadyExists { kind: "token", name: token.name.clone() });
            }
            // A live name taken by a concurrent creation meets the unique index: nothing inserted.
            let inserted = transaction
                .execute(
                    "INSERT INTO api_tokens (id, name, secret_sha256, scopes, jobs, buckets, created_at, expires_at, \
                     aws_secret) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                    &[
                        &token.id,
                        &token.name,
                        &token.secret_sha256,
                        &scopes,
                        &jobs,
                        &buckets,
                        &now.as_millis(),
                        &token.expires_at.map(Timestamp::as_millis),
                        &aws_secret,
                    ],
                )
                .with_context(|| format!("insert token `{}`", token.id))?;
            if inserted == 0 {
                return Err(StateError::AlreadyExists { kind: "token", name: token.id.clone() });
            }
            require_token(transaction, &token.id)
        })
    }

    fn api_token(&self, id: &str) -> Result<ApiTokenRecord> {
        self.transact(&format!("look up token `{id}`"), |transaction| require_token(transaction, id))
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.transact("list tokens", |transaction| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY token_seq");
            let rows = transaction.query(&sql, &[]).context("list tokens")?;
            rows.iter().map(token_from_row).collect()
        })
    }

    fn revoke_api_token(&self, id: &str) -> Result<ApiTokenRecord> {
        let now = self.now();
        self.transact(&format!("revoke token `{id}`"), |transaction| {
            transaction
                .execute(
                    "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                    &[&id, &now.as_millis()],
                )
                .with_context(|| format!("revoke token `{id}`"))?;
            require_token(transaction, id)
        })
    }

    fn api_token_aws_secret(&self, id: &str) -> Result<Option<String>> {
        let stored = self.transact(&format!("look up the AWS secret of token `{id}`"), |transaction| {
            let row = transaction
                .query_opt("SELECT aws_secret FROM api_tokens WHERE id = $1", &[&id])
                .with_context(|| format!("look up the AWS secret of token `{id}`"))?;
            Ok(row.ok_or_else(|| StateError::not_found("token", id))?.get::<_, Option<String>>(0))
        })?;
        self.sealer.open_optional_text(Record::TokenAwsSecret(id), stored)
    }

    fn derived_key(&self, purpose: &str) -> Result<[u8; 32]> {
        self.sealer.derived_key(purpose).ok_or_else(|| {
            StateError::Backend(format!(
                "the state store at {} seals nothing, so it holds no secret to derive the `{purpose}` key from; open it with its keyring",
                self.location
            ))
        })
    }

    fn append_access_records(&self, records: &[AccessRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.transact("append to the access log", |transaction| {
            let insert = transaction
                .prepare(
                    "INSERT INTO access_log (id, at, token_id, client, method, path, resource, status, outcome) \
                     VALUES ((SELECT value FROM mayfly_counters WHERE name = 'access_log'), \
                     $1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .context("prepare to append to the access log")?;
            for record in records {
                // Ids in commit order (readers page by them), from the counter under its row lock.
                crate::next_counter(transaction, "access_log")?;
                transaction
                    .execute(
                        &insert,
                        &[
                            &record.at.as_millis(),
                            &record.token_id,
                            &record.client,
                            &record.method,
                            &record.path,
                            &record.resource,
                            &i32::from(record.status),
                            &record.outcome,
                        ],
                    )
                    .context("append to the access log")?;
            }
            Ok(())
        })
    }

    fn access_records(&self, before_id: Option<u64>, limit: usize) -> Result<Vec<StoredAccessRecord>> {
        let before = before_id.map_or(i64::MAX, to_sql_integer);
        self.transact("read the access log", |transaction| {
            let rows = transaction
                .query(
                    "SELECT id, at, token_id, client, method, path, resource, status, outcome FROM access_log \
                     WHERE id < $1 ORDER BY id DESC LIMIT $2",
                    &[&before, &limit_to_sql(limit)],
                )
                .context("read the access log")?;
            rows.iter()
                .map(|row| {
                    let status: i32 = row.get(7);
                    Ok(StoredAccessRecord {
                        id: from_sql_integer(row.get(0)),
                        record: AccessRecord {
                            at: Timestamp(row.get(1)),
                            token_id: row.get(2),
                            client: row.get(3),
                            method: row.get(4),
                            path: row.get(5),
                            resource: row.get(6),
                            status: u16::try_from(status).map_err(|_| {
                                StateError::Backend(format!("the access log holds an invalid status {status}"))
                            })?,
                            outcome: row.get(8),
                        },
                    })
                })
                .collect()
        })
    }
}
