//! A small filesystem the test mounts itself (tmpfs of a given size), unmounted on drop even
//! when the test fails. Root only; without it [`SmallFs::mount`] fails the test saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct SmallFs {
    pub path: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `size_mib` MiB on `path` (created if needed).
    pub fn mount(path: &Path, size_mib: u32) -> SmallFs {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "\n\nTHIS TEST NEEDS TO MOUNT A SMALL FILESYSTEM (root, `mount -t tmpfs`), AND CANNOT \
             HERE: {}\nRun the suite as root (CI does).\n",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        SmallFs {
            path: path.to_owned(),
        }
    }

    /// Writes a filler file until the filesystem is full; returns its path and size.
    pub fn fill(&self) -> (PathBuf, u64) {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut written = 0u64;
        // Bounded: a tmpfs of a few MiB fills in well under this many chunks.
        for _ in 0..100_000 {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        // The last partial blocks.
        for _ in 0..1_000 {
            match f.write(&chunk[..512]) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.flush();
        (filler, written)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
