//! The `Network` resource's settings (`LCOWNetworkAdapter`, spec §5.6), checked before anything
//! touches the kernel, and what they mean as addresses and routes.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::NetworkError;
use crate::protocol::json::null_default;

/// One NIC of a network namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Adapter {
    #[serde(rename = "NamespaceID", deserialize_with = "null_default")]
    pub namespace_id: String,
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    #[serde(rename = "MacAddress", deserialize_with = "null_default")]
    pub mac_address: String,
    #[serde(rename = "DNSSuffix", deserialize_with = "null_default")]
    pub dns_suffix: String,
    #[serde(rename = "DNSServerList", deserialize_with = "null_default")]
    pub dns_server_list: String,
    #[serde(rename = "EncapOverhead")]
    pub encap_overhead: u16,
    #[serde(rename = "VPCIAssigned")]
    pub vpci_assigned: bool,
    #[serde(rename = "IPConfigs", deserialize_with = "null_default")]
    pub ip_configs: Vec<IpConfig>,
    #[serde(rename = "Routes", deserialize_with = "null_default")]
    pub routes: Vec<Route>,
    #[serde(rename = "PolicyBasedRouting")]
    pub policy_based_routing: bool,
    #[serde(rename = "EnableLowMetric")]
    pub enable_low_metric: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpConfig {
    #[serde(rename = "IPAddress", deserialize_with = "null_default")]
    pub ip_address: String,
    pub prefix_length: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Route {
    #[serde(deserialize_with = "null_default")]
    pub next_hop: String,
    #[serde(deserialize_with = "null_default")]
    pub destination_prefix: String,
    pub metric: u16,
}

/// A route to install: `None` destination is the default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePlan {
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub metric: u32,
}

fn bad(what: String) -> NetworkError {
    NetworkError::Invalid(what)
}

/// `a.b.c.d/n` with the host bits cleared (the kernel refuses a route with them set).
fn parse_prefix(text: &str) -> Result<(IpAddr, u8), NetworkError> {
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| bad(format!("route destination {text:?} is not a prefix")))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| bad(format!("route destination {text:?} is not an IP prefix")))?;
    let len: u8 = len
        .parse()
        .map_err(|_| bad(format!("route destination {text:?} has a bad length")))?;
    Ok((mask(addr, len)?, len))
}

fn mask(addr: IpAddr, len: u8) -> Result<IpAddr, NetworkError> {
    match addr {
        IpAddr::V4(a) if len <= 32 => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Ok(IpAddr::V4(bits.into()))
        }
        IpAddr::V6(a) if len <= 128 => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            Ok(IpAddr::V6(bits.into()))
        }
        _ => Err(bad(format!("prefix length {len} is too long for {addr}"))),
    }
}

impl Adapter {
    /// The static addresses, checked.
    pub fn addresses(&self) -> Result<Vec<(IpAddr, u8)>, NetworkError> {
        self.ip_configs
            .iter()
            .map(|c| {
                let ip: IpAddr = c.ip_address.parse().map_err(|_| {
                    bad(format!("IPAddress {:?} is not an IP address", c.ip_address))
                })?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if c.prefix_length > max || ip.is_unspecified() {
                    return Err(bad(format!(
                        "address {}/{} is not a valid interface address",
                        c.ip_address, c.prefix_length
                    )));
                }
                Ok((ip, c.prefix_length))
            })
            .collect()
    }

    /// The routes to install, as the original reads them: a default route without a gateway is
    /// skipped; `0.0.0.0/0` and `::/0` are the default route; metric 500 replaces 0 for a
    /// low-metric NIC.
    pub fn route_plans(&self) -> Result<Vec<RoutePlan>, NetworkError> {
        let mut plans = Vec::new();
        for r in &self.routes {
            let gateway = match r.next_hop.trim() {
                "" => None,
                hop => Some(
                    hop.parse::<IpAddr>()
                        .map_err(|_| bad(format!("NextHop {hop:?} is not an IP address")))?,
                ),
            }
            .filter(|g| !g.is_unspecified());
            let destination = match r.destination_prefix.trim() {
                "" => None,
                d => Some(parse_prefix(d)?),
            };
            let is_default = destination.is_none_or(|(_, len)| len == 0);
            if is_default && gateway.is_none() {
                continue;
            }
            if let (Some((d, _)), Some(g)) = (destination, gateway) {
                if d.is_ipv4() != g.is_ipv4() {
                    return Err(bad(format!(
                        "route {} via {} mixes address families",
                        r.destination_prefix, r.next_hop
                    )));
                }
            }
            let metric = match (r.metric, self.enable_low_metric) {
                (0, true) => 500,
                (m, _) => u32::from(m),
            };
            plans.push(RoutePlan {
                destination: if is_default { None } else { destination },
                gateway,
                metric,
            });
        }
        Ok(plans)
    }

    /// The MAC address as bytes (`00-15-5D-52-C0-0B` or `00:15:5d:52:c0:0b`), if it is one.
    pub fn mac(&self) -> Option<[u8; 6]> {
        let parts: Vec<&str> = self.mac_address.split(['-', ':']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut mac = [0u8; 6];
        for (b, p) in mac.iter_mut().zip(parts) {
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        Some(mac)
    }

    /// Everything checked up front, so that a bad request changes nothing.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if self.id.trim().is_empty() {
            return Err(bad("the adapter has no ID".into()));
        }
        if self.id.contains(['/', '\0']) || self.id.contains("..") {
            return Err(bad(format!("adapter ID {:?} is not a GUID", self.id)));
        }
        if !self.mac_address.is_empty() && self.mac().is_none() {
            return Err(bad(format!(
                "MacAddress {:?} is not a MAC address",
                self.mac_address
            )));
        }
        self.addresses()?;
        self.route_plans()?;
        for s in self
            .dns_server_list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            s.parse::<IpAddr>()
                .map_err(|_| bad(format!("DNS server {s:?} is not an IP address")))?;
        }
        Ok(())
    }
}

/// `PolicyBasedRouting` (spec §5.6, the original's `Sync`): in a namespace's adapter order,
/// every adapter that asks for it gets the low-metric routing of `EnableLowMetric` except the
/// first one.
pub fn apply_policy_based_routing(adapters: &mut [Adapter]) {
    for (i, a) in adapters.iter_mut().enumerate() {
        if a.policy_based_routing {
            a.enable_low_metric = i > 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_based_routing_lowers_every_nic_after_the_first() {
        let nic = |pbr: bool, low: bool| Adapter {
            policy_based_routing: pbr,
            enable_low_metric: low,
            ..Adapter::default()
        };
        let mut list = vec![
            nic(true, true),
            nic(true, false),
            nic(false, false),
            nic(true, false),
        ];
        apply_policy_based_routing(&mut list);
        let low: Vec<bool> = list.iter().map(|a| a.enable_low_metric).collect();
        assert_eq!(low, [false, true, false, true]);
    }

    fn adapter(json: &str) -> Adapter {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_spec_example_decodes_and_plans() {
        let a = adapter(
            r#"{"NamespaceID":"6e4ea0cb-7bb4-4a0e-a7a4-5c3d3dcbe9ad","ID":"0d0e1f2a-0000-0000-0000-000000000001","MacAddress":"00-15-5D-52-C0-0B",
            "DNSSuffix":"default.svc.cluster.local,svc.cluster.local","DNSServerList":"10.96.0.10",
            "IPConfigs":[{"IPAddress":"10.244.1.7","PrefixLength":24},{"IPAddress":"fd00::7","PrefixLength":64}],
            "Routes":[{"NextHop":"10.244.1.1","DestinationPrefix":"0.0.0.0/0"},{"NextHop":"","DestinationPrefix":"::/0"},
                      {"NextHop":"10.244.1.254","DestinationPrefix":"192.168.7.9/16","Metric":7}]}"#,
        );
        a.validate().unwrap();
        assert_eq!(a.mac(), Some([0, 0x15, 0x5d, 0x52, 0xc0, 0x0b]));
        assert_eq!(a.addresses().unwrap().len(), 2);
        let plans = a.route_plans().unwrap();
        assert_eq!(
            plans.len(),
            2,
            "the default route without a gateway is skipped"
        );
        assert_eq!(plans[0].destination, None);
        assert_eq!(plans[0].gateway, Some("10.244.1.1".parse().unwrap()));
        assert_eq!(
            plans[1].destination,
            Some(("192.168.0.0".parse().unwrap(), 16)),
            "host bits cleared"
        );
        assert_eq!(plans[1].metric, 7);
        let low = Adapter {
            enable_low_metric: true,
            ..a
        };
        assert_eq!(low.route_plans().unwrap()[0].metric, 500);
    }

    #[test]
    fn bad_values_are_refused() {
        for json in [
            r#"{"ID":"x","IPConfigs":[{"IPAddress":"10.0.0.300","PrefixLength":24}]}"#,
            r#"{"ID":"x","IPConfigs":[{"IPAddress":"10.0.0.3","PrefixLength":33}]}"#,
            r#"{"ID":"x","IPConfigs":[{"IPAddress":"fd00::1","PrefixLength":129}]}"#,
            r#"{"ID":"x","Routes":[{"NextHop":"nope","DestinationPrefix":"0.0.0.0/0"}]}"#,
            r#"{"ID":"x","Routes":[{"NextHop":"10.0.0.1","DestinationPrefix":"10.0.0.0"}]}"#,
            r#"{"ID":"x","Routes":[{"NextHop":"fd00::1","DestinationPrefix":"10.0.0.0/8"}]}"#,
            r#"{"ID":"x","MacAddress":"00-11"}"#,
            r#"{"ID":"x","DNSServerList":"10.0.0.1,resolver"}"#,
            r#"{"ID":"../etc"}"#,
            r#"{"ID":""}"#,
        ] {
            assert!(adapter(json).validate().is_err(), "{json}");
        }
    }
}
