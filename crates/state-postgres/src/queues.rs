//! [`QueueStore`] on PostgreSQL: queues and their messages.
//!
//! A receive leases with `SELECT … FOR UPDATE SKIP LOCKED`: receivers on
//! other connections or hosts pass over the messages one is leasing instead
//! of waiting for it, and never lease one message twice. A receipt is
//! (message id, receive count), and message ids come from a sequence, so an
//! id is never handed to a second message. Bodies and attributes are sealed
//! through [`mayfly_state::sealing`] bound to the message id, which is taken
//! from the sequence before the message is written.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mayfly_core::queue::{
    QueueConfig, QueueStats, ReceiptHandle, ReceiveDecision, check_message_size, check_visibility_timeout,
    decide_receive,
};
use mayfly_core::{ByteSize, Name, Timestamp};
use mayfly_state::sealing::{Record, Sealer};
use mayfly_state::{
    DamagedMessage, DeadLetterInfo, DeleteOutcome, MessageWatch, OnMessages, OutgoingMessage, QueueRecord, QueueStore,
    ReceiveRequest, ReceivedMessage, Result, StateError, StoredMessage,
};
use postgres::Transaction;

use crate::errors::PgResultExt;
use crate::{
    PostgresStore, from_sql_integer, limit_to_sql, name_from_column, pairs_from_json, tags_to_json, to_sql_integer,
};

const QUEUE_COLUMNS: &str = "queue_id, name, created_at, visibility_timeout_ms, delay_ms, max_message_size, \
                             retention_ms, max_receives, dead_letter, tags";

/// A queue as the message methods need it: its integer id and its record.
pub(crate) struct StoredQueue {
    pub(crate) queue_id: i64,
    record: QueueRecord,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn duration_from_millis(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn queue_from_row(row: &postgres::Row) -> Result<StoredQueue> {
    let config = QueueConfig {
        visibility_timeout: duration_from_millis(row.get(3)),
        delay: duration_from_millis(row.get(4)),
        max_message_size: ByteSize(from_sql_integer(row.get(5))),
        retention: duration_from_millis(row.get(6)),
        max_receives: row.get::<_, Option<i64>>(7).map(|count| u32::try_from(count).unwrap_or(u32::MAX)),
        dead_letter: row.get::<_, Option<String>>(8).map(name_from_column).transpose()?,
    };
    Ok(StoredQueue {
        queue_id: row.get(0),
        record: QueueRecord {
            name: name_from_column(row.get(1))?,
            created_at: Timestamp(row.get(2)),
            config,
            tags: pairs_from_json(row.get(9))?,
        },
    })
}

fn find_queue(transaction: &mut Transaction<'_>, name: &Name) -> Result<Option<StoredQueue>> {
    let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = $1");
    let row = transaction.query_opt(&sql, &[&name.as_str()]).with_context(|| format!("look up queue `{name}`"))?;
    row.as_ref().map(queue_from_row).transpose()
}

pub(crate) fn require_queue(transaction: &mut Transaction<'_>, name: &Name) -> Result<StoredQueue> {
    find_queue(transaction, name)?.ok_or_else(|| StateError::not_found("queue", name))
}

/// A queue's settings as bound values, in the order of the `queues` columns.
type ConfigColumns = (i64, i64, i64, i64, Option<i64>, Option<String>);

fn config_columns(config: &QueueConfig) -> Result<ConfigColumns> {
    check_visibility_timeout(config.visibility_timeout)?;
    Ok((
        millis(config.visibility_timeout),
        millis(config.delay),
        to_sql_integer(config.max_message_size.bytes()),
        millis(config.retention),
        config.max_receives.map(i64::from),
        config.dead_letter.as_ref().map(|name| name.as_str().to_owned()),
    ))
}

/// A message's body and attributes, opened.
type MessagePayload = (Vec<u8>, Vec<(String, String)>);

/// A dead letter as redrive reads it: id, sent time, stored body and attributes.
type DeadLetterRow = (i64, i64, Vec<u8>, Option<Vec<u8>>);

/// A message row as receive and peek read it.
pub(crate) struct MessageRow {
    pub(crate) message_id: i64,
    visible_at: i64,
    receive_count: i64,
    sent_at: i64,
    pub(crate) body: Vec<u8>,
    /// JSON, or its envelope in a sealed store; `None` without attributes.
    attributes: Option<Vec<u8>>,
}

const MESSAGE_COLUMNS: &str = "message_id, visible_at, receive_count, sent_at, body, attributes";

impl MessageRow {
    fn from_row(row: &postgres::Row) -> MessageRow {
        MessageRow {
            message_id: row.get(0),
            visible_at: row.get(1),
            receive_count: row.get(2),
            sent_at: row.get(3),
            body: row.get(4),
            attributes: row.get(5),
        }
    }

    /// The message of a row of [`CLAIM_AND_LEASE`] as it was before the
    /// lease, and the lease's end; `None` for the row of a queue with
    /// nothing visible.
    fn from_claim(row: &postgres::Row) -> Option<(MessageRow, i64)> {
        let message_id: i64 = row.get::<_, Option<i64>>(10)?;
        let message = MessageRow {
            message_id,
            visible_at: row.get(11),
            receive_count: row.get(12),
            sent_at: row.get(14),
            body: row.get(15),
            attributes: row.get(16),
        };
        Some((message, row.get(13)))
    }

    /// The body and attributes, opened.
    fn open_payload(&mut self, sealer: &Sealer) -> Result<MessagePayload> {
        let body = sealer.open(Record::MessageBody(self.message_id), std::mem::take(&mut self.body))?;
        let attributes = match self.attributes.take() {
            None => Vec::new(),
            Some(stored) => {
                let json = sealer.open(Record::MessageAttributes(self.message_id), stored)?;
                serde_json::from_slice(&json).map_err(|error| {
                    StateError::Backend(format!("the state store holds unreadable message attributes: {error}"))
                })?
            }
        };
        Ok((body, attributes))
    }

    fn receive_count(&self) -> u32 {
        u32::try_from(self.receive_count).unwrap_or(u32::MAX)
    }
}

/// A receive's page in one statement (prepared once per connection): the
/// queue by name; up to `$6` of its messages visible at `$2`, oldest first,
/// after the keyset `($3, $4)` and not among the ids `$5` this receive
/// claimed already, locked `FOR UPDATE SKIP LOCKED` (rows other receivers
/// hold are passed over, not waited for); and every one of them leased at
/// once, until `$2` plus the timeout `$7` or else the queue's. The rule of
/// what a receive delivers stays in Rust (`decide_receive`): the receive
/// undoes, within its transaction, the lease of each message it does not
/// hand out (past `max_receives`, or damaged), which is rare, so the common
/// receive is three round trips (begin, this, commit).
///
/// Each row: the queue's columns (as `QUEUE_COLUMNS`), then the message as
/// it was before the lease (id, `visible_at`, `receive_count`), then the
/// lease's end, `sent_at`, body and attributes; a single row with the
/// message columns NULL when nothing is visible; no row without the queue.
const CLAIM_AND_LEASE: &str = "\
    WITH queue AS ( \
        SELECT queue_id, name, created_at, visibility_timeout_ms, delay_ms, max_message_size, retention_ms, \
               max_receives, dead_letter, tags \
        FROM queues WHERE name = $1 \
    ), claimed AS ( \
        SELECT message_id, visible_at, receive_count FROM messages \
        WHERE queue_id = (SELECT queue_id FROM queue) AND visible_at <= $2 \
          AND (visible_at, message_id) > ($3, $4) AND message_id <> ALL ($5::BIGINT[]) \
        ORDER BY visible_at, message_id LIMIT $6 \
        FOR UPDATE SKIP LOCKED \
    ), leased AS ( \
        UPDATE messages \
        SET visible_at = $2 + COALESCE($7::BIGINT, (SELECT visibility_timeout_ms FROM queue)), \
            receive_count = messages.receive_count + 1 \
        FROM claimed WHERE messages.message_id = claimed.message_id \
        RETURNING messages.message_id, messages.visible_at, messages.sent_at, messages.body, messages.attributes \
    ) \
    SELECT queue.queue_id, queue.name, queue.created_at, queue.visibility_timeout_ms, queue.delay_ms, \
           queue.max_message_size, queue.retention_ms, queue.max_receives, queue.dead_letter, queue.tags, \
           claimed.message_id, claimed.visible_at, claimed.receive_count, \
           leased.visible_at, leased.sent_at, leased.body, leased.attributes \
    FROM queue LEFT JOIN (claimed JOIN leased ON leased.message_id = claimed.message_id) ON TRUE \
    ORDER BY claimed.visible_at, claimed.message_id";

/// A batch delete by receipts in one statement that commits by itself
/// (prepared once per connection): each receipt `($2[i], $3[i])` whose
/// lease is live at `$4` deletes its message from queue `$1`. Rows: the
/// deleted (id, receive count) pairs, or one row of NULLs when nothing was
/// deleted; no row without the queue.
const DELETE_BY_RECEIPTS: &str = "\
    WITH queue AS (SELECT queue_id FROM queues WHERE name = $1), \
    deleted AS ( \
        DELETE FROM messages USING UNNEST($2::BIGINT[], $3::BIGINT[]) AS receipt (id, count) \
        WHERE messages.message_id = receipt.id AND messages.receive_count = receipt.count \
          AND messages.queue_id = (SELECT queue_id FROM queue) AND messages.visible_at > $4 \
        RETURNING messages.message_id, messages.receive_count \
    ) \
    SELECT deleted.message_id, deleted.receive_count FROM queue LEFT JOIN deleted ON TRUE";

/// Up to `max` visible messages of a queue, oldest first (as receive orders
/// them), locked for this transaction; those another transaction holds are skipped.
pub(crate) fn visible_messages(
    transaction: &mut Transaction<'_>,
    queue_id: i64,
    now: Timestamp,
    max: usize,
) -> Result<Vec<MessageRow>> {
    let rows = transaction
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue_id = $1 AND visible_at <= $2 \
                 ORDER BY visible_at, message_id LIMIT $3 FOR UPDATE SKIP LOCKED"
            ),
            &[&queue_id, &now.as_millis(), &limit_to_sql(max)],
        )
        .context("find visible messages")?;
    Ok(rows.iter().map(MessageRow::from_row).collect())
}

/// `count` fresh message ids, increasing.
fn next_message_ids(transaction: &mut Transaction<'_>, count: usize) -> Result<Vec<i64>> {
    let rows = transaction
        .query(
            "SELECT nextval('messages_message_id_seq') FROM generate_series(1, $1::BIGINT) ORDER BY 1",
            &[&(count as i64)],
        )
        .context("allocate message ids")?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Send `messages` to `queue` within `transaction` (see [`QueueStore::send_messages`]).
pub(crate) fn send_messages(
    transaction: &mut Transaction<'_>,
    sealer: &Sealer,
    now: Timestamp,
    queue: &Name,
    messages: &[OutgoingMessage],
) -> Result<Vec<u64>> {
    let stored = require_queue(transaction, queue)?;
    let config = &stored.record.config;
    // Check every message before storing any: the batch is all or nothing.
    for message in messages {
        check_message_size(config, queue, message.size())?;
    }
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    // Ids first, so each payload is sealed bound to its message id before it is written.
    let ids = next_message_ids(transaction, messages.len())?;
    let mut visible_ats = Vec::with_capacity(messages.len());
    let mut bodies = Vec::with_capacity(messages.len());
    let mut attributes = Vec::with_capacity(messages.len());
    for (id, message) in ids.iter().zip(messages) {
        visible_ats.push(now.saturating_add(message.delay.unwrap_or(config.delay)).as_millis());
        bodies.push(sealer.seal(Record::MessageBody(*id), &message.body).into_owned());
        attributes.push(if message.attributes.is_empty() {
            None
        } else {
            let json = serde_json::to_vec(&message.attributes)
                .map_err(|error| StateError::Backend(format!("could not encode message attributes: {error}")))?;
            Some(sealer.seal(Record::MessageAttributes(*id), &json).into_owned())
        });
    }
    // One statement for the batch: a round trip per message would cap throughput.
    transaction
        .execute(
            "INSERT INTO messages (message_id, queue_id, visible_at, receive_count, sent_at, body, attributes) \
             SELECT id, $2, visible_at, 0, $3, body, attributes \
             FROM UNNEST($1::BIGINT[], $4::BIGINT[], $5::BYTEA[], $6::BYTEA[]) \
             AS batch (id, visible_at, body, attributes)",
            &[&ids, &stored.queue_id, &now.as_millis(), &visible_ats, &bodies, &attributes],
        )
        .with_context(|| format!("insert messages into queue `{queue}`"))?;
    crate::notify::notify(transaction, queue.as_str())?;
    Ok(ids.into_iter().map(from_sql_integer).collect())
}

/// Whether `error` says a stored payload failed its integrity check — not a
/// keyring that lacks the key, which damages nothing and must not move messages.
fn failed_integrity(error: &StateError) -> bool {
    match error {
        StateError::Damaged { source, .. } => !matches!(
            source.downcast_ref::<mayfly_crypto::CryptoError>(),
            Some(mayfly_crypto::CryptoError::UnknownKey { .. })
        ),
        _ => false,
    }
}

fn move_to_dead_letter_queue(
    transaction: &mut Transaction<'_>,
    message: &MessageRow,
    dead_letter_queue_id: i64,
    source_queue: &Name,
    reason: &str,
    now: Timestamp,
) -> Result<()> {
    // The receive count as it was before the claim leased the message.
    transaction
        .execute(
            "UPDATE messages SET queue_id = $2, visible_at = $3, dead_letter_source = $4, dead_letter_reason = $5, \
             dead_letter_at = $3, receive_count = $6 WHERE message_id = $1",
            &[
                &message.message_id,
                &dead_letter_queue_id,
                &now.as_millis(),
                &source_queue.as_str(),
                &reason,
                &message.receive_count,
            ],
        )
        .with_context(|| format!("move message {} to its dead-letter queue", message.message_id))?;
    Ok(())
}

/// Keep a damaged message of a queue without a dead-letter queue where it is,
/// never visible again, with the reason a dead letter would carry (and its
/// receive count as before the claim).
fn set_aside_in_place(
    transaction: &mut Transaction<'_>,
    message: &MessageRow,
    queue: &Name,
    reason: &str,
    now: Timestamp,
) -> Result<()> {
    transaction
        .execute(
            "UPDATE messages SET visible_at = $2, dead_letter_source = $3, dead_letter_reason = $4, \
             dead_letter_at = $5, receive_count = $6 WHERE message_id = $1",
            &[&message.message_id, &i64::MAX, &queue.as_str(), &reason, &now.as_millis(), &message.receive_count],
        )
        .with_context(|| format!("set damaged message {} aside", message.message_id))?;
    Ok(())
}

/// Put a claimed message back as it was before the claim leased it: one the
/// receive neither hands out nor moves.
fn undo_lease(transaction: &mut Transaction<'_>, message: &MessageRow) -> Result<()> {
    transaction
        .execute(
            "UPDATE messages SET visible_at = $2, receive_count = $3 WHERE message_id = $1",
            &[&message.message_id, &message.visible_at, &message.receive_count],
        )
        .with_context(|| format!("leave message {} in place", message.message_id))?;
    Ok(())
}

impl QueueStore for PostgresStore {
    fn create_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord> {
        let (visibility, delay, size, retention, max_receives, dead_letter) = config_columns(config)?;
        let now = self.now();
        let tags_json = tags_to_json(tags)?;
        self.transact(&format!("create queue `{name}`"), |transaction| {
            let inserted = transaction
                .execute(
                    "INSERT INTO queues (name, created_at, visibility_timeout_ms, delay_ms, max_message_size, \
                     retention_ms, max_receives, dead_letter, tags) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT DO NOTHING",
                    &[
                        &name.as_str(),
                        &now.as_millis(),
                        &visibility,
                        &delay,
                        &size,
                        &retention,
                        &max_receives,
                        &dead_letter,
                        &tags_json,
                    ],
                )
                .with_context(|| format!("insert queue `{name}`"))?;
            if inserted == 0 {
                return Err(StateError::AlreadyExists { kind: "queue", name: name.to_string() });
            }
            Ok(require_queue(transaction, name)?.record)
        })
    }

    fn update_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord> {
        let (visibility, delay, size, retention, max_receives, dead_letter) = config_columns(config)?;
        let tags_json = tags_to_json(tags)?;
        self.transact(&format!("update queue `{name}`"), |transaction| {
            let updated = transaction
                .execute(
                    "UPDATE queues SET visibility_timeout_ms = $2, delay_ms = $3, max_message_size = $4, \
                     retention_ms = $5, max_receives = $6, dead_letter = $7, tags = $8 WHERE name = $1",
                    &[&name.as_str(), &visibility, &delay, &size, &retention, &max_receives, &dead_letter, &tags_json],
                )
                .with_context(|| format!("update queue `{name}`"))?;
            if updated == 0 {
                return Err(StateError::not_found("queue", name));
            }
            Ok(require_queue(transaction, name)?.record)
        })
    }

    fn delete_queue(&self, name: &Name) -> Result<()> {
        self.transact(&format!("delete queue `{name}`"), |transaction| {
            // Messages go with it: `ON DELETE CASCADE`.
            let deleted = transaction
                .execute("DELETE FROM queues WHERE name = $1", &[&name.as_str()])
                .with_context(|| format!("delete queue `{name}`"))?;
            if deleted == 0 {
                return Err(StateError::not_found("queue", name));
            }
            Ok(())
        })
    }

    fn queue(&self, name: &Name) -> Result<QueueRecord> {
        self.transact(&format!("look up queue `{name}`"), |transaction| Ok(require_queue(transaction, name)?.record))
    }

    fn queues(&self) -> Result<Vec<QueueRecord>> {
        self.transact("list queues", |transaction| {
            let sql = format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name COLLATE \"C\"");
            let rows = transaction.query(&sql, &[]).context("list queues")?;
            rows.iter().map(|row| Ok(queue_from_row(row)?.record)).collect()
        })
    }

    fn send_messages(&self, queue: &Name, messages: &[OutgoingMessage]) -> Result<Vec<u64>> {
        let now = self.now();
        self.transact(&format!("send messages to queue `{queue}`"), |transaction| {
            send_messages(transaction, &self.sealer, now, queue, messages)
        })
    }

    fn receive_messages(&self, queue: &Name, request: ReceiveRequest) -> Result<Vec<ReceivedMessage>> {
        if let Some(timeout) = request.visibility_timeout {
            check_visibility_timeout(timeout)?;
        }
        let now = self.now();
        self.transact_prepared(&format!("receive messages from queue `{queue}`"), |transaction, statements| {
            let claim = statements.get(transaction, CLAIM_AND_LEASE)?;
            let mut received = Vec::with_capacity(request.max_messages.min(1024));
            // The queue as the first page read it: every page decides by it.
            let mut stored: Option<StoredQueue> = None;
            // Keyset paging over (visible_at, message_id), and the ids claimed so far:
            // a message dead-lettered or left in place is never looked at twice, and a
            // zero-timeout lease (still visible) is not handed out twice in one receive.
            let mut after: (i64, i64) = (i64::MIN, i64::MIN);
            let mut claimed: Vec<i64> = Vec::new();
            let mut dead_letter_queue_ids: BTreeMap<Name, Option<i64>> = BTreeMap::new();
            // Dead-letter queues a message was moved to, visible at once there: their receivers are woken.
            let mut woken: BTreeSet<Name> = BTreeSet::new();
            while received.len() < request.max_messages {
                let wanted = request.max_messages - received.len();
                // Later pages lease for the first page's timeout, whatever the queue says by then.
                let timeout = request
                    .visibility_timeout
                    .or_else(|| stored.as_ref().map(|stored| stored.record.config.visibility_timeout))
                    .map(millis);
                let rows = transaction
                    .query(
                        &claim,
                        &[&queue.as_str(), &now.as_millis(), &after.0, &after.1, &claimed, &limit_to_sql(wanted), &timeout],
                    )
                    .with_context(|| format!("lease messages of queue `{queue}`"))?;
                let Some(first) = rows.first() else {
                    return Err(StateError::not_found("queue", queue));
                };
                if stored.is_none() {
                    stored = Some(queue_from_row(first)?);
                }
                let config = &stored.as_ref().expect("set from the first page").record.config;
                let visibility_timeout = request.visibility_timeout.unwrap_or(config.visibility_timeout);
                let candidates: Vec<(MessageRow, i64)> = rows.iter().filter_map(MessageRow::from_claim).collect();
                let page_was_full = candidates.len() == wanted;
                for (mut candidate, leased_until) in candidates {
                    claimed.push(candidate.message_id);
                    after = (candidate.visible_at, candidate.message_id);
                    match decide_receive(config, candidate.receive_count(), visibility_timeout, now) {
                        ReceiveDecision::Deliver { receive_count, lease_until } => {
                            debug_assert_eq!(lease_until.as_millis(), leased_until, "the claim leased as decide_receive");
                            // Opened before the commit: a damaged message is never handed
                            // out, and it is set aside so it no longer blocks the queue.
                            let (body, attributes) = match candidate.open_payload(&self.sealer) {
                                Ok(payload) => payload,
                                Err(error) if failed_integrity(&error) => {
                                    let reason = format!("{}{error}", mayfly_state::INTEGRITY_REASON_PREFIX);
                                    let dead_letter = match &config.dead_letter {
                                        Some(dead_letter) if dead_letter != queue => find_queue(transaction, dead_letter)?
                                            .map(|found| (found.queue_id, dead_letter.clone())),
                                        _ => None,
                                    };
                                    tracing::error!(
                                        queue = %queue,
                                        message_id = candidate.message_id,
                                        reason = %reason,
                                        "a message failed its integrity check; dead-lettered (or set aside) so the queue goes on"
                                    );
                                    match dead_letter {
                                        Some((dead_letter_queue_id, dead_letter)) => {
                                            move_to_dead_letter_queue(
                                                transaction,
                                                &candidate,
                                                dead_letter_queue_id,
                                                queue,
                                                &reason,
                                                now,
                                            )?;
                                            woken.insert(dead_letter);
                                        }
                                        None => set_aside_in_place(transaction, &candidate, queue, &reason, now)?,
                                    }
                                    continue;
                                }
                                Err(error) => return Err(error),
                            };
                            received.push(ReceivedMessage {
                                message_id: from_sql_integer(candidate.message_id),
                                receipt: ReceiptHandle {
                                    message_id: from_sql_integer(candidate.message_id),
                                    receive_count,
                                },
                                body,
                                attributes,
                                sent_at: Timestamp(candidate.sent_at),
                                receive_count,
                                lease_until: Timestamp(leased_until),
                            });
                        }
                        ReceiveDecision::DeadLetter { dead_letter, reason } => {
                            let dead_letter_queue_id = match dead_letter_queue_ids.get(&dead_letter) {
                                Some(id) => *id,
                                None => {
                                    let id = find_queue(transaction, &dead_letter)?.map(|queue| queue.queue_id);
                                    dead_letter_queue_ids.insert(dead_letter.clone(), id);
                                    id
                                }
                            };
                            let Some(dead_letter_queue_id) = dead_letter_queue_id else {
                                tracing::warn!(
                                    queue = %queue,
                                    dead_letter_queue = %dead_letter,
                                    message_id = candidate.message_id,
                                    "message is past max_receives but its dead-letter queue does not exist; \
                                     leaving it in place until the queue is created"
                                );
                                undo_lease(transaction, &candidate)?;
                                continue;
                            };
                            move_to_dead_letter_queue(
                                transaction,
                                &candidate,
                                dead_letter_queue_id,
                                queue,
                                &reason,
                                now,
                            )?;
                            woken.insert(dead_letter);
                        }
                    }
                }
                if !page_was_full {
                    break;
                }
            }
            crate::notify::notify_each(transaction, woken.iter().map(Name::as_str))?;
            Ok(received)
        })
    }

    fn damaged_messages(&self, limit: usize) -> Result<Vec<DamagedMessage>> {
        self.transact("list damaged messages", |transaction| {
            let rows = transaction
                .query(
                    "SELECT q.name, m.message_id, m.dead_letter_source, m.dead_letter_reason, m.dead_letter_at \
                     FROM messages m JOIN queues q ON q.queue_id = m.queue_id \
                     WHERE starts_with(m.dead_letter_reason, $1) ORDER BY m.message_id LIMIT $2",
                    &[&mayfly_state::INTEGRITY_REASON_PREFIX, &limit_to_sql(limit)],
                )
                .context("list damaged messages")?;
            rows.iter()
                .map(|row| {
                    Ok(DamagedMessage {
                        queue: name_from_column(row.get(0))?,
                        message_id: from_sql_integer(row.get(1)),
                        source_queue: row.get::<_, Option<String>>(2).unwrap_or_default(),
                        reason: row.get(3),
                        set_aside_at: Timestamp(row.get::<_, Option<i64>>(4).unwrap_or_default()),
                    })
                })
                .collect()
        })
    }

    fn delete_messages(&self, queue: &Name, receipts: &[ReceiptHandle]) -> Result<Vec<DeleteOutcome>> {
        let now = self.now();
        let ids: Vec<i64> = receipts.iter().map(|receipt| to_sql_integer(receipt.message_id)).collect();
        let counts: Vec<i64> = receipts.iter().map(|receipt| i64::from(receipt.receive_count)).collect();
        let what = format!("delete messages from queue `{queue}`");
        let rows = self.autocommit_prepared(&what, |client, statements| {
            let delete = statements.get(client, DELETE_BY_RECEIPTS)?;
            client.query(&delete, &[&queue.as_str(), &ids, &counts, &now.as_millis()]).with_context(|| what.clone())
        })?;
        if rows.is_empty() {
            return Err(StateError::not_found("queue", queue));
        }
        let mut deleted: BTreeSet<(i64, i64)> = rows
            .iter()
            .filter_map(|row| Some((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?)))
            .collect();
        // A receipt repeated in the batch deletes once: the repeat finds nothing, as one at a time would.
        Ok(ids
            .into_iter()
            .zip(counts)
            .map(|key| if deleted.remove(&key) { DeleteOutcome::Deleted } else { DeleteOutcome::LeaseLost })
            .collect())
    }

    fn change_visibility(&self, queue: &Name, receipt: ReceiptHandle, timeout: Duration) -> Result<()> {
        check_visibility_timeout(timeout)?;
        let now = self.now();
        self.transact(&format!("change the visibility of a message in queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let changed = transaction
                .execute(
                    "UPDATE messages SET visible_at = $5 WHERE message_id = $1 AND queue_id = $2 \
                     AND receive_count = $3 AND visible_at > $4",
                    &[
                        &to_sql_integer(receipt.message_id),
                        &stored.queue_id,
                        &i64::from(receipt.receive_count),
                        &now.as_millis(),
                        &now.saturating_add(timeout).as_millis(),
                    ],
                )
                .with_context(|| format!("change the visibility of message {}", receipt.message_id))?;
            if changed == 0 {
                return Err(StateError::LeaseLost { receipt });
            }
            if timeout.is_zero() {
                // Released: visible again at once.
                crate::notify::notify(transaction, queue.as_str())?;
            }
            Ok(())
        })
    }

    fn queue_stats(&self, queue: &Name) -> Result<QueueStats> {
        let now = self.now();
        self.transact(&format!("count the messages of queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let row = transaction
                .query_one(
                    "SELECT \
                       COUNT(*) FILTER (WHERE visible_at <= $2), \
                       COUNT(*) FILTER (WHERE visible_at > $2 AND receive_count > 0), \
                       COUNT(*) FILTER (WHERE visible_at > $2 AND receive_count = 0), \
                       MIN(sent_at) \
                     FROM messages WHERE queue_id = $1",
                    &[&stored.queue_id, &now.as_millis()],
                )
                .with_context(|| format!("count the messages of queue `{queue}`"))?;
            Ok(QueueStats {
                visible: from_sql_integer(row.get(0)),
                in_flight: from_sql_integer(row.get(1)),
                delayed: from_sql_integer(row.get(2)),
                oldest_age: row.get::<_, Option<i64>>(3).map(|sent_at| now.duration_since(Timestamp(sent_at))),
            })
        })
    }

    fn peek_messages(&self, queue: &Name, limit: usize) -> Result<Vec<StoredMessage>> {
        self.transact(&format!("peek at queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS}, dead_letter_source, dead_letter_reason, dead_letter_at FROM messages \
                 WHERE queue_id = $1 ORDER BY message_id LIMIT $2"
            );
            let rows = transaction
                .query(&sql, &[&stored.queue_id, &limit_to_sql(limit)])
                .with_context(|| format!("peek at queue `{queue}`"))?;
            rows.iter()
                .map(|row| {
                    let mut message = MessageRow::from_row(row);
                    let source: Option<String> = row.get(6);
                    let reason: Option<String> = row.get(7);
                    let at: Option<i64> = row.get(8);
                    let dead_letter = match (source, reason, at) {
                        (Some(source), Some(reason), Some(at)) => {
                            Some(DeadLetterInfo { source_queue: name_from_column(source)?, reason, at: Timestamp(at) })
                        }
                        _ => None,
                    };
                    let (body, attributes) = message.open_payload(&self.sealer)?;
                    Ok(StoredMessage {
                        message_id: from_sql_integer(message.message_id),
                        receive_count: message.receive_count(),
                        body,
                        attributes,
                        sent_at: Timestamp(message.sent_at),
                        visible_at: Timestamp(message.visible_at),
                        dead_letter,
                    })
                })
                .collect()
        })
    }

    fn dead_letters_from(&self, dead_letter: &Name, source: &Name) -> Result<u64> {
        self.transact(&format!("count the dead letters of `{source}` in `{dead_letter}`"), |transaction| {
            let dead_letter_queue = require_queue(transaction, dead_letter)?;
            let count: i64 = transaction
                .query_one(
                    "SELECT COUNT(*) FROM messages WHERE queue_id = $1 AND dead_letter_source = $2",
                    &[&dead_letter_queue.queue_id, &source.as_str()],
                )
                .context("count dead letters by source")?
                .get(0);
            Ok(from_sql_integer(count))
        })
    }

    fn purge_queue(&self, queue: &Name) -> Result<u64> {
        self.transact(&format!("purge queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let deleted = transaction
                .execute("DELETE FROM messages WHERE queue_id = $1", &[&stored.queue_id])
                .with_context(|| format!("delete the messages of queue `{queue}`"))?;
            Ok(deleted)
        })
    }

    fn redrive_dead_letters(&self, dead_letter: &Name, to: Option<&Name>) -> Result<u64> {
        let now = self.now();
        self.transact(&format!("redrive dead-letter queue `{dead_letter}`"), |transaction| {
            let dead_letter_queue = require_queue(transaction, dead_letter)?;
            let explicit_target = to.map(|name| require_queue(transaction, name)).transpose()?;
            if explicit_target.as_ref().is_some_and(|target| target.queue_id == dead_letter_queue.queue_id) {
                return Err(StateError::Conflict(format!(
                    "cannot redrive dead-letter queue `{dead_letter}` into itself; name another queue"
                )));
            }
            // Each group of dead letters and the queue it moves to (its id and name).
            let mut moves: Vec<(Option<String>, i64, String)> = Vec::new();
            match explicit_target {
                Some(target) => moves.push((None, target.queue_id, target.record.name.to_string())),
                None => {
                    let sources: Vec<String> = transaction
                        .query(
                            "SELECT DISTINCT dead_letter_source FROM messages \
                             WHERE queue_id = $1 AND dead_letter_source IS NOT NULL",
                            &[&dead_letter_queue.queue_id],
                        )
                        .context("list the source queues of dead letters")?
                        .iter()
                        .map(|row| row.get(0))
                        .collect();
                    for source in sources {
                        let source_queue_id = require_queue(transaction, &name_from_column(source.clone())?)?.queue_id;
                        moves.push((Some(source.clone()), source_queue_id, source));
                    }
                }
            }
            let mut moved: u64 = 0;
            let mut woken: BTreeSet<String> = BTreeSet::new();
            for (source, target_queue_id, target) in moves {
                // A redriven message gets a new id, so no receipt handed out before
                // it was dead-lettered can ever match it again (its receive count
                // starts over); sealed payloads are resealed under the new id.
                let dead_letters: Vec<DeadLetterRow> = transaction
                    .query(
                        "SELECT message_id, sent_at, body, attributes FROM messages \
                         WHERE queue_id = $1 AND ($2::TEXT IS NULL OR dead_letter_source = $2) \
                         ORDER BY message_id FOR UPDATE",
                        &[&dead_letter_queue.queue_id, &source],
                    )
                    .context("read dead letters")?
                    .iter()
                    .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
                    .collect();
                let ids = next_message_ids(transaction, dead_letters.len())?;
                for (next_id, (old_id, sent_at, body, attributes)) in ids.into_iter().zip(dead_letters) {
                    let body = self.sealer.reseal(Record::MessageBody(old_id), Record::MessageBody(next_id), body)?;
                    let attributes = attributes
                        .map(|stored| {
                            self.sealer.reseal(
                                Record::MessageAttributes(old_id),
                                Record::MessageAttributes(next_id),
                                stored,
                            )
                        })
                        .transpose()?;
                    transaction
                        .execute(
                            "INSERT INTO messages (message_id, queue_id, visible_at, receive_count, sent_at, body, \
                             attributes) VALUES ($1, $2, $3, 0, $4, $5, $6)",
                            &[&next_id, &target_queue_id, &now.as_millis(), &sent_at, &body, &attributes],
                        )
                        .context("copy a dead letter back")?;
                    transaction
                        .execute("DELETE FROM messages WHERE message_id = $1", &[&old_id])
                        .context("remove a redriven dead letter")?;
                    moved += 1;
                    woken.insert(target.clone());
                }
            }
            crate::notify::notify_each(transaction, woken.iter().map(String::as_str))?;
            Ok(moved)
        })
    }

    /// Every write that makes messages visible at once notifies at commit
    /// (`notify`); messages visible by time are found by the receivers' polls.
    fn watch_messages(&self, on_messages: OnMessages) -> Result<Option<MessageWatch>> {
        Ok(Some(self.watchers.watch(&self.target, on_messages)))
    }
}
