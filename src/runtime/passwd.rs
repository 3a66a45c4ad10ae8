//! `/etc/passwd` and `/etc/group` of a container image, parsed as runc and hcsshim read them
//! (`github.com/moby/sys/user`: `name:password:UID:GID:GECOS:directory:shell` and
//! `name:password:GID:member,member`; blank lines skipped, missing fields empty). No I/O: the
//! callers open the files inside the container's root.
//!
//! One departure: a numeric field that does not parse is an error for the entry that matched,
//! where Go's parser silently reads it as 0 (root).

/// The most of a passwd or group file read (a hostile image cannot make anyone allocate more).
pub const MAX_DATABASE_BYTES: u64 = 16 << 20;

/// Reads a passwd or group file opened (with `O_NONBLOCK`, so that a FIFO cannot block the
/// open) from an image: only a regular file counts, at most [`MAX_DATABASE_BYTES`] of it,
/// bytes that are not UTF-8 replaced (Go reads bytes).
///
/// Errors: `EINVAL` for anything but a regular file, and read errors.
pub fn read_database(file: std::fs::File) -> std::io::Result<String> {
    use std::io::Read;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DATABASE_BYTES).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    /// `None` when the field is not a number in `0..=u32::MAX`.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: Option<u32>,
    pub members: Vec<String>,
}

/// A Go `strconv.Atoi`-style id (optional sign, decimal), kept only when it fits `u32`.
fn id(field: &str) -> Option<u32> {
    let digits = field.strip_prefix('+').unwrap_or(field);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(':').collect())
}

/// Every entry of a passwd file, in file order.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    lines(text)
        .map(|f| PasswdEntry {
            name: f.first().copied().unwrap_or_default().to_string(),
            uid: f.get(2).and_then(|s| id(s)),
            gid: f.get(3).and_then(|s| id(s)),
            home: f.get(5).copied().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Every entry of a group file, in file order.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    lines(text)
        .map(|f| GroupEntry {
            name: f.first().copied().unwrap_or_default().to_string(),
            gid: f.get(2).and_then(|s| id(s)),
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// Parses a numeric user or group id as Go's `strconv.Atoi` does (sign allowed): `Ok(None)`
/// when the text is not a number (a name), `Err` with the number when it is one outside
/// `0..=u32::MAX`.
pub fn numeric_id(text: &str) -> Result<Option<u32>, i128> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return Ok(None);
    }
    let value: i128 = text.trim_start_matches('+').parse().map_err(|_| 0)?;
    u32::try_from(value).map(Some).map_err(|_| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_fields_and_blank_lines() {
        let p = parse_passwd("root:x:0:0:root:/root:/bin/sh\n\n  alice:x:1000:1000::/home/alice:/bin/sh\nshort:x:7\nbad:x:abc:-1::/:\n");
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].name, "alice");
        assert_eq!((p[1].uid, p[1].gid), (Some(1000), Some(1000)));
        assert_eq!(p[1].home, "/home/alice");
        assert_eq!(
            (p[2].uid, p[2].gid, p[2].home.as_str()),
            (Some(7), None, "")
        );
        assert_eq!((p[3].uid, p[3].gid), (None, None));
    }

    #[test]
    fn group_members() {
        let g = parse_group("staff:x:50:alice, bob\nempty:x:51:\nnone:x:52\n");
        assert_eq!(g[0].members, ["alice", "bob"]);
        assert!(g[1].members.is_empty() && g[2].members.is_empty());
        assert_eq!(g[2].gid, Some(52));
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        use std::os::unix::fs::OpenOptionsExt;
        let open = |p: &std::path::Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p)
                .unwrap()
        };
        assert!(read_database(open(&fifo)).is_err());
        assert!(read_database(open(dir.path())).is_err());
        let file = dir.path().join("passwd");
        std::fs::write(&file, b"a:x:1:1:\xff:/h:/bin/sh\n").unwrap();
        assert_eq!(
            parse_passwd(&read_database(open(&file)).unwrap())[0].home,
            "/h"
        );
    }

    #[test]
    fn numeric_ids_as_go_atoi() {
        assert_eq!(numeric_id("1000"), Ok(Some(1000)));
        assert_eq!(numeric_id("+7"), Ok(Some(7)));
        assert_eq!(numeric_id("alice"), Ok(None));
        assert_eq!(numeric_id(""), Ok(None));
        assert_eq!(numeric_id("-1"), Err(-1));
        assert_eq!(numeric_id("4294967296"), Err(4_294_967_296));
        assert_eq!(numeric_id("4294967295"), Ok(Some(u32::MAX)));
    }
}
