//! Mayfly's domain model, with no IO: names, instants and durations, sizes,
//! schedules, the queue message lifecycle and its lease rules, and the clock
//! that every time-dependent rule is given rather than reading the system time.
//!
//! Everything here is plain data and plain functions, tested without a disk,
//! a network or a real clock. Backends (state stores, buckets) and the binary
//! depend on this crate; it depends on none of them.

pub mod clock;
pub mod event;
pub mod name;
pub mod permission;
pub mod quantity;
pub mod queue;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod trace_context;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use event::{DeletionReason, NewObjectEvent, ObjectEvent, ObjectEventKind};
pub use name::{Name, NameError};
pub use permission::{Access, Permission, PermissionError};
pub use quantity::{ByteSize, QuantityError, format_duration, parse_duration};
pub use schedule::{Schedule, ScheduleError};
pub use trace_context::{TRACE_HEADER_ATTRIBUTE, TraceContext, trace_header, user_attributes};
