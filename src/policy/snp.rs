//! Binding the policy to the VM (SP §2.2): on AMD SEV-SNP, the SHA-256 of the policy text must
//! equal the attestation report's `HOST_DATA`, which the host fixed at launch.

use std::path::Path;

use super::PolicyError;

/// Where the report starts in the `SNP_GET_REPORT` response container.
const REPORT_OFFSET: usize = 32;
/// `HOST_DATA` in the ATTESTATION_REPORT (AMD SEV-SNP ABI, table "ATTESTATION_REPORT").
const HOST_DATA_OFFSET: usize = 0xC0;
const HOST_DATA_LEN: usize = 32;

/// `HOST_DATA` from a `SNP_GET_REPORT` response container (status, size, reserved, report).
///
/// Errors: a non-zero firmware status, or a report too short to hold `HOST_DATA`.
pub fn host_data(response: &[u8]) -> Result<[u8; HOST_DATA_LEN], String> {
    let word = |at: usize| {
        response
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| "short attestation report response".to_string())
    };
    let status = word(0)?;
    if status != 0 {
        return Err(format!(
            "attestation report request failed with status {status:#x}"
        ));
    }
    let size = usize::try_from(word(4)?).unwrap_or(0);
    if size < HOST_DATA_OFFSET + HOST_DATA_LEN {
        return Err(format!(
            "attestation report of {size} bytes has no HOST_DATA"
        ));
    }
    let start = REPORT_OFFSET + HOST_DATA_OFFSET;
    response
        .get(start..start + HOST_DATA_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "short attestation report response".to_string())
}

/// Bytes quoted as Go's `%q` shows them (printable ASCII kept, the rest escaped).
fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// Compares `digest` with `host_data` byte for byte.
pub fn check(digest: &[u8; 32], host_data: &[u8; 32]) -> Result<(), PolicyError> {
    if digest == host_data {
        return Ok(());
    }
    Err(PolicyError::Invalid(format!(
        "security policy digest {} doesn't match HostData provided at launch {}",
        go_quote(digest),
        go_quote(host_data)
    )))
}

/// Checks `digest` against this VM's `HOST_DATA`: skipped when the VM has no SEV-SNP guest
/// device under `dev` (not confidential hardware). Only the Linux 6 driver (`sev-guest`) is
/// supported: a VM with only the 5.x `sev` device is refused rather than left unchecked.
pub fn check_host_data(dev: &Path, digest: &[u8; 32]) -> Result<(), PolicyError> {
    let guest = dev.join("sev-guest");
    if !guest.exists() {
        if dev.join("sev").exists() {
            return Err(PolicyError::Invalid(
                "cannot read HOST_DATA: only the legacy /dev/sev driver is present, which this agent does not support".into(),
            ));
        }
        return Ok(());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&guest)
        .map_err(|e| PolicyError::Invalid(format!("open {}: {e}", guest.display())))?;
    let response = crate::sys::snp_get_report(std::os::fd::AsFd::as_fd(&file))
        .map_err(|e| PolicyError::Invalid(format!("fetching SNP report: {e}")))?;
    let host_data = host_data(&response).map_err(PolicyError::Invalid)?;
    check(digest, &host_data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u32, host: [u8; 32]) -> Vec<u8> {
        let mut r = vec![0u8; crate::sys::SNP_REPORT_RESPONSE];
        r[0..4].copy_from_slice(&status.to_le_bytes());
        r[4..8].copy_from_slice(&1184u32.to_le_bytes());
        // Fill the report around HOST_DATA so that an offset error shows.
        for (i, b) in r[32..32 + 1184].iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap_or(0);
        }
        r[32 + 0xC0..32 + 0xE0].copy_from_slice(&host);
        r
    }

    #[test]
    fn host_data_is_read_at_its_offset_and_compared_byte_for_byte() {
        let digest = [7u8; 32];
        assert_eq!(host_data(&response(0, digest)).unwrap(), digest);
        assert!(check(&digest, &host_data(&response(0, digest)).unwrap()).is_ok());
        let err = check(&digest, &[b'"'; 32]).unwrap_err().to_string();
        assert!(
            err.starts_with("security policy digest \"\\x07\\x07"),
            "{err}"
        );
        assert!(err.ends_with("\\\"\\\"\""), "{err}");
        assert!(host_data(&response(0x16, digest))
            .unwrap_err()
            .contains("status 0x16"));
    }

    #[test]
    fn a_vm_without_snp_devices_is_not_checked_and_legacy_sev_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_host_data(dir.path(), &[0; 32]).is_ok());
        std::fs::write(dir.path().join("sev"), b"").unwrap();
        assert!(check_host_data(dir.path(), &[0; 32]).is_err());
    }
}
