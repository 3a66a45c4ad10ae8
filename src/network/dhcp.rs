//! A one-shot DHCPv4 client for NICs the host gives no static address (spec §5.6: empty
//! `IPConfigs` means DHCP). The original runs `udhcpc -q`, which also takes one lease and
//! quits without renewing it; this does the same in process (DISCOVER, OFFER, REQUEST, ACK),
//! so the image needs no udhcpc and no script.
//!
//! It runs on the network thread that has entered the pod's namespace, with a UDP socket bound
//! to the interface; replies are asked for by broadcast, as the interface has no address yet.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

use super::NetworkError;

/// What a server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
}

const COOKIE: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// A BOOTREQUEST of `kind` from `mac`, asking for broadcast replies.
pub fn request(kind: u8, xid: u32, mac: [u8; 6], offer: Option<&Lease>) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&COOKIE);
    p.extend_from_slice(&[53, 1, kind]);
    if let Some(o) = offer {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&o.address.octets());
        p.extend_from_slice(&[54, 4]);
        p.extend_from_slice(&o.server.octets());
    }
    // Parameters wanted: subnet mask, router, DNS, lease time, server id.
    p.extend_from_slice(&[55, 5, 1, 3, 6, 51, 54, 255]);
    p.resize(p.len().max(300), 0);
    p
}

/// A BOOTREPLY for `xid` and `mac`: its message type and lease.
pub fn parse_reply(p: &[u8], xid: u32, mac: [u8; 6]) -> Option<(u8, Lease)> {
    if p.len() < 240 || p[0] != 2 || p.get(4..8)? != xid.to_be_bytes() || p.get(28..34)? != mac {
        return None;
    }
    if p.get(236..240)? != COOKIE {
        return None;
    }
    let ip = |b: &[u8]| -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(
            *b.first()?,
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
        ))
    };
    let mut lease = Lease {
        address: ip(p.get(16..20)?)?,
        prefix: 24,
        router: None,
        dns: Vec::new(),
        server: ip(p.get(20..24)?)?,
    };
    let mut kind = None;
    let mut i = 240;
    while let Some(&code) = p.get(i) {
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*p.get(i + 1)?);
        let value = p.get(i + 2..i + 2 + len)?;
        match (code, len) {
            (53, 1) => kind = Some(value[0]),
            (1, 4) => {
                lease.prefix =
                    u8::try_from(u32::from_be_bytes(value.try_into().ok()?).leading_ones()).ok()?
            }
            (3, l) if l >= 4 => lease.router = ip(value),
            (6, l) if l >= 4 => lease.dns = value.chunks_exact(4).filter_map(ip).collect(),
            (54, 4) => lease.server = ip(value)?,
            _ => {}
        }
        i += 2 + len;
    }
    Some((kind?, lease))
}

fn io(what: &str) -> impl Fn(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        what: format!("DHCP: {what}"),
        source,
    }
}

/// Obtains a lease on `ifname` (which must be up) within `timeout`.
pub fn acquire(ifname: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease, NetworkError> {
    let socket = UdpSocket::bind("0.0.0.0:68").map_err(io("bind port 68"))?;
    socket.set_broadcast(true).map_err(io("broadcast"))?;
    setsockopt(
        &socket,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )
    .map_err(|e| NetworkError::Io {
        what: format!("DHCP: bind to {ifname}"),
        source: e.into(),
    })?;
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id();
    let start = Instant::now();
    let mut offer: Option<Lease> = None;
    let mut buf = [0u8; 1500];
    while start.elapsed() < timeout {
        let packet = match &offer {
            None => request(DISCOVER, xid, mac, None),
            Some(o) => request(REQUEST, xid, mac, Some(o)),
        };
        socket.send_to(&packet, server).map_err(io("send"))?;
        let round = Instant::now();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io("timeout"))?;
        while round.elapsed() < Duration::from_secs(2) {
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                break;
            };
            match parse_reply(&buf[..n], xid, mac) {
                Some((OFFER, l)) if offer.is_none() => {
                    offer = Some(l);
                    break;
                }
                Some((ACK, l)) if offer.is_some() => return Ok(l),
                Some((NAK, _)) => {
                    offer = None;
                    break;
                }
                _ => {}
            }
        }
    }
    Err(NetworkError::NotFound(format!(
        "no DHCP lease on {ifname} within {timeout:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let d = request(DISCOVER, 7, mac, None);
        assert_eq!(
            (d[0], d[10], &d[28..34], &d[236..240]),
            (1, 0x80, &mac[..], &COOKIE[..])
        );
        assert!(d.len() >= 300);
        // A server's OFFER, built by hand.
        let mut r = vec![0u8; 236];
        r[0] = 2;
        r[4..8].copy_from_slice(&7u32.to_be_bytes());
        r[16..20].copy_from_slice(&[10, 0, 2, 15]);
        r[28..34].copy_from_slice(&mac);
        r.extend_from_slice(&COOKIE);
        r.extend_from_slice(&[53, 1, OFFER, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2]);
        r.extend_from_slice(&[6, 8, 10, 0, 2, 3, 8, 8, 8, 8, 54, 4, 10, 0, 2, 2, 0, 255]);
        let (kind, lease) = parse_reply(&r, 7, mac).unwrap();
        assert_eq!(kind, OFFER);
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(lease.dns.len(), 2);
        let q = request(REQUEST, 7, mac, Some(&lease));
        assert!(q.windows(6).any(|w| w == [50, 4, 10, 0, 2, 15]));
        assert!(parse_reply(&r, 8, mac).is_none(), "another transaction");
        assert!(parse_reply(&r[..100], 7, mac).is_none());
        // An option whose length runs past the end is refused, not read out of bounds.
        r.truncate(251);
        assert!(parse_reply(&r, 7, mac).is_none());
    }
}
