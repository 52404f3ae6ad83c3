//! Batch jobs: one ephemeral coordinator per run and its workers.
//!
//! The coordinator ([`coordinator::run`]) holds a renewable lease on its run
//! in the state store, fills the run's durable item ledger from the job's
//! source, sizes and provisions a fleet of workers through a
//! [`mayfly_fleet::Provisioner`], hands items to workers that pull them,
//! watches heartbeats and the provisioner, puts a lost worker's items back at
//! once, and ends the run in a fixed order: source drained and nothing in
//! flight → every worker's log sealed into the logs bucket → every worker
//! stopped and verified gone by an inventory of the run's tags → the report
//! written → the lease released.
//!
//! A worker ([`worker::run`]) is stateless: it enrolls with a one-time token
//! (its key made in its own memory, its certificate signed by the run's
//! authority, [`enrollment`]), pulls items over HTTPS with
//! mutual TLS (a per-run certificate authority, [`tls`]), runs
//! the job's function warm through [`mayfly_runtime::Invoker`], heartbeats,
//! and streams its log to the coordinator.
//!
//! Completions that arrive together share one durable commit ([`group_commit`]).
//!
//! What the processes of a run write to their own stdout and stderr is kept
//! only sealed ([`output`]); a worker on another host sends its own to its
//! coordinator ([`output_forwarding`]).
//!
//! The coordinator records the run's and its items' trace spans
//! (`traces.rs`) and hands each item's context to its worker with the lease.

pub mod coordinator;
pub mod enrollment;
pub mod group_commit;
pub mod logs;
pub mod output;
pub mod output_forwarding;
pub mod protocol;
pub mod tls;
mod traces;
pub mod worker;
