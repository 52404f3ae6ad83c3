//! Provisioners by name: every kind of provisioner a job may name
//! (`provisioner = { kind = "..." }`), the facts other crates ask about a
//! kind, and how to get a provisioner of it.
//!
//! This is the one list: the spec validates `kind` against it and writes it
//! into the JSON Schema, the control plane and the CLI ask it where a run's coordinator
//! runs, the audit names kinds by it, and the CLI finds every provisioner a
//! project may have resources in through it. A new kind is a
//! [`ProvisionerKindEntry`] in its own module plus one line in [`KINDS`].

use std::fmt;
use std::sync::Arc;

use crate::error::FleetError;
use crate::provisioner::{BoxFuture, Provisioner};

/// Every kind, the default first.
const KINDS: &[&ProvisionerKindEntry] =
    &[&crate::local::KIND, &crate::docker::KIND, &crate::slurm::KIND, &crate::swarm::KIND];

/// Where a run's coordinator runs for a kind of provisioner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorPlacement {
    /// A process of its own on this host (`mayfly coordinator --run R`),
    /// starting its workers through the kind's provisioner itself.
    OwnProcess,
    /// In a container of the job's network, which a host broker (`mayfly
    /// broker --run R`) starts; the broker starts the workers for it.
    ContainerThroughBroker,
}

/// How to get a provisioner of a kind that can start, watch, stop and
/// inventory its resources; an error says why the system behind it (a
/// container engine) cannot be reached.
pub type ConnectProvisioner = fn() -> BoxFuture<'static, Result<Arc<dyn Provisioner>, FleetError>>;

/// One kind of provisioner: its name in the architecture file and what
/// the rest of Mayfly needs to know about it.
#[derive(Debug)]
pub struct ProvisionerKindEntry {
    /// `kind = "..."` in the architecture file, and [`Provisioner::kind`].
    pub name: &'static str,
    /// One line for the JSON Schema.
    pub summary: &'static str,
    /// The `provisioner` keys only some kinds take that this kind takes
    /// (keys every kind takes, like `kind`, `memory`, `cpus`, are not listed).
    pub options: &'static [&'static str],
    pub coordinator: CoordinatorPlacement,
    /// Whether its workers get addresses in the job's `subnet`, which
    /// `[policy] networks` must then contain.
    pub workers_in_subnet: bool,
    pub connect: ConnectProvisioner,
}

/// A kind of provisioner from the registry, named by its `name`.
#[derive(Clone, Copy)]
pub struct ProvisionerKind(&'static ProvisionerKindEntry);

impl ProvisionerKind {
    /// Local processes, the default.
    pub const LOCAL: ProvisionerKind = ProvisionerKind(&crate::local::KIND);

    /// The kind called `name`, if there is one.
    pub fn named(name: &str) -> Option<ProvisionerKind> {
        ProvisionerKind::all().find(|kind| kind.name() == name)
    }

    /// Every kind, the default first.
    pub fn all() -> impl Iterator<Item = ProvisionerKind> {
        KINDS.iter().map(|entry| ProvisionerKind(entry))
    }

    pub fn name(self) -> &'static str {
        self.0.name
    }

    pub fn summary(self) -> &'static str {
        self.0.summary
    }

    /// Whether this kind takes the kind-specific `provisioner` key `option`.
    pub fn takes_option(self, option: &str) -> bool {
        self.0.options.contains(&option)
    }

    /// Every kind-specific `provisioner` key some kind takes, in registry order.
    pub fn all_options() -> impl Iterator<Item = &'static str> {
        let mut seen: Vec<&'static str> = Vec::new();
        for kind in ProvisionerKind::all() {
            for option in kind.0.options {
                if !seen.contains(option) {
                    seen.push(option);
                }
            }
        }
        seen.into_iter()
    }

    pub fn coordinator(self) -> CoordinatorPlacement {
        self.0.coordinator
    }

    pub fn workers_in_subnet(self) -> bool {
        self.0.workers_in_subnet
    }

    /// A provisioner of this kind, able to start, watch, stop and inventory.
    pub async fn connect(self) -> Result<Arc<dyn Provisioner>, FleetError> {
        (self.0.connect)().await
    }
}

impl Default for ProvisionerKind {
    fn default() -> Self {
        ProvisionerKind::LOCAL
    }
}

impl PartialEq for ProvisionerKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ProvisionerKind {}

impl fmt::Debug for ProvisionerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProvisionerKind({:?})", self.name())
    }
}

impl fmt::Display for ProvisionerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for ProvisionerKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_their_names_and_each_name_is_its_provisioners_kind() {
        assert_eq!(ProvisionerKind::default().name(), "local");
        let names: Vec<&str> = ProvisionerKind::all().map(ProvisionerKind::name).collect();
        assert_eq!(names, ["local", "docker", "slurm", "swarm"]);
        for kind in ProvisionerKind::all() {
            assert_eq!(ProvisionerKind::named(kind.name()), Some(kind));
        }
        assert_eq!(ProvisionerKind::named("kubernetes"), None);
        assert_eq!(
            ProvisionerKind::all_options().collect::<Vec<_>>(),
            [
                "network",
                "subnet",
                "image",
                "partition",
                "account",
                "qos",
                "time_limit",
                "extra_args",
                "spool",
                "constraints"
            ]
        );
    }

    #[tokio::test]
    async fn the_local_kind_connects_to_a_local_provisioner() {
        let provisioner = ProvisionerKind::LOCAL.connect().await.expect("local processes need no engine");
        assert_eq!(provisioner.kind(), ProvisionerKind::LOCAL.name());
    }
}
