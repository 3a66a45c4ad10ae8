//! `CombinedLayers`: the container rootfs as an overlay of the layer mounts (spec §5.4).

use std::path::Path;

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use super::{checked_path, Kind, Mounted, Storage, StorageError};
use crate::protocol::json::null_default;

/// Settings of `CombinedLayers` (note the key `ContainerID`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CombinedLayers {
    #[serde(rename = "ContainerID", deserialize_with = "null_default")]
    pub container_id: String,
    #[serde(deserialize_with = "null_default")]
    pub container_root_path: String,
    #[serde(deserialize_with = "null_default")]
    pub layers: Vec<Layer>,
    #[serde(deserialize_with = "null_default")]
    pub scratch_path: String,
}

/// An hcsschema `Layer`; only `Path` is used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Layer {
    #[serde(deserialize_with = "null_default")]
    pub path: String,
}

use super::make_dirs as mkdir;

/// `CombinedLayers` Add: mounts the overlay, recording the layers and scratch it reads
/// through so that they cannot be unmounted under it.
pub fn add(storage: &Storage, settings: &CombinedLayers) -> Result<(), StorageError> {
    let root = checked_path(Path::new(&settings.container_root_path), &[])?;
    let identity = format!(
        "container {:?} layers {:?} scratch {:?}",
        settings.container_id,
        settings.layers.iter().map(|l| &l.path).collect::<Vec<_>>(),
        settings.scratch_path
    );
    storage.add(Kind::Overlay, root, identity, || {
        mount_overlay(settings, root)
    })
}

/// Refuses paths that would change the meaning of overlay's option string: `,` separates
/// options, `:` lower layers, and `\` escapes either.
pub(crate) fn option_safe(path: &Path) -> Result<&Path, StorageError> {
    if path.to_string_lossy().contains([',', ':', '\\']) {
        return Err(StorageError::Invalid(format!(
            "overlay path {path:?} contains ',', ':' or '\\'"
        )));
    }
    Ok(path)
}

fn mount_overlay(settings: &CombinedLayers, root: &Path) -> Result<Mounted, StorageError> {
    if settings.layers.is_empty() {
        return Err(StorageError::Invalid(
            "CombinedLayers needs at least one layer".into(),
        ));
    }
    let mut lower = Vec::new();
    let mut uses = Vec::new();
    for layer in &settings.layers {
        let path = option_safe(checked_path(Path::new(&layer.path), &[])?)?;
        lower.push(path.to_string_lossy().into_owned());
        uses.push(path.to_path_buf());
    }
    let mut data = format!("lowerdir={}", lower.join(":"));
    let mut flags = MsFlags::empty();
    let bundle = root.parent().unwrap_or(root).to_path_buf();
    let mut bundle_bind = None;
    if settings.scratch_path.is_empty() {
        flags |= MsFlags::MS_RDONLY;
    } else {
        let scratch = option_safe(checked_path(Path::new(&settings.scratch_path), &[])?)?;
        uses.push(scratch.to_path_buf());
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        mkdir(&upper, 0o755)?;
        mkdir(&work, 0o755)?;
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
        // The V2 shim puts the scratch outside the bundle: keep bundle files on the scratch.
        if !scratch.starts_with(&bundle) {
            // /run/gcs/c/<id> is 5 components; a bind over anything shallower would hide
            // other containers' bundles.
            if bundle.components().count() < 5 {
                return Err(StorageError::Invalid(format!(
                    "will not bind the scratch over {bundle:?}: too close to /run"
                )));
            }
            let target = scratch.join("bundle");
            mkdir(&target, 0o755)?;
            mkdir(&bundle, 0o755)?;
            mount(
                Some(&target),
                &bundle,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| StorageError::Io {
                what: "bind bundle",
                path: bundle.clone(),
                source: e.into(),
            })?;
            bundle_bind = Some(bundle.clone());
        }
    }
    let created_root = !root.exists();
    if let Err(e) = mkdir(root, 0o755) {
        if let Some(b) = &bundle_bind {
            let _ = nix::mount::umount(b);
        }
        return Err(e);
    }
    if let Err(e) = mount(
        Some("overlay"),
        root,
        Some("overlay"),
        flags,
        Some(data.as_str()),
    ) {
        if created_root {
            let _ = std::fs::remove_dir(root);
        }
        if let Some(b) = bundle_bind {
            let _ = nix::mount::umount(&b);
        }
        return Err(StorageError::Io {
            what: "mount overlay on",
            path: root.into(),
            source: e.into(),
        });
    }
    Ok(Mounted {
        uses,
        binds: bundle_bind.into_iter().collect(),
        ..Mounted::default()
    })
}

/// `CombinedLayers` Remove (the host sends only `ContainerRootPath`): undo one Add; the last
/// unmounts and removes the rootfs. Whether a container still runs on it is the caller's check.
pub fn remove(storage: &Storage, settings: &CombinedLayers) -> Result<(), StorageError> {
    storage.remove(
        Kind::Overlay,
        checked_path(Path::new(&settings.container_root_path), &[])?,
    )
}
