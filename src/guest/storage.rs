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
use crate::storage::verity::VerityInfo;
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

    /// Applies an Add (`add`) or Remove of a storage resource: the policy's decision and the
    /// action run as one policy transaction, so that a refused or failed change leaves the
    /// policy's metadata as it was (SP §3.7).
    ///
    /// # Errors
    /// A confidential guest refuses everything but `SCSIDevice` once an allowed unmount failed
    /// ([`GuestError::Inconsistent`], SP §4.6); then the policy's refusal, the confidential
    /// checks, and the storage error.
    pub async fn modify_storage(
        &self,
        resource: StorageResource,
        add: bool,
    ) -> Result<(), GuestError> {
        if !matches!(resource, StorageResource::DiskEject(_)) {
            self.check_state()?;
        }
        let policy = Arc::clone(&self.policy);
        policy
            .transaction(self.modify_storage_inner(resource, add))
            .await
    }

    /// The policy's decision on a storage change that needs no device to decide (SP §4.3–4.14).
    /// Removals are decided before anything else is checked, so that a host cannot probe for
    /// paths the policy would not let it touch.
    fn decide_storage(&self, resource: &StorageResource, add: bool) -> Result<(), GuestError> {
        use crate::policy::input;
        use crate::policy::EnforcementPoint as P;
        match (resource, add) {
            (StorageResource::Disk(d), true) if !d.mount_path.is_empty() && d.block_dev => {
                self.enforce(P::MountBlockdev, input::target(&d.mount_path), || {
                    format!(
                        "creating blockdev symlink at {} (-> scsi controller {} lun {}) denied by policy",
                        d.mount_path, d.controller, d.lun
                    )
                })?;
            }
            (StorageResource::Disk(d), true) if !d.mount_path.is_empty() && !d.read_only => {
                let decision = input::rw_mount_device(
                    &d.mount_path,
                    d.encrypted,
                    d.ensure_filesystem,
                    &d.filesystem,
                );
                self.enforce(P::RwMountDevice, decision, || {
                    format!(
                        "mounting scsi device controller {} lun {} onto {} denied by policy",
                        d.controller, d.lun, d.mount_path
                    )
                })?;
            }
            (StorageResource::Disk(d), false) if !d.mount_path.is_empty() => {
                let (point, context) = if d.block_dev {
                    (P::UnmountBlockdev, "removing blockdev symlink at")
                } else if d.read_only {
                    (P::UnmountDevice, "unmounting scsi device at")
                } else {
                    (P::RwUnmountDevice, "unmounting scsi device at")
                };
                self.enforce(point, input::unmount(&d.mount_path), || {
                    format!("{context} {} denied by policy", d.mount_path)
                })?;
            }
            (StorageResource::Pmem(d), false) => {
                self.enforce(P::UnmountDevice, input::unmount(&d.mount_path), || {
                    format!(
                        "unmounting pmem device from {} denied by policy",
                        d.mount_path
                    )
                })?;
            }
            (StorageResource::Layers(l), true) => {
                if !l.scratch_path.is_empty() {
                    let encrypted = self.storage.on_encrypted_disk(Path::new(&l.scratch_path));
                    self.enforce(
                        P::ScratchMount,
                        input::scratch_mount(&l.scratch_path, encrypted),
                        || "scratch mounting denied by policy".into(),
                    )?;
                }
                let layers: Vec<String> = l.layers.iter().map(|x| x.path.clone()).collect();
                self.enforce(
                    P::MountOverlay,
                    input::mount_overlay(&l.container_id, &layers, &l.container_root_path),
                    || "overlay creation denied by policy".into(),
                )?;
            }
            (StorageResource::Layers(l), false) => {
                self.enforce(
                    P::UnmountOverlay,
                    input::unmount(&l.container_root_path),
                    || "overlay removal denied by policy".into(),
                )?;
            }
            (StorageResource::Share(s), true) => {
                self.enforce(P::Plan9Mount, input::plan9_mount(&s.mount_path), || {
                    format!("mounting plan9 device at {} denied by policy", s.mount_path)
                })?;
            }
            (StorageResource::Share(s), false) => {
                self.enforce(P::Plan9Unmount, input::unmount(&s.mount_path), || {
                    format!(
                        "unmounting plan9 device at {} denied by policy",
                        s.mount_path
                    )
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `mount_device` for a read-only layer, once its device is found: in a confidential guest
    /// with the dm-verity root hash read from the device (SP §4.3, §9.3), else with none.
    ///
    /// In a confidential guest, returns the `VerityInfo` read from the device's own superblock:
    /// the layer is then mounted through dm-verity with exactly the root hash the policy
    /// allowed, whatever `VerityInfo` the host sent (SP §4.3).
    async fn decide_layer(
        &self,
        dev: &Path,
        target: &str,
        regex: &str,
        context: impl FnOnce() -> String,
    ) -> Result<Option<VerityInfo>, GuestError> {
        let verity = if self.policy.is_confidential() {
            let dev = dev.to_path_buf();
            Some(
                tokio::task::spawn_blocking(move || crate::storage::verity::from_superblock(&dev))
                    .await
                    .map_err(|e| GuestError::InvalidState(format!("verity task failed: {e}")))?
                    .map_err(GuestError::Storage)?,
            )
        } else {
            None
        };
        let hash = verity.as_ref().map_or("", |v| v.root_digest.as_str());
        self.enforce(
            crate::policy::EnforcementPoint::MountDevice,
            crate::policy::input::mount_device(target, hash, regex),
            context,
        )?;
        Ok(verity)
    }

    /// What a confidential guest refuses before asking the policy (SP §4.3, §4.4, §4.7 step 1,
    /// §9.6): layers mounted other than read-only ext4 with exactly `ro`, read-write disks with
    /// options, VPMem layers mapped from part of a device, and rootfs or scratch paths other
    /// than those of a 64-hex container id (a policy matches containers and Plan9 targets by
    /// that id).
    fn confidential_checks(resource: &StorageResource) -> Result<(), GuestError> {
        let refuse = |text: String| Err(GuestError::InvalidRequest(text));
        match resource {
            StorageResource::Disk(d) if !d.mount_path.is_empty() && !d.block_dev => {
                if d.read_only {
                    if !(d.filesystem.is_empty() || d.filesystem == "ext4") {
                        return refuse(format!(
                            "read-only layers must be ext4 in a confidential guest, got {:?}",
                            d.filesystem
                        ));
                    }
                    if d.options != ["ro"] {
                        return refuse(format!(
                            "read-only layers must be mounted with options [\"ro\"] in a confidential guest, got {:?}",
                            d.options
                        ));
                    }
                } else if !d.options.is_empty() {
                    return refuse(format!(
                        "read-write disks take no mount options in a confidential guest, got {:?}",
                        d.options
                    ));
                }
            }
            StorageResource::Pmem(d) if d.mapping_info.is_some() => {
                return refuse(
                    "VPMem layers mapped from part of a device are not supported in a confidential guest".into(),
                );
            }
            StorageResource::Layers(l) => {
                let id = &l.container_id;
                if !crate::guest::spec::is_confidential_id(id) {
                    return refuse(format!(
                        "container id {:?} must be 64 hex digits in a confidential guest",
                        super::error::shown(id)
                    ));
                }
                if l.container_root_path != format!("/run/gcs/c/{id}/rootfs") {
                    return refuse(format!(
                        "the rootfs of container {id} must be /run/gcs/c/{id}/rootfs in a confidential guest"
                    ));
                }
                let scratch_ok = l.scratch_path.is_empty()
                    || l.scratch_path
                        .strip_prefix("/run/gcs/c/")
                        .and_then(|rest| rest.split_once("/scratch/"))
                        .is_some_and(|(owner, cid)| {
                            crate::guest::spec::is_confidential_id(owner) && cid == id
                        });
                if !scratch_ok {
                    return refuse(format!(
                        "the scratch of container {id} must be /run/gcs/c/<64 hex>/scratch/{id} in a confidential guest"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn modify_storage_inner(
        &self,
        resource: StorageResource,
        add: bool,
    ) -> Result<(), GuestError> {
        if add && self.policy.is_confidential() {
            Self::confidential_checks(&resource)?;
        }
        self.decide_storage(&resource, add)?;
        if let (StorageResource::Share(share), true) = (&resource, add) {
            if self.policy.is_confidential() {
                check_share_name(&share.share_name)?;
            }
        }
        let removal = if add { None } else { unmount_target(&resource) };
        if let (Some((what, path)), StorageResource::Disk(_) | StorageResource::Pmem(_)) =
            (&removal, &resource)
        {
            if self.policy.is_confidential() {
                check_exists(what, path)?;
            }
        }
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
        let mut resource = resource;
        let device = match (&mut resource, add) {
            (StorageResource::Disk(d), true) => {
                let dev = scsi::attach(d).await.map_err(GuestError::Storage)?;
                if !d.mount_path.is_empty() && d.read_only && !d.block_dev {
                    let verity = self.decide_layer(
                        &dev,
                        &d.mount_path,
                        crate::policy::input::SCSI_MOUNT_PATH_REGEX,
                        || {
                            format!(
                                "mounting scsi device controller {} lun {} onto {} denied by policy",
                                d.controller, d.lun, d.mount_path
                            )
                        },
                    )
                    .await?;
                    if verity.is_some() {
                        d.verity_info = verity;
                    }
                }
                Some(Device::Scsi(dev))
            }
            (StorageResource::Pmem(d), true) => {
                let found = pmem::attach(d).await.map_err(GuestError::Storage)?;
                let verity = self
                    .decide_layer(
                        &found.0,
                        &d.mount_path,
                        crate::policy::input::VPMEM_MOUNT_PATH_REGEX,
                        || {
                            format!(
                                "mounting pmem device {} onto {} denied by policy",
                                d.device_number, d.mount_path
                            )
                        },
                    )
                    .await?;
                if verity.is_some() {
                    d.verity_info = verity;
                }
                Some(Device::Pmem(found))
            }
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
        .map_err(|e| {
            if let Some((what, path)) = &removal {
                if e.is_failed_unmount() {
                    self.set_inconsistent(format!(
                        "unmounting {what} at {path} failed: {}",
                        super::consistency::chain(&e)
                    ));
                }
            }
            GuestError::Storage(e)
        })
    }

    /// What the host has mounted in the guest (for stack dumps and tests).
    pub fn mounts(&self) -> Vec<(std::path::PathBuf, &'static str, u32)> {
        self.storage.mounts()
    }
}

/// What a Remove unmounts, as the original names it in an unmount failure (SP §4.6): `scsi
/// device`, `pmem device`, `overlay` or `plan9 device`, and its guest path. `None` for what
/// unmounts nothing (a disk without a mount path, `SCSIDevice`).
fn unmount_target(resource: &StorageResource) -> Option<(&'static str, String)> {
    match resource {
        StorageResource::Disk(d) if !d.mount_path.is_empty() => {
            Some(("scsi device", d.mount_path.clone()))
        }
        StorageResource::Pmem(d) => Some(("pmem device", d.mount_path.clone())),
        StorageResource::Layers(l) => Some(("overlay", l.container_root_path.clone())),
        StorageResource::Share(s) => Some(("plan9 device", s.mount_path.clone())),
        StorageResource::Disk(_) | StorageResource::DiskEject(_) => None,
    }
}

/// A confidential Remove of a SCSI disk or VPMem layer (`what`), once the policy allowed it,
/// refuses a mount path that does not exist without touching anything or marking the UVM
/// inconsistent (SP §4.6). Asked only after the decision, so that a host cannot probe for paths
/// the policy would not let it touch.
fn check_exists(what: &str, path: &str) -> Result<(), GuestError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(GuestError::InvalidRequest(
            format!("unmounting {what} at {path} failed: directory does not exist"),
        )),
        Err(source) => Err(GuestError::Io {
            what: format!("failed to determine if path '{path}' exists"),
            source,
        }),
    }
}

/// SP §4.14: once `plan9_mount` allowed it, a confidential guest accepts only the share names
/// a normal host sends, decimal digits (`^[0-9]+$`), refused in the original's words before the
/// host is dialled.
fn check_share_name(name: &str) -> Result<(), GuestError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    Err(GuestError::InvalidRequest(format!(
        "invalid plan9 share name {}: must match regex \"^[0-9]+$\"",
        go_quoted(name)
    )))
}

/// `s` as Go's `%q` shows it: printable characters kept, quotes and backslashes escaped,
/// control characters as `\n`-style or `\x`/`\u` escapes.
fn go_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A device found (async) before its blocking mount.
#[derive(Debug)]
enum Device {
    Scsi(std::path::PathBuf),
    Pmem((std::path::PathBuf, u64)),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmount_failures_name_the_resource_as_the_original_does() {
        let disk = |mount_path: &str| {
            StorageResource::Disk(MappedVirtualDisk {
                mount_path: mount_path.into(),
                ..MappedVirtualDisk::default()
            })
        };
        assert_eq!(
            unmount_target(&disk("/run/mounts/scsi/m1")),
            Some(("scsi device", "/run/mounts/scsi/m1".to_string()))
        );
        assert_eq!(unmount_target(&disk("")), None);
        let pmem = StorageResource::Pmem(VpmemDevice {
            mount_path: "/run/layers/p0".into(),
            ..VpmemDevice::default()
        });
        assert_eq!(
            unmount_target(&pmem),
            Some(("pmem device", "/run/layers/p0".to_string()))
        );
        let layers = StorageResource::Layers(CombinedLayers {
            container_root_path: "/run/gcs/c/x/rootfs".into(),
            ..CombinedLayers::default()
        });
        assert_eq!(
            unmount_target(&layers),
            Some(("overlay", "/run/gcs/c/x/rootfs".to_string()))
        );
        let share = StorageResource::Share(MappedDirectory {
            mount_path: "/run/gcs/c/x/mounts/m0".into(),
            ..MappedDirectory::default()
        });
        assert_eq!(
            unmount_target(&share),
            Some(("plan9 device", "/run/gcs/c/x/mounts/m0".to_string()))
        );
        assert_eq!(
            unmount_target(&StorageResource::DiskEject(ScsiDevice::default())),
            None
        );
    }

    #[test]
    fn confidential_share_names_are_digits_only() {
        assert!(check_share_name("1").is_ok());
        assert!(check_share_name("0123456789").is_ok());
        for (name, shown) in [
            ("", r#""""#),
            ("share", r#""share""#),
            ("1,access=any", r#""1,access=any""#),
            ("1\n", r#""1\n""#),
            ("\u{0}\"\\", r#""\x00\"\\""#),
            ("é\u{85}", r#""é\u0085""#),
            ("-1", r#""-1""#),
            ("١", r#""١""#),
        ] {
            assert_eq!(
                check_share_name(name).unwrap_err().to_string(),
                format!("invalid plan9 share name {shown}: must match regex \"^[0-9]+$\""),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_missing_mount_path_is_refused_in_the_originals_words() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_exists("pmem device", &dir.path().to_string_lossy()).is_ok());
        let gone = dir.path().join("gone");
        let err = check_exists("scsi device", &gone.to_string_lossy()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unmounting scsi device at {} failed: directory does not exist",
                gone.display()
            )
        );
    }
}
