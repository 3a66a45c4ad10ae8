//! The inconsistent-UVM latch of a confidential guest (SP §4.6).
//!
//! Storage changes run as policy transactions: when one fails, the policy's metadata is put back
//! as it was. But an unmount the policy allowed that then really failed may have left the
//! mount half undone, and the policy's idea of what is mounted can no longer be trusted. From
//! then on a confidential guest refuses every request that could build on that state: storage
//! Adds and Removes (`MappedVirtualDisk`, `MappedDirectory`, `VPMemDevice`, `CombinedLayers`),
//! Create and DeleteContainerState, naming the first failure. Without a policy nothing is
//! latched (the original keeps the flag but reads it only with a policy installed).
//!
//! [`Guest::check_state`] is the one place the latch is read.

use std::sync::Mutex;

use super::{Guest, GuestError};

/// The first cause of an inconsistent UVM, once there is one. It is never cleared.
#[derive(Debug, Default)]
pub struct Latch {
    cause: Mutex<Option<String>>,
}

impl Latch {
    /// Records `cause` unless a cause was recorded already; returns whether this one was first.
    pub fn set(&self, cause: String) -> bool {
        let mut slot = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(cause);
        true
    }

    /// The recorded cause, if any.
    pub fn cause(&self) -> Option<String> {
        self.cause.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An error and its sources joined with `: ` (as the bridge shows errors), for a cause text.
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Guest {
    /// SP §4.6: in a confidential guest whose unmount failed after the policy allowed it,
    /// refuses with [`GuestError::Inconsistent`] carrying the first failure's cause; otherwise
    /// `Ok`. Asked first by storage Adds and Removes (not `SCSIDevice`), Create and
    /// DeleteContainerState.
    pub fn check_state(&self) -> Result<(), GuestError> {
        if !self.policy.is_confidential() {
            return Ok(());
        }
        match self.inconsistent.cause() {
            Some(cause) => Err(GuestError::Inconsistent(cause)),
            None => Ok(()),
        }
    }

    /// In a confidential guest, refuses a container id that is neither the UVM's
    /// (`00000000-0000-0000-0000-000000000000`) nor 64 hex digits, with the original's message
    /// (hcsshim `checkValidContainerID`): asked first by ModifySettings and
    /// DeleteContainerState. Always `Ok` without a policy.
    pub fn check_confidential_container_id(&self, id: &str) -> Result<(), GuestError> {
        if !self.policy.is_confidential()
            || id == crate::protocol::NULL_CONTAINER_ID
            || super::spec::is_confidential_id(id)
        {
            return Ok(());
        }
        Err(GuestError::InvalidRequest(format!(
            "invalid container id: {id} (must match ^[0-9a-fA-F]{{64}}$)"
        )))
    }

    /// Marks a confidential UVM inconsistent with `cause` (the first cause is kept) and logs it;
    /// nothing without a policy.
    pub(super) fn set_inconsistent(&self, cause: String) {
        if !self.policy.is_confidential() {
            return;
        }
        tracing::error!(
            cause = %cause,
            "the UVM is inconsistent: mounts, unmounts, container creation and deletion are refused from now on"
        );
        self.inconsistent.set(cause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_is_kept() {
        let latch = Latch::default();
        assert_eq!(latch.cause(), None);
        assert!(latch.set("first".into()));
        assert!(!latch.set("second".into()));
        assert_eq!(latch.cause().as_deref(), Some("first"));
    }

    /// Allows everything, as a policy that was installed (a confidential guest).
    #[derive(Debug)]
    struct Installed;

    impl crate::policy::Enforcer for Installed {
        fn decide(
            &self,
            _: crate::policy::EnforcementPoint,
            _: serde_json::Value,
        ) -> Result<crate::policy::Decision, crate::policy::PolicyError> {
            Ok(crate::policy::Decision::allowed_with(&[]))
        }

        fn encoded_policy(&self) -> &str {
            "cGFja2FnZSBwb2xpY3k="
        }
    }

    fn guest(dir: &std::path::Path) -> std::sync::Arc<Guest> {
        Guest::new(
            crate::transport::Dialer::new(Some(dir.join("vm.vsock"))),
            crate::reaper::Reaper::new(),
            dir.to_path_buf(),
        )
        .0
    }

    #[test]
    fn only_a_confidential_guest_latches_and_it_names_the_first_cause() {
        let dir = tempfile::tempdir().unwrap();
        let open = guest(dir.path());
        open.set_inconsistent("unmounting overlay at /run/x failed: busy".into());
        assert!(open.check_state().is_ok());

        let mut confidential = guest(dir.path());
        confidential.set_initial_enforcer(std::sync::Arc::new(Installed));
        assert!(confidential.check_state().is_ok());
        confidential.set_inconsistent("unmounting overlay at /run/x failed: busy".into());
        confidential.set_inconsistent("unmounting plan9 device at /run/y failed: gone".into());
        let err = confidential.check_state().unwrap_err();
        assert!(matches!(err, GuestError::Inconsistent(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "mount, unmount, container creation and deletion have been disabled in this UVM due to a previous error: unmounting overlay at /run/x failed: busy"
        );
    }

    #[test]
    fn a_confidential_guest_refuses_container_ids_the_original_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let open = guest(dir.path());
        assert!(open.check_confidential_container_id("../x").is_ok());
        let mut confidential = guest(dir.path());
        confidential.set_initial_enforcer(std::sync::Arc::new(Installed));
        for ok in [crate::protocol::NULL_CONTAINER_ID, &"aB".repeat(32)] {
            assert!(
                confidential.check_confidential_container_id(ok).is_ok(),
                "{ok}"
            );
        }
        for bad in ["../x", "", &"a".repeat(63), &"g".repeat(64)] {
            assert_eq!(
                confidential
                    .check_confidential_container_id(bad)
                    .unwrap_err()
                    .to_string(),
                format!("invalid container id: {bad} (must match ^[0-9a-fA-F]{{64}}$)")
            );
        }
    }

    #[test]
    fn a_cause_shows_the_whole_chain() {
        let err = crate::storage::StorageError::Io {
            what: "unmount",
            path: "/run/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert_eq!(
            chain(&err),
            "unmount \"/run/x\": Device or resource busy (os error 16)"
        );
    }
}
