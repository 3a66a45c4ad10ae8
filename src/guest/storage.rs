//! Storage resources of ModifySettings on the guest's mount table: the blocking work (device
//! waits, mounts, device-mapper) runs off the reactor; what needs the rest of the guest (the
//! Plan9 connection, whether a container still runs on a rootfs) is settled here first.

use std::path::Path;
use std::sync::Arc;

use super::container::Container;
use super::{Entry, Guest, GuestError};
use crate::storage::overlay::CombinedLayers;
use crate::storage::plan9::MappedDirectory;
use crate::storage::pmem::VpmemDevice;
use crate::storage::scsi::{MappedVirtualDisk, ScsiDevice};
use crate::storage::{overlay, plan9, pmem, scsi, StorageError};

/// A storage resource of ModifySettings, decoded.
#[derive(Debug)]
pub enum StorageResource {
    Disk(MappedVirtualDisk),
    DiskEject(ScsiDevice),
    Pmem(VpmemDevice),
    Layers(CombinedLayers),
    Share(MappedDirectory),
}

impl Guest {
    /// The id of a running container (init not exited) for which `uses` holds.
    fn running_container(&self, uses: impl Fn(&Container) -> bool) -> Option<String> {
        self.lock_containers()
            .values()
            .find_map(|entry| match entry {
                Entry::Ready(c) if !c.init.has_exited() && uses(c) => Some(c.id.clone()),
                _ => None,
            })
    }

    /// Applies an Add (`add`) or Remove of a storage resource.
    pub async fn modify_storage(
        &self,
        resource: StorageResource,
        add: bool,
    ) -> Result<(), GuestError> {
        let storage = Arc::clone(&self.storage);
        let mut connection = None;
        match (&resource, add) {
            (StorageResource::Share(share), true) => {
                share.validate().map_err(GuestError::Storage)?;
                let port = share.port().map_err(GuestError::Storage)?;
                let stream = self
                    .dialer
                    .dial(port)
                    .await
                    .map_err(|source| GuestError::Io {
                        what: format!("dial the Plan9 server on port {port}"),
                        source,
                    })?;
                connection = Some(stream.into_blocking_fd().map_err(|source| GuestError::Io {
                    what: "Plan9 connection".into(),
                    source,
                })?);
            }
            (StorageResource::Layers(layers), false) => {
                let root = Path::new(&layers.container_root_path);
                if let Some(container) = self.running_container(|c| c.rootfs == root) {
                    return Err(GuestError::Storage(StorageError::ContainerRunning {
                        path: root.into(),
                        container,
                    }));
                }
            }
            (
                StorageResource::Disk(MappedVirtualDisk { mount_path, .. })
                | StorageResource::Pmem(VpmemDevice { mount_path, .. })
                | StorageResource::Share(MappedDirectory { mount_path, .. }),
                false,
            ) if !mount_path.is_empty() => {
                // A disk, layer or share bind-mounted into a running container stays.
                let path = Path::new(mount_path);
                if let Some(container) =
                    self.running_container(|c| c.mount_sources.iter().any(|s| s.starts_with(path)))
                {
                    return Err(GuestError::Storage(StorageError::ContainerRunning {
                        path: path.into(),
                        container,
                    }));
                }
            }
            _ => {}
        }
        // Devices are waited for here, holding no thread; only the mounting is blocking work.
        let device = match (&resource, add) {
            (StorageResource::Disk(d), true) => Some(Device::Scsi(
                scsi::attach(d).await.map_err(GuestError::Storage)?,
            )),
            (StorageResource::Pmem(d), true) => Some(Device::Pmem(
                pmem::attach(d).await.map_err(GuestError::Storage)?,
            )),
            _ => None,
        };
        tokio::task::spawn_blocking(move || match (resource, add, device) {
            (StorageResource::Disk(d), true, Some(Device::Scsi(dev))) => {
                scsi::add(&storage, &d, &dev)
            }
            (StorageResource::Disk(d), false, _) => scsi::remove(&storage, &d),
            (StorageResource::DiskEject(d), _, _) => scsi::eject(&d),
            (StorageResource::Pmem(d), true, Some(Device::Pmem(found))) => {
                pmem::add(&storage, &d, found)
            }
            (StorageResource::Pmem(d), false, _) => pmem::remove(&storage, &d),
            (StorageResource::Layers(l), true, _) => overlay::add(&storage, &l),
            (StorageResource::Layers(l), false, _) => overlay::remove(&storage, &l),
            (StorageResource::Share(s), true, _) => match connection {
                Some(c) => plan9::add(&storage, &s, c),
                None => Err(StorageError::Invalid("no Plan9 connection".into())),
            },
            (StorageResource::Share(s), false, _) => plan9::remove(&storage, &s),
            (StorageResource::Disk(_) | StorageResource::Pmem(_), true, _) => Err(
                StorageError::Invalid("the device was not found before mounting".into()),
            ),
        })
        .await
        .map_err(|e| GuestError::InvalidState(format!("storage task failed: {e}")))?
        .map_err(GuestError::Storage)
    }

    /// What the host has mounted in the guest (for stack dumps and tests).
    pub fn mounts(&self) -> Vec<(std::path::PathBuf, &'static str, u32)> {
        self.storage.mounts()
    }
}

/// A device found (async) before its blocking mount.
#[derive(Debug)]
enum Device {
    Scsi(std::path::PathBuf),
    Pmem((std::path::PathBuf, u64)),
}
