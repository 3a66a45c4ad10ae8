//! Finding a NIC and configuring it, moved into a network namespace or in place, through
//! rtnetlink (no `ip` binary in the guest).
//!
//! Configuration runs on a thread of its own: it enters the target namespace with `setns`,
//! which changes that thread for good, so it must never be a pooled (tokio) thread. The thread
//! opens its netlink socket after entering, so every request lands in the target namespace.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::adapter::{Adapter, RoutePlan};
use super::NetworkError;
use crate::uevent::{wait_until, WaitError};

/// How long a NIC may take to show up after the host hot-adds it (the original's bound).
pub const NIC_DEADLINE: Duration = Duration::from_secs(5);

/// The original gives udhcpc 30 s.
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

/// Routing table of a low-metric NIC's source rule (the original's).
const LOW_METRIC_TABLE: u32 = 101;

/// Where the NIC is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// In the agent's own namespace (host-network pods).
    InPlace,
    /// In the network namespace of this process (a sandbox's init).
    Namespace(u32),
}

fn only_entry(dir: &Path) -> Option<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match names.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The NIC's interface name in the agent's namespace, if it is there: by its vmbus instance
/// (Hyper-V synthetic NIC), its VPCI device, or else (QEMU's virtio-net, test veths) by MAC.
pub fn locate(sys: &Path, adapter: &Adapter) -> Option<String> {
    let vmbus = sys
        .join("bus/vmbus/devices")
        .join(adapter.id.to_lowercase());
    if adapter.vpci_assigned {
        // <vmbus>/pci<...>/<domain:bus:dev.fn>/net/<name>
        for pci in std::fs::read_dir(&vmbus).ok()?.flatten() {
            if !pci.file_name().to_string_lossy().starts_with("pci") {
                continue;
            }
            for dev in std::fs::read_dir(pci.path()).ok()?.flatten() {
                if dev.file_name().to_string_lossy().contains(':') {
                    if let Some(name) = only_entry(&dev.path().join("net")) {
                        return Some(name);
                    }
                }
            }
        }
        return None;
    }
    if let Some(name) = only_entry(&vmbus.join("net")) {
        return Some(name);
    }
    let mac = adapter.mac()?;
    let wanted = mac.map(|b| format!("{b:02x}")).join(":");
    std::fs::read_dir(sys.join("class/net"))
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("address"))
                .is_ok_and(|a| a.trim().eq_ignore_ascii_case(&wanted))
        })
        .and_then(|e| e.file_name().into_string().ok())
}

/// Waits (woken by uevents, holding no thread) for the NIC to appear in the agent's namespace;
/// its interface name. Errors: `NotFound` at the deadline.
pub async fn wait_for(adapter: &Adapter, deadline: Duration) -> Result<String, NetworkError> {
    let sys = PathBuf::from("/sys");
    wait_until::<_, NetworkError>(&format!("network adapter {}", adapter.id), deadline, || {
        Ok(locate(&sys, adapter))
    })
    .await
    .map_err(|e| match e {
        WaitError::Probe(e) => e,
        timeout => NetworkError::NotFound(timeout.to_string()),
    })
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A link's index, MTU and MAC address.
struct LinkInfo {
    index: u32,
    mtu: u32,
    mac: Option<[u8; 6]>,
}

async fn link_info(handle: &Handle, name: &str) -> Result<Option<LinkInfo>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => {
            let mut info = LinkInfo {
                index: link.header.index,
                mtu: 1500,
                mac: None,
            };
            for a in &link.attributes {
                match a {
                    LinkAttribute::Mtu(m) => info.mtu = *m,
                    LinkAttribute::Address(bytes) => info.mac = bytes.as_slice().try_into().ok(),
                    _ => {}
                }
            }
            Ok(Some(info))
        }
        Ok(None) => Ok(None),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("look up {name}"))(e)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, NetworkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NetworkError::Io {
            what: "start a netlink runtime".into(),
            source,
        })
}

fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|source| NetworkError::Io {
            what: "open a netlink socket".into(),
            source,
        })?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Moves (for a namespace target) and configures the NIC `name` as `adapter` says. Runs on a
/// fresh thread; blocks until done.
pub fn configure(adapter: &Adapter, name: &str, target: Target) -> Result<(), NetworkError> {
    let adapter = adapter.clone();
    let name = name.to_string();
    std::thread::Builder::new()
        .name("gcs-netns".into())
        .spawn(move || configure_on_this_thread(&adapter, &name, target))
        .map_err(|source| NetworkError::Io {
            what: "start a network thread".into(),
            source,
        })?
        .join()
        .unwrap_or_else(|_| Err(NetworkError::Invalid("the network thread panicked".into())))
}

fn configure_on_this_thread(
    adapter: &Adapter,
    name: &str,
    target: Target,
) -> Result<(), NetworkError> {
    if let Target::Namespace(pid) = target {
        let rt = runtime()?;
        rt.block_on(async {
            let handle = connect()?;
            // Already moved (a second Sync): nothing to move.
            let Some(LinkInfo { index, .. }) = link_info(&handle, name).await? else {
                return Ok(());
            };
            set_link(
                &handle,
                LinkUnspec::new_with_index(index).down().build(),
                format!("set {name} down"),
            )
            .await?;
            set_link(
                &handle,
                LinkUnspec::new_with_index(index).setns_by_pid(pid).build(),
                format!("move {name} into the namespace of pid {pid}"),
            )
            .await
        })?;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|source| {
            NetworkError::Io {
                what: format!("open the network namespace of pid {pid}"),
                source,
            }
        })?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetworkError::Io {
                what: format!("enter the network namespace of pid {pid}"),
                source: e.into(),
            }
        })?;
    }
    let rt = runtime()?;
    rt.block_on(async {
        let handle = connect()?;
        set_up(&handle, "lo").await?;
        let link = link_info(&handle, name)
            .await?
            .ok_or_else(|| NetworkError::NotFound(format!("{name} is not in the namespace")))?;
        let index = link.index;
        let result = configure_link(&handle, adapter, name, &link).await;
        if result.is_err() {
            // Nothing half-configured: down flushes its IPv4 routes; drop our addresses.
            let _ = handle
                .link()
                .set(LinkUnspec::new_with_index(index).down().build())
                .execute()
                .await;
            for (ip, len) in adapter.addresses().unwrap_or_default() {
                let mut found = handle.address().get().set_link_index_filter(index).execute();
                while let Ok(Some(msg)) = found.try_next().await {
                    if msg.header.prefix_len == len
                        && msg.attributes.iter().any(|a| {
                            matches!(a, rtnetlink::packet_route::address::AddressAttribute::Address(x) if *x == ip)
                        })
                    {
                        let _ = handle.address().del(msg).execute().await;
                    }
                }
            }
        }
        result
    })
}

async fn set_link(
    handle: &Handle,
    message: rtnetlink::packet_route::link::LinkMessage,
    what: String,
) -> Result<(), NetworkError> {
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(netlink(what))
}

async fn set_up(handle: &Handle, name: &str) -> Result<(), NetworkError> {
    if let Some(LinkInfo { index, .. }) = link_info(handle, name).await? {
        set_link(
            handle,
            LinkUnspec::new_with_index(index).up().build(),
            format!("set {name} up"),
        )
        .await?;
    }
    Ok(())
}

async fn configure_link(
    handle: &Handle,
    adapter: &Adapter,
    name: &str,
    link: &LinkInfo,
) -> Result<(), NetworkError> {
    let (index, mtu) = (link.index, link.mtu);
    if adapter.encap_overhead != 0 {
        let new_mtu = mtu.saturating_sub(u32::from(adapter.encap_overhead));
        set_link(
            handle,
            LinkUnspec::new_with_index(index).mtu(new_mtu).build(),
            format!("set the MTU of {name} to {new_mtu}"),
        )
        .await?;
    }
    set_link(
        handle,
        LinkUnspec::new_with_index(index).up().build(),
        format!("set {name} up"),
    )
    .await?;
    let addresses = adapter.addresses()?;
    if addresses.is_empty() {
        return configure_by_dhcp(handle, adapter, name, link).await;
    }
    for (ip, len) in &addresses {
        match handle.address().add(index, *ip, *len).execute().await {
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
            other => other.map_err(netlink(format!("add {ip}/{len} to {name}")))?,
        }
        if adapter.enable_low_metric {
            let rule = handle.rule().add().table_id(LOW_METRIC_TABLE).priority(5);
            let added = match ip {
                IpAddr::V4(v4) => rule.v4().source_prefix(*v4, 32).execute().await,
                IpAddr::V6(v6) => rule.v6().source_prefix(*v6, 128).execute().await,
            };
            match added {
                Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                other => other.map_err(netlink(format!("add the source rule of {ip}")))?,
            }
        }
    }
    for plan in adapter.route_plans()? {
        add_route(handle, adapter, name, index, plan).await?;
    }
    Ok(())
}

/// No static address: one DHCP lease (as `udhcpc -q` in the original), its address and its
/// router as the default route.
async fn configure_by_dhcp(
    handle: &Handle,
    adapter: &Adapter,
    name: &str,
    link: &LinkInfo,
) -> Result<(), NetworkError> {
    let mac = link
        .mac
        .ok_or_else(|| NetworkError::Invalid(format!("{name} has no MAC address for DHCP")))?;
    let lease = super::dhcp::acquire(name, mac, DHCP_TIMEOUT)?;
    tracing::info!(adapter = %adapter.id, address = %lease.address, prefix = lease.prefix,
        router = ?lease.router, "DHCP lease");
    let ip = IpAddr::V4(lease.address);
    match handle
        .address()
        .add(link.index, ip, lease.prefix)
        .execute()
        .await
    {
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
        other => other.map_err(netlink(format!("add {ip}/{} to {name}", lease.prefix)))?,
    }
    if let Some(router) = lease.router {
        let plan = RoutePlan {
            destination: None,
            gateway: Some(IpAddr::V4(router)),
            metric: 0,
        };
        add_route(handle, adapter, name, link.index, plan).await?;
    }
    Ok(())
}

fn bad_route(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Invalid(format!("route: {e}"))
}

fn route_message(
    plan: &RoutePlan,
    index: u32,
    low_metric: bool,
) -> Result<rtnetlink::packet_route::route::RouteMessage, NetworkError> {
    let family_any = match (plan.destination, plan.gateway) {
        (Some((d, _)), _) => d,
        (None, Some(g)) => g,
        (None, None) => {
            return Err(NetworkError::Invalid(
                "a route needs a destination or a gateway".into(),
            ))
        }
    };
    let (dst, len) = plan.destination.unwrap_or(match family_any {
        IpAddr::V4(_) => (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
    });
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, len)
        .map_err(bad_route)?
        .output_interface(index)
        .priority(plan.metric);
    if let Some(gw) = plan.gateway {
        builder = builder.gateway(gw).map_err(bad_route)?;
    }
    if low_metric {
        builder = builder.table_id(LOW_METRIC_TABLE);
    }
    Ok(builder.build())
}

async fn add_route(
    handle: &Handle,
    adapter: &Adapter,
    name: &str,
    index: u32,
    plan: RoutePlan,
) -> Result<(), NetworkError> {
    let what = || match (plan.destination, plan.gateway) {
        (Some((d, l)), Some(g)) => format!("add the route {d}/{l} via {g} on {name}"),
        (Some((d, l)), None) => format!("add the route {d}/{l} on {name}"),
        (None, Some(g)) => format!("add the default route via {g} on {name}"),
        (None, None) => format!("add a route on {name}"),
    };
    let message = route_message(&plan, index, adapter.enable_low_metric)?;
    match handle.route().add(message.clone()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) if errno_of(&e) == Some(libc::ENETUNREACH) && plan.gateway.is_some() => {
            // A gateway outside the NIC's subnets: make it reachable on the link first.
            let gw = plan
                .gateway
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let host_len = if gw.is_ipv4() { 32 } else { 128 };
            let mut onlink = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(gw, host_len)
                .map_err(bad_route)?
                .output_interface(index)
                .scope(RouteScope::Link);
            if adapter.enable_low_metric {
                onlink = onlink.table_id(LOW_METRIC_TABLE);
            }
            match handle.route().add(onlink.build()).execute().await {
                Err(e) if errno_of(&e) != Some(libc::EEXIST) => {
                    return Err(netlink(format!("add the on-link route to {gw} on {name}"))(
                        e,
                    ))
                }
                _ => {}
            }
            handle
                .route()
                .add(message)
                .execute()
                .await
                .map_err(netlink(what()))
        }
        Err(e) => Err(netlink(what())(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nics_are_found_by_vmbus_vpci_and_mac() {
        let sys = tempfile::tempdir().unwrap();
        let s = sys.path();
        let mk = |p: &str| std::fs::create_dir_all(s.join(p)).unwrap();
        mk("bus/vmbus/devices/0d0e1f2a-aaaa/net/eth0");
        mk("bus/vmbus/devices/1111/pci1234:00/1234:00:02.0/net/eth3");
        mk("class/net/veth7");
        std::fs::write(s.join("class/net/veth7/address"), "aa:bb:cc:dd:ee:0f\n").unwrap();
        let a = |id: &str, mac: &str, vpci: bool| Adapter {
            id: id.into(),
            mac_address: mac.into(),
            vpci_assigned: vpci,
            ..Adapter::default()
        };
        assert_eq!(
            locate(s, &a("0D0E1F2A-AAAA", "", false)).as_deref(),
            Some("eth0")
        );
        assert_eq!(locate(s, &a("1111", "", true)).as_deref(), Some("eth3"));
        assert_eq!(
            locate(s, &a("2222", "AA-BB-CC-DD-EE-0F", false)).as_deref(),
            Some("veth7")
        );
        assert_eq!(locate(s, &a("2222", "AA-BB-CC-DD-EE-00", false)), None);
        mk("bus/vmbus/devices/0d0e1f2a-aaaa/net/eth1");
        assert_eq!(
            locate(s, &a("0d0e1f2a-aaaa", "", false)),
            None,
            "two NICs is no answer"
        );
    }
}
