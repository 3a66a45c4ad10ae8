//! Kernel module loading without kmod: every `*.ko` (or compressed `*.ko.xz`/`*.ko.zst`) under
//! `/lib/modules/<release>`, dependencies first, as read from each module's `.modinfo`
//! (`depends=`, `softdep=pre:`), loaded with `finit_module`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use super::log;

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the file itself.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// One module file and what it must come after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
    pub compressed: bool,
    pub deps: Vec<String>,
}

/// Module names use `_` and `-` interchangeably; the kernel's form is `_`.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The `.modinfo` section of an ELF64 little-endian object, as `key=value` strings.
pub fn modinfo(elf: &[u8]) -> Option<Vec<String>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(0..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let off = usize::try_from(u64_at(base + 0x18)?).ok()?;
        let size = usize::try_from(u64_at(base + 0x20)?).ok()?;
        Some((u32_at(base)?, off, size))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = elf.get(stroff..stroff.checked_add(strsize)?)?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = strtab.get(usize::try_from(name_off).ok()?..)?;
        let name = &name[..name.iter().position(|b| *b == 0)?];
        if name == b".modinfo" {
            let data = elf.get(off..off.checked_add(size)?)?;
            return Some(
                data.split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            );
        }
    }
    Some(Vec::new())
}

/// Dependencies named by `depends=` and `softdep=pre:` entries.
pub fn dependencies(info: &[String]) -> Vec<String> {
    let mut deps = Vec::new();
    for entry in info {
        if let Some(list) = entry.strip_prefix("depends=") {
            deps.extend(list.split(',').filter(|s| !s.is_empty()).map(canonical));
        } else if let Some(soft) = entry.strip_prefix("softdep=") {
            let mut pre = false;
            for word in soft.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    m if pre => deps.push(canonical(m)),
                    _ => {}
                }
            }
        }
    }
    deps
}

fn scan(dir: &Path, out: &mut Vec<Module>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            scan(&path, out);
            continue;
        }
        let file = entry.file_name().to_string_lossy().into_owned();
        let (stem, compressed) = if let Some(s) = file.strip_suffix(".ko") {
            (s.to_string(), false)
        } else if let Some(s) = file
            .strip_suffix(".ko.xz")
            .or_else(|| file.strip_suffix(".ko.zst"))
        {
            (s.to_string(), true)
        } else {
            continue;
        };
        let deps = if compressed {
            Vec::new()
        } else {
            std::fs::read(&path)
                .ok()
                .and_then(|b| modinfo(&b))
                .map(|i| dependencies(&i))
                .unwrap_or_default()
        };
        out.push(Module {
            name: canonical(&stem),
            path,
            compressed,
            deps,
        });
    }
}

/// Orders modules so that each comes after the modules it depends on (unknown dependencies are
/// assumed built in). Cycles are broken rather than looped on.
pub fn load_order(modules: Vec<Module>) -> Vec<Module> {
    let mut by_name: BTreeMap<String, Module> =
        modules.into_iter().map(|m| (m.name.clone(), m)).collect();
    let names: Vec<String> = by_name.keys().cloned().collect();
    let mut visiting = BTreeSet::new();
    let mut order = Vec::new();
    fn visit(
        name: &str,
        by_name: &mut BTreeMap<String, Module>,
        visiting: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) {
        if !visiting.insert(name.to_string()) {
            return;
        }
        let Some(deps) = by_name.get(name).map(|m| m.deps.clone()) else {
            return;
        };
        for dep in deps {
            visit(&dep, by_name, visiting, order);
        }
        if let Some(m) = by_name.remove(name) {
            order.push(m);
        }
    }
    for name in names {
        visit(&name, &mut by_name, &mut visiting, &mut order);
    }
    order
}

fn load(module: &Module) -> Result<(), Errno> {
    let file = std::fs::File::open(&module.path)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let flags = if module.compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(&file, &CString::default(), flags) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Loads every module under `dir`, dependencies first. Modules whose dependencies could not be
/// read (compressed ones) get more passes while any pass makes progress. Returns how many
/// loaded (or were already loaded) and the ones that failed with their errors.
pub fn load_dir(dir: &Path) -> (usize, Vec<(PathBuf, Errno)>) {
    let mut modules = Vec::new();
    scan(dir, &mut modules);
    load_list(load_order(modules))
}

/// The modules loaded before the agent starts ([`split`]), with what they depend on: the vsock
/// transports and the bus their device sits on (virtio over PCI in QEMU, Hyper-V sockets on
/// VMBus), and the drivers the agent probes once as it starts: `/dev/sev-guest` (confidential
/// hardware) and Hyper-V's PTP clock (time sync).
pub const BRIDGE: &[&str] = &[
    "vmw_vsock_virtio_transport",
    "virtio_pci",
    "hv_sock",
    "hv_vmbus",
    "sev_guest",
    "hv_utils",
];

/// `dir`'s modules in load order, split into those `first` names with everything they depend
/// on, and the rest. When a module's dependencies cannot be read (a compressed module), the
/// split cannot be trusted: everything comes first.
pub fn split(dir: &Path, first: &[&str]) -> (Vec<Module>, Vec<Module>) {
    let mut modules = Vec::new();
    scan(dir, &mut modules);
    if modules.iter().any(|m| m.compressed) {
        return (load_order(modules), Vec::new());
    }
    let deps: BTreeMap<String, Vec<String>> = modules
        .iter()
        .map(|m| (m.name.clone(), m.deps.clone()))
        .collect();
    let mut needed = BTreeSet::new();
    let mut todo: Vec<String> = first.iter().map(|n| canonical(n)).collect();
    while let Some(name) = todo.pop() {
        if needed.insert(name.clone()) {
            todo.extend(deps.get(&name).into_iter().flatten().cloned());
        }
    }
    load_order(modules)
        .into_iter()
        .partition(|m| needed.contains(&m.name))
}

/// Loads `modules`, in order ([`load_dir`]'s passes).
pub fn load_list(modules: Vec<Module>) -> (usize, Vec<(PathBuf, Errno)>) {
    let mut pending = modules;
    let mut loaded = 0;
    loop {
        let before = pending.len();
        let mut failed = Vec::new();
        for m in pending {
            match load(&m) {
                Ok(()) => loaded += 1,
                Err(e) => failed.push((m, e)),
            }
        }
        if failed.is_empty() || failed.len() == before {
            return (
                loaded,
                failed.into_iter().map(|(m, e)| (m.path, e)).collect(),
            );
        }
        pending = failed.into_iter().map(|(m, _)| m).collect();
    }
}

/// Loads `modules` ([`load_list`]), logging failures (not fatal: `hv_sock` outside Hyper-V,
/// for example) and how many loaded in how long, as `what`.
pub fn load_logged(modules: Vec<Module>, what: &str) {
    if modules.is_empty() {
        return;
    }
    let start = std::time::Instant::now();
    let (loaded, failed) = load_list(modules);
    for (path, e) in &failed {
        log(4, &format!("load module {}: {e}", path.display()));
    }
    log(
        6,
        &format!(
            "loaded {loaded} kernel modules ({what}) in {} ms",
            start.elapsed().as_millis()
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a section-name table and a `.modinfo` section.
    fn elf_with_modinfo(info: &[u8]) -> Vec<u8> {
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let shstr_off = elf.len();
        elf.extend_from_slice(shstr);
        let info_off = elf.len();
        elf.extend_from_slice(info);
        while elf.len() % 8 != 0 {
            elf.push(0);
        }
        let shoff = elf.len();
        // Section 0: null. Section 1: .shstrtab. Section 2: .modinfo.
        for (name, off, size) in [
            (0u32, 0usize, 0usize),
            (1, shstr_off, shstr.len()),
            (11, info_off, info.len()),
        ] {
            let mut sh = [0u8; 64];
            sh[0..4].copy_from_slice(&name.to_le_bytes());
            sh[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            sh[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&sh);
        }
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn reads_modinfo_and_dependencies() {
        let elf = elf_with_modinfo(b"license=GPL\0depends=virtio,virtio-ring\0softdep=pre: crc32c post: foo\0name=virtio_pci\0");
        let info = modinfo(&elf).unwrap();
        assert!(info.contains(&"name=virtio_pci".to_string()));
        assert_eq!(dependencies(&info), ["virtio", "virtio_ring", "crc32c"]);
        assert_eq!(modinfo(b"not an elf"), None);
        assert_eq!(modinfo(&elf[..70]), None);
    }

    #[test]
    fn the_bridge_modules_come_first_with_their_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        for (name, info) in [
            (
                "vmw_vsock_virtio_transport",
                &b"depends=vsock,vmw_vsock_virtio_transport_common\0"[..],
            ),
            (
                "vmw_vsock_virtio_transport_common",
                b"depends=vsock,virtio\0",
            ),
            ("vsock", b"depends=\0"),
            ("virtio", b"depends=\0"),
            ("ext4", b"depends=jbd2\0"),
            ("jbd2", b"depends=\0"),
        ] {
            std::fs::write(
                dir.path().join(format!("{name}.ko")),
                elf_with_modinfo(info),
            )
            .unwrap();
        }
        let (first, rest) = split(dir.path(), BRIDGE);
        let names = |v: &[Module]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        let first = names(&first);
        assert_eq!(first.len(), 4, "{first:?}");
        assert_eq!(first.last().unwrap(), "vmw_vsock_virtio_transport");
        assert!(
            first.iter().position(|n| n == "vsock")
                < first
                    .iter()
                    .position(|n| n == "vmw_vsock_virtio_transport_common")
        );
        assert_eq!(names(&rest), ["jbd2", "ext4"]);
        // A compressed module's dependencies are unknown: nothing is deferred.
        std::fs::write(dir.path().join("zram.ko.xz"), b"xz").unwrap();
        let (first, rest) = split(dir.path(), BRIDGE);
        assert_eq!((first.len(), rest.len()), (7, 0));
    }

    #[test]
    fn dependencies_load_first() {
        let m = |name: &str, deps: &[&str]| Module {
            name: name.into(),
            path: PathBuf::from(name),
            compressed: false,
            deps: deps.iter().map(|s| s.to_string()).collect(),
        };
        let order = load_order(vec![
            m("vmw_vsock_virtio_transport", &["vsock", "virtio"]),
            m("virtio", &[]),
            m("vsock", &["builtin_thing"]),
            m("a", &["b"]),
            m("b", &["a"]),
        ]);
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert_eq!(names.len(), 5);
        assert!(pos("vsock") < pos("vmw_vsock_virtio_transport"));
        assert!(pos("virtio") < pos("vmw_vsock_virtio_transport"));
    }
}
