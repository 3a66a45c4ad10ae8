//! The `Network` resource (spec §5.6): the NICs the host adds for a pod, found by vmbus
//! instance, VPCI device or MAC, moved into the pod's network namespace and configured there
//! through rtnetlink; and the pod's `resolv.conf` from their DNS settings.

pub mod adapter;
pub mod dhcp;
pub mod link;

/// Errors of network operations.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
