//! Placeholder until the in-process ext4 formatter lands.

use std::path::Path;

use super::StorageError;

pub fn format(dev: &Path, fstype: &str) -> Result<(), StorageError> {
    Err(StorageError::Invalid(format!(
        "formatting {} as {fstype} is not supported yet",
        dev.display()
    )))
}
