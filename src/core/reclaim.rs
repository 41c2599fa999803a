//! What happens to the per-index state of the objects when an index changes hands: the one
//! place that knows the object kinds that keep such state, above the registry
//! ([`super::endpoint`]) and the objects.
//!
//! - Topic subscriptions belong to a process, not to an index: they are dropped whenever an
//!   index is taken ([`Endpoint::attach`]), given back ([`Endpoint::detach`]) or freed for a
//!   dead process ([`Shared::release_pid`]).
//! - Semaphore permits are held by a holder word that names the process, so a dead holder's are
//!   found by the waiters' sweeps; the primary also takes them back at once when cluster reports
//!   the exit ([`Shared::process_exited`]).
//!
//! Each change is then announced to every endpoint ([`Shared::registry_changed`]).

use std::sync::Arc;

use super::endpoint::{Attach, AttachError, Endpoint, Shared};
use super::semaphore;
use super::topics;

/// Drops what the previous holders of `indices` left, then tells every endpoint.
fn indices_changed_hands(shared: &Arc<Shared>, indices: &[u32]) {
    topics::clear_indices(shared, indices);
    shared.registry_changed();
}

impl Endpoint {
    /// Takes an index as `how` says (reclaiming those of dead processes where `how` allows it)
    /// and starts it clean.
    pub fn attach(shared: Arc<Shared>, how: Attach) -> Result<Endpoint, AttachError> {
        let ep = Endpoint::claim(shared, how)?;
        indices_changed_hands(ep.shared(), &[ep.index()]);
        Ok(ep)
    }

    /// Gives the index back. Idempotent; a no-op when somebody else took the index meanwhile.
    pub fn detach(&self) {
        if self.give_back() {
            indices_changed_hands(self.shared(), &[self.index()]);
        }
    }
}

impl Shared {
    /// Frees every worker index held by `pid` (the primary calls this from cluster's 'exit').
    /// Returns the freed indices.
    pub fn release_pid(self: &Arc<Self>, pid: u32) -> Vec<u32> {
        let freed = self.free_indices_of(pid);
        if !freed.is_empty() {
            indices_changed_hands(self, &freed);
        }
        freed
    }

    /// What the primary does when cluster reports that `pid` exited: frees its indices and takes
    /// back the semaphore permits it held. Returns the freed indices.
    pub fn process_exited(self: &Arc<Self>, pid: u32) -> Vec<u32> {
        let freed = self.release_pid(pid);
        semaphore::release_pid(self, pid);
        freed
    }
}
