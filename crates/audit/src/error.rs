//! What can stop an audit from taking its inventory or reaping.

use mayfly_core::Name;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read the state store for the inventory: {0}")]
    State(#[from] mayfly_state::StateError),
    #[error("cannot list the live resources of the {provisioner} provisioner: {source}")]
    Provisioner { provisioner: &'static str, source: mayfly_fleet::FleetError },
    #[error("cannot list the networks of {provider}: {source}")]
    Networks { provider: &'static str, source: mayfly_fleet::FleetError },
    #[error("cannot list the sealed logs in bucket `{bucket}`: {source}")]
    Bucket { bucket: Name, source: mayfly_buckets::BucketError },
    #[error("cannot reap the orphans of the {provisioner} provisioner: {source}")]
    Reap { provisioner: &'static str, source: mayfly_fleet::FleetError },
}
