//! Compliance automation (`mayfly audit`): an [`Inventory`] of every resource
//! Mayfly knows — from the deployed architecture and the state store — or can
//! find — live coordinators and workers from every [`Provisioner`] given,
//! networks from every [`NetworkInventory`] — with their tags and owners, and
//! the policy [`rules`] checked over it.
//!
//! - [`take_inventory`] is the only part that does IO: it reads the state
//!   store, lists the sealed logs in the logs buckets and asks each
//!   provisioner and network inventory what is alive, by the project's tag.
//! - [`check`] runs every rule of [`RULES`] over an inventory and the
//!   `[policy]`: plain functions over plain data, tested without a disk, a
//!   clock or a process. Each finding names its rule, a severity, the
//!   resource, what is wrong and what to do.
//! - [`reap_orphans_everywhere`] removes what the orphan rule finds, with the
//!   fleet's own reaper, on every provisioner.
//!
//! Findings are [`AuditFinding`]s of the state store's contract, so a
//! recorded audit ([`mayfly_state::AuditStore::record_audit`]) is readable by
//! anything that reads the store (the API, the dashboard).
//!
//! **Never knows** SQL, TOML, HTTP or how a process or container is started.
//!
//! [`Provisioner`]: mayfly_fleet::Provisioner

mod collect;
mod error;
mod inventory;
pub mod rules;

pub use collect::{
    InventorySources, LiveNetwork, NetworkInventory, ReapedResource, reap_orphans_everywhere, take_inventory,
};
pub use error::AuditError;
pub use inventory::*;
pub use mayfly_state::{AuditFinding, AuditSeverity};
pub use rules::{AuditSettings, RULES, Rule, check};
