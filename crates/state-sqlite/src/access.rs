//! The HTTPS API's tokens and access log in SQLite (`api_tokens`,
//! `access_log`; migration 6). The access log's table refuses UPDATE, and
//! DELETE of any record younger than six years (migration 9), by trigger,
//! so it is append-only even to other SQL clients until retention's time.

use mayfly_core::Timestamp;
use mayfly_state::{AccessRecord, ApiTokenRecord, NewApiToken, Result, StateError, StoredAccessRecord};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::errors::SqliteResultExt;
use crate::{from_sql_integer, limit_to_sql, to_sql_integer};

const TOKEN_COLUMNS: &str = "id, name, secret_sha256, scopes, jobs, buckets, created_at, expires_at, revoked_at";

/// A token row before its JSON lists are decoded.
struct TokenRow {
    id: String,
    name: String,
    secret_sha256: String,
    scopes: String,
    jobs: String,
    buckets: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl TokenRow {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
        Ok(TokenRow {
            id: row.get(0)?,
            name: row.get(1)?,
            secret_sha256: row.get(2)?,
            scopes: row.get(3)?,
            jobs: row.get(4)?,
            buckets: row.get(5)?,
            created_at: row.get(6)?,
            expires_at: row.get(7)?,
            revoked_at: row.get(8)?,
        })
    }

    fn into_record(self) -> Result<ApiTokenRecord> {
        Ok(ApiTokenRecord {
            scopes: list_from_json(&self.id, &self.scopes)?,
            jobs: list_from_json(&self.id, &self.jobs)?,
            buckets: list_from_json(&self.id, &self.buckets)?,
            id: self.id,
            name: self.name,
            secret_sha256: self.secret_sha256,
            created_at: Timestamp(self.created_at),
            expires_at: self.expires_at.map(Timestamp),
            revoked_at: self.revoked_at.map(Timestamp),
        })
    }
}

fn list_to_json(list: &[String]) -> Result<String> {
    serde_json::to_string(list).map_err(|error| StateError::Backend(format!("could not encode a list: {error}")))
}

fn list_from_json(token: &str, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|error| {
        StateError::Backend(format!("the state file holds an unreadable list for token `{token}`: {error}"))
    })
}

fn find_token(transaction: &Transaction<'_>, id: &str) -> Result<Option<ApiTokenRecord>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1");
    transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.query_row([id], TokenRow::from_row).optional())
        .with_context(|| format!("look up token `{id}`"))?
        .map(TokenRow::into_record)
        .transpose()
}

pub fn create_api_token(transaction: &Transaction<'_>, token: NewApiToken, now: Timestamp) -> Result<ApiTokenRecord> {
    let name_taken: bool = transaction
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE name = ?1 AND revoked_at IS NULL)")
        .and_then(|mut statement| statement.query_row([&token.name], |row| row.get(0)))
        .with_context(|| format!("check the name of token `{}`", token.name))?;
    if name_taken {
        return Err(StateError::AlreadyExists { kind: "token", name: token.name });
    }
    let (scopes, jobs, buckets) =
        (list_to_json(&token.scopes)?, list_to_json(&token.jobs)?, list_to_json(&token.buckets)?);
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO api_tokens (id, name, secret_sha256, scopes, jobs, buckets, created_at, expires_at, \
             aws_secret) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                token.id,
                token.name,
                token.secret_sha256,
                scopes,
                jobs,
                buckets,
                now.as_millis(),
                token.expires_at.map(Timestamp::as_millis),
                token.aws_secret,
            ])
        })
        .with_context(|| format!("insert token `{}`", token.id))?;
    if inserted == 0 {
        return Err(StateError::AlreadyExists { kind: "token", name: token.id });
    }
    find_token(transaction, &token.id)?.ok_or_else(|| StateError::not_found("token", &token.id))
}

pub fn api_token(transaction: &Transaction<'_>, id: &str) -> Result<ApiTokenRecord> {
    find_token(transaction, id)?.ok_or_else(|| StateError::not_found("token", id))
}

/// The stored (sealed, in an encrypted store) AWS secret of a token.
pub fn api_token_aws_secret(transaction: &Transaction<'_>, id: &str) -> Result<Option<String>> {
    transaction
        .prepare_cached("SELECT aws_secret FROM api_tokens WHERE id = ?1")
        .and_then(|mut statement| statement.query_row([id], |row| row.get::<_, Option<String>>(0)).optional())
        .with_context(|| format!("look up the AWS secret of token `{id}`"))?
        .ok_or_else(|| StateError::not_found("token", id))
}

pub fn api_tokens(transaction: &Transaction<'_>) -> Result<Vec<ApiTokenRecord>> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY token_seq");
    let rows = transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.query_map([], TokenRow::from_row)?.collect::<rusqlite::Result<Vec<_>>>())
        .context("list tokens")?;
    rows.into_iter().map(TokenRow::into_record).collect()
}

pub fn revoke_api_token(transaction: &Transaction<'_>, id: &str, now: Timestamp) -> Result<ApiTokenRecord> {
    transaction
        .prepare_cached("UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
        .and_then(|mut statement| statement.execute(params![id, now.as_millis()]))
        .with_context(|| format!("revoke token `{id}`"))?;
    api_token(transaction, id)
}

pub fn append_access_records(transaction: &Transaction<'_>, records: &[AccessRecord]) -> Result<()> {
    let mut statement = transaction
        .prepare_cached(
            "INSERT INTO access_log (at, token_id, client, method, path, resource, status, outcome) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .context("prepare to append to the access log")?;
    for record in records {
        statement
            .execute(params![
                record.at.as_millis(),
                record.token_id,
                record.client,
                record.method,
                record.path,
                record.resource,
                record.status,
                record.outcome,
            ])
            .context("append to the access log")?;
    }
    Ok(())
}

pub fn access_records(
    transaction: &Transaction<'_>,
    before_id: Option<u64>,
    limit: usize,
) -> Result<Vec<StoredAccessRecord>> {
    let before = before_id.map_or(i64::MAX, to_sql_integer);
    transaction
        .prepare_cached(
            "SELECT id, at, token_id, client, method, path, resource, status, outcome FROM access_log \
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![before, limit_to_sql(limit)], |row| {
                    Ok(StoredAccessRecord {
                        id: from_sql_integer(row.get(0)?),
                        record: AccessRecord {
                            at: Timestamp(row.get(1)?),
                            token_id: row.get(2)?,
                            client: row.get(3)?,
                            method: row.get(4)?,
                            path: row.get(5)?,
                            resource: row.get(6)?,
                            status: row.get(7)?,
                            outcome: row.get(8)?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("read the access log")
}
