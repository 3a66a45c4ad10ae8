//! The `Network` resource on the guest's namespace records (spec §5.6, §6.3 step 12, §6.8):
//! adapters are recorded per namespace id; once the namespace's sandbox (or standalone
//! container) exists, each NIC is moved into it and configured; a host-network pod's NICs are
//! configured in place.

use std::sync::Arc;

use tracing::{info, warn};

use super::container::Container;
use super::{lock, Guest, GuestError};
use crate::network::adapter::Adapter;
use crate::network::link::{self, Target, NIC_DEADLINE};
use crate::network::NetworkError;

fn net(e: NetworkError) -> GuestError {
    GuestError::Network(e)
}

/// Runs blocking network work off the reactor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, GuestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| GuestError::InvalidState(format!("network task failed: {e}")))?
        .map_err(net)
}

impl Guest {
    /// `Network` Add: check the settings, find the NIC (bounded wait), record it, and if its
    /// namespace already has a container, move and configure it now. A failure leaves no record.
    pub async fn add_network_adapter(&self, adapter: Adapter) -> Result<(), GuestError> {
        adapter.validate().map_err(net)?;
        let ns_id = adapter.namespace_id.to_lowercase();
        {
            let mut namespaces = lock(&self.namespaces);
            let ns = namespaces.entry(ns_id.clone()).or_default();
            if ns
                .adapters
                .iter()
                .any(|a| a.id.eq_ignore_ascii_case(&adapter.id))
            {
                return Err(net(NetworkError::Invalid(format!(
                    "adapter {} is already in namespace {ns_id}",
                    adapter.id
                ))));
            }
            ns.adapters.push(adapter.clone());
        }
        let forget = |guest: &Self| {
            if let Some(ns) = lock(&guest.namespaces).get_mut(&ns_id) {
                ns.adapters
                    .retain(|a| !a.id.eq_ignore_ascii_case(&adapter.id));
            }
        };
        let found = link::wait_for(&adapter, NIC_DEADLINE).await.map_err(net);
        let name = match found {
            Ok(name) => name,
            Err(e) => {
                forget(self);
                return Err(e);
            }
        };
        let placed = lock(&self.namespaces).get(&ns_id).and_then(|ns| {
            let target = if ns.host_network {
                Some(Target::InPlace)
            } else {
                ns.pid.map(Target::Namespace)
            };
            // Its place among the namespace's adapters decides its policy-based routing.
            let mut adapters = ns.adapters.clone();
            crate::network::adapter::apply_policy_based_routing(&mut adapters);
            let this = adapters
                .into_iter()
                .find(|a| a.id.eq_ignore_ascii_case(&adapter.id))?;
            target.map(|t| (t, this))
        });
        if let Some((target, a)) = placed {
            if let Err(e) = blocking(move || link::configure(&a, &name, target)).await {
                forget(self);
                return Err(e);
            }
        }
        info!(namespace = %ns_id, adapter = %adapter.id, "network adapter added");
        Ok(())
    }

    /// `Network` Remove: forget the adapter (the host then hot-removes the NIC). An unknown
    /// namespace or an unknown adapter is logged and accepted, as the original does.
    pub fn remove_network_adapter(&self, adapter: &Adapter) -> Result<(), GuestError> {
        let ns_id = adapter.namespace_id.to_lowercase();
        let mut namespaces = lock(&self.namespaces);
        let Some(ns) = namespaces.get_mut(&ns_id) else {
            warn!(namespace = %ns_id, adapter = %adapter.id, "Network Remove for an unknown namespace");
            return Ok(());
        };
        let before = ns.adapters.len();
        ns.adapters
            .retain(|a| !a.id.eq_ignore_ascii_case(&adapter.id));
        if ns.adapters.len() == before {
            warn!(namespace = %ns_id, adapter = %adapter.id, "Network Remove of an adapter the namespace does not have");
        }
        Ok(())
    }

    /// Search domains and servers of a namespace's adapters, in adapter order.
    pub(super) fn namespace_dns(&self, ns_id: &str) -> (Vec<String>, Vec<String>) {
        lock(&self.namespaces)
            .get(ns_id)
            .map(|ns| {
                (
                    ns.adapters.iter().map(|a| a.dns_suffix.clone()).collect(),
                    ns.adapters
                        .iter()
                        .map(|a| a.dns_server_list.clone())
                        .collect(),
                )
            })
            .unwrap_or_default()
    }

    /// §6.3 step 12 for a new sandbox or standalone container: records its init in the
    /// namespace and configures every NIC there (in place for a host-network pod).
    pub(super) async fn sync_network(&self, c: &Container) -> Result<(), GuestError> {
        let adapters = {
            let mut namespaces = lock(&self.namespaces);
            let Some(ns) = namespaces.get_mut(&c.network_namespace) else {
                return Ok(());
            };
            ns.host_network = c.host_network;
            ns.pid = Some(c.init.pid);
            let mut adapters = ns.adapters.clone();
            crate::network::adapter::apply_policy_based_routing(&mut adapters);
            adapters
        };
        let target = if c.host_network {
            Target::InPlace
        } else {
            Target::Namespace(c.init.pid)
        };
        for adapter in adapters {
            let name = {
                let adapter = adapter.clone();
                blocking(move || Ok(link::locate(std::path::Path::new("/sys"), &adapter))).await?
            };
            // Not in the agent's namespace: already moved by an earlier sync.
            let Some(name) = name else {
                if target == Target::InPlace {
                    return Err(net(NetworkError::NotFound(format!(
                        "adapter {} is gone",
                        adapter.id
                    ))));
                }
                continue;
            };
            blocking(move || link::configure(&adapter, &name, target)).await?;
        }
        Ok(())
    }

    /// Removes a container whose Create failed after the runtime made it.
    pub(super) async fn discard(&self, c: &Arc<Container>) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(c.init.pid).unwrap_or(i32::MAX)),
            nix::sys::signal::Signal::SIGKILL,
        );
        if let Err(e) = self.delete_container(c).await {
            warn!(container_id = %c.id, error = %e, "removing a container whose Create failed");
        }
    }
}
