//! Queues: statistics (with each queue's dead-letter queue) and sending messages.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use mayfly_state::{OutgoingMessage, QueueRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::parse_name;
use crate::ApiState;
use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, JsonBody};

/// The longest delay a message may ask for (as SQS).
const MAX_DELAY: Duration = Duration::from_secs(900);
/// The most messages one request may send.
const MAX_MESSAGES_PER_REQUEST: usize = 1_000;

/// A queue's counts at an instant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    /// Ready to be received.
    pub visible: u64,
    /// Received and leased, not yet deleted.
    pub in_flight: u64,
    /// Sent with a delay not yet over.
    pub delayed: u64,
    /// Age of the oldest message, in seconds.
    pub oldest_age_seconds: Option<f64>,
    /// Receives after which a message moves to the dead-letter queue.
    pub max_receives: Option<u32>,
    pub dead_letter_queue: Option<String>,
    /// Messages in the dead-letter queue (all states), when it exists.
    pub dead_letters: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

/// One message to send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageInput {
    /// The body, as text (often JSON).
    pub body: String,
    /// String attributes, as SQS message attributes; `AWSTraceHeader` is
    /// reserved for the message's trace context.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Overrides the queue's delay: 0 to 900 seconds.
    pub delay_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SendMessagesRequest {
    /// 1 to 1000 messages, stored in one commit: all or none.
    pub messages: Vec<MessageInput>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SendMessagesResponse {
    /// The messages' ids, in the order sent.
    pub message_ids: Vec<u64>,
}

fn queue_view(api: &ApiState, queue: &QueueRecord) -> Result<QueueView, ApiError> {
    let state = &api.config().state;
    let stats = state.queue_stats(&queue.name)?;
    let dead_letters = match &queue.config.dead_letter {
        Some(dead_letter) => match state.queue_stats(dead_letter) {
            Ok(stats) => Some(stats.visible + stats.in_flight + stats.delayed),
            Err(mayfly_state::StateError::NotFound { .. }) => None,
            Err(error) => return Err(error.into()),
        },
        None => None,
    };
    Ok(QueueView {
        name: queue.name.to_string(),
        visible: stats.visible,
        in_flight: stats.in_flight,
        delayed: stats.delayed,
        oldest_age_seconds: stats.oldest_age.map(|age| age.as_secs_f64()),
        max_receives: queue.config.max_receives,
        dead_letter_queue: queue.config.dead_letter.as_ref().map(ToString::to_string),
        dead_letters,
    })
}

/// Every queue's statistics, by name, with its dead-letter queue's depth.
#[utoipa::path(get, path = "/v1/queues", tag = "queues", operation_id = "list_queues",
    responses((status = 200, description = "The queues, by name", body = QueueList)))]
pub async fn list_queues(State(api): State<ApiState>, caller: Caller) -> Result<Json<QueueList>, ApiError> {
    api.authorize_caller(&caller, Scope::QueuesRead, Resource::Unlimited, "queues")?;
    let queues = api.config().state.queues()?;
    let queues = queues.iter().map(|queue| queue_view(&api, queue)).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(QueueList { queues }))
}

/// One queue's statistics.
#[utoipa::path(get, path = "/v1/queues/{queue}", tag = "queues", operation_id = "queue_stats",
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, description = "The queue's counts", body = QueueView)))]
pub async fn queue_stats(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueView>, ApiError> {
    api.authorize_caller(&caller, Scope::QueuesRead, Resource::Unlimited, format!("queue/{queue}"))?;
    let name = parse_name("queue", &queue)?;
    let record = api.config().state.queue(&name)?;
    Ok(Json(queue_view(&api, &record)?))
}

/// Send messages to a queue, all in one commit.
#[utoipa::path(post, path = "/v1/queues/{queue}/messages", tag = "queues", operation_id = "send_messages",
    params(("queue" = String, Path, description = "The queue")),
    request_body = SendMessagesRequest,
    responses((status = 201, description = "Stored", body = SendMessagesResponse)))]
pub async fn send_messages(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(queue): ApiPath<String>,
    body: JsonBody,
) -> Result<(StatusCode, Json<SendMessagesResponse>), ApiError> {
    api.authorize_caller(&caller, Scope::MessagesWrite, Resource::Unlimited, format!("queue/{queue}"))?;
    let name = parse_name("queue", &queue)?;
    let request: SendMessagesRequest = body.parse().await?;
    if name.as_str().starts_with("mayfly-") {
        return Err(ApiError::bad_request(format!(
            "queue `{name}` is one of Mayfly's own (names starting with `mayfly-`); send to a queue of the architecture"
        )));
    }
    if request.messages.is_empty() || request.messages.len() > MAX_MESSAGES_PER_REQUEST {
        return Err(ApiError::bad_request(format!(
            "`messages` must hold 1 to {MAX_MESSAGES_PER_REQUEST} messages, not {}",
            request.messages.len()
        )));
    }
    let mut outgoing = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.into_iter().enumerate() {
        let delay = match message.delay_seconds {
            Some(seconds) if Duration::from_secs(seconds) > MAX_DELAY => {
                return Err(ApiError::bad_request(format!(
                    "`messages[{index}].delay_seconds` must be at most {}, not {seconds}",
                    MAX_DELAY.as_secs()
                )));
            }
            Some(seconds) => Some(Duration::from_secs(seconds)),
            None => None,
        };
        if message.attributes.contains_key(mayfly_core::TRACE_HEADER_ATTRIBUTE) {
            return Err(ApiError::bad_request(format!(
                "`messages[{index}].attributes` names `{}`, which is reserved for the message's trace context; choose another name",
                mayfly_core::TRACE_HEADER_ATTRIBUTE
            )));
        }
        outgoing.push(OutgoingMessage {
            body: message.body.into_bytes(),
            attributes: message.attributes.into_iter().collect(),
            delay,
        });
    }
    let message_ids = api.config().state.send_messages(&name, &outgoing)?;
    Ok((StatusCode::CREATED, Json(SendMessagesResponse { message_ids })))
}
