//! `duress-receiver backup` and `restore`: one file holding a consistent snapshot of the store
//! and every file of the data directory, taken while alarms keep arriving, and restored only
//! after its contents are checked, never over data unless told, with the audit chain verified.
//!
//! **The backup file** is a gzip-compressed tar (the `tar` and `flate2` crates; a format every
//! operator's tools can open) of:
//! - `manifest.json`: format name and version, backend, creation time, receiver version, and
//!   the SHA-256 of every other entry (checked before anything is restored);
//! - `database/receiver.sqlite3` (SQLite: `VACUUM INTO`, the database as of one commit) or
//!   `database/dump.pgcustom` (PostgreSQL: `pg_dump --format=custom`, one snapshot);
//! - `data-dir/…`: every other regular file of the data directory (the TLS certificate and key,
//!   and any key file kept beside the database), so a restored receiver answers with the same
//!   identity agents pin.
//!
//! The file holds secrets (the TLS key, password hashes): it is created 0600, and the operator
//! keeps it like the data directory itself (docs/operations.md).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use sha2::{Digest as _, Sha256};

use crate::store::{StoreLocation, postgres, sqlite};

/// The manifest's `format`.
const FORMAT: &str = "duress-receiver-backup";
/// The manifest's `version`: what this receiver writes and reads.
const VERSION: u32 = 1;
const SQLITE_ENTRY: &str = "database/receiver.sqlite3";
const PG_ENTRY: &str = "database/dump.pgcustom";
const DATA_PREFIX: &str = "data-dir/";

/// What a backup holds, written first in the file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// `sqlite` or `postgresql`.
    pub backend: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub receiver_version: String,
    /// Entry name → lowercase hex SHA-256.
    pub sha256: BTreeMap<String, String>,
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub backend: &'static str,
    pub entries: usize,
    pub bytes: u64,
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    pub backend: String,
    pub created_at: String,
    pub data_files: usize,
    /// Audit entries verified after the restore.
    pub audit_entries: usize,
}

fn backend_of(at: &StoreLocation) -> &'static str {
    if at.database.is_some() {
        "postgresql"
    } else {
        "sqlite"
    }
}

/// Files of the SQLite store itself, which the snapshot replaces.
fn is_store_file(name: &str) -> bool {
    name == "receiver.sqlite3" || name.starts_with("receiver.sqlite3-")
}

/// Every regular file under `dir` (relative paths), except the SQLite store's own files and
/// `skip` (the backup being written, should it be inside the data directory).
fn data_files(dir: &Path, skip: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for entry in
            std::fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))?
        {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let top_level_store = rel.as_os_str().is_empty()
                    && is_store_file(&entry.file_name().to_string_lossy());
                let full = dir.join(&path);
                if !top_level_store && !same_file(&full, skip) {
                    out.push(path);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Creates `path` for writing, 0600 from its first byte (it holds secrets).
fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Takes a consistent online backup of the store at `at` and its data directory into `out`
/// (which must not exist). Written to a temporary name beside `out`, synced, then renamed, so a
/// failed backup never leaves a file that looks complete.
pub async fn backup(at: &StoreLocation, out: &Path) -> anyhow::Result<BackupReport> {
    ensure!(
        !out.exists(),
        "{} exists already: choose a new file",
        out.display()
    );
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".duress-backup-")
        .tempdir_in(parent)
        .with_context(|| format!("a working directory beside {}", out.display()))?;

    let backend = backend_of(at);
    let (db_entry, db_file) = match &at.database {
        None => {
            let dest = staging.path().join("receiver.sqlite3");
            let (dir, d) = (at.data_dir.clone(), dest.clone());
            tokio::task::spawn_blocking(move || sqlite::snapshot_into(&dir, &d))
                .await?
                .context("taking the SQLite snapshot")?;
            (SQLITE_ENTRY, dest)
        }
        Some(url) => {
            let dest = staging.path().join("dump.pgcustom");
            let (u, d) = (url.expose().to_owned(), dest.clone());
            tokio::task::spawn_blocking(move || postgres::dump_to(&u, &d))
                .await?
                .context("dumping the PostgreSQL database")?;
            (PG_ENTRY, dest)
        }
    };

    let files = if at.data_dir.is_dir() {
        data_files(&at.data_dir, out)?
    } else {
        Vec::new()
    };
    let mut sha256 = BTreeMap::new();
    sha256.insert(db_entry.to_owned(), sha256_file(&db_file)?);
    for rel in &files {
        sha256.insert(
            format!("{DATA_PREFIX}{}", rel.display()),
            sha256_file(&at.data_dir.join(rel))?,
        );
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        backend: backend.into(),
        created_at: crate::clock::receiver_now()
            .format(&time::format_description::well_known::Rfc3339)?,
        receiver_version: env!("CARGO_PKG_VERSION").into(),
        sha256,
    };

    let partial = staging.path().join("backup.partial");
    let file = create_private(&partial)?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest_json.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", manifest_json.as_slice())?;
    tar.append_path_with_name(&db_file, db_entry)?;
    for rel in &files {
        tar.append_path_with_name(
            at.data_dir.join(rel),
            format!("{DATA_PREFIX}{}", rel.display()),
        )?;
    }
    let file = tar.into_inner()?.finish()?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, out).with_context(|| format!("writing {}", out.display()))?;
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(BackupReport {
        backend,
        entries: files.len() + 1,
        bytes: std::fs::metadata(out)?.len(),
    })
}

/// Restores the backup `from` into the store at `at` and its data directory. Refuses a
/// backend other than the backup's, an entry whose SHA-256 differs from the manifest, and —
/// unless `force` — a store that holds data or a data-directory file that would change. Then
/// verifies the restored audit chain (an error if it does not hold). Stop the receiver first.
pub async fn restore(
    at: &StoreLocation,
    from: &Path,
    force: bool,
) -> anyhow::Result<RestoreReport> {
    let backend = backend_of(at);
    std::fs::create_dir_all(&at.data_dir)
        .with_context(|| format!("creating {}", at.data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&at.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let staging = tempfile::Builder::new()
        .prefix(".duress-restore-")
        .tempdir_in(&at.data_dir)?;
    let manifest = unpack(from, staging.path())?;
    ensure!(
        manifest.backend == backend,
        "{} is a {} backup; restore it with{} --database",
        from.display(),
        manifest.backend,
        if manifest.backend == "postgresql" {
            ""
        } else {
            "out"
        }
    );

    let holds = match &at.database {
        None => sqlite::holds_data(&at.data_dir)?,
        Some(url) => postgres::holds_data(url.expose()).await?,
    };
    if holds && !force {
        bail!(
            "the store {} already holds data: restore into an empty one, or pass --force to replace it",
            at.describe()
        );
    }
    let mut data = Vec::new();
    for name in manifest.sha256.keys() {
        if let Some(rel) = name.strip_prefix(DATA_PREFIX) {
            let target = at.data_dir.join(rel);
            let staged = staging.path().join(name);
            if target.exists() && !force && sha256_file(&target)? != manifest.sha256[name] {
                bail!(
                    "{} exists and differs from the backup's: pass --force to replace it",
                    target.display()
                );
            }
            data.push((staged, target));
        }
    }

    match &at.database {
        None => {
            let db = crate::store::sqlite::database_path(&at.data_dir);
            let staged = staging.path().join(SQLITE_ENTRY);
            // The old store's WAL and shared-memory files belong to the file being replaced.
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut side = db.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(side));
            }
            std::fs::File::open(&staged)?.sync_all()?;
            std::fs::rename(&staged, &db).with_context(|| format!("writing {}", db.display()))?;
        }
        Some(url) => {
            let (u, d) = (url.expose().to_owned(), staging.path().join(PG_ENTRY));
            tokio::task::spawn_blocking(move || postgres::restore_from(&u, &d, force))
                .await?
                .context("restoring the PostgreSQL dump")?;
        }
    }
    for (staged, target) in &data {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(staged, target).with_context(|| format!("writing {}", target.display()))?;
    }
    if let Ok(dir) = std::fs::File::open(&at.data_dir) {
        let _ = dir.sync_all();
    }

    let store = crate::store::open(at).await.with_context(|| at.opening())?;
    let verified = crate::store::verify_audit(store.as_ref(), None).await;
    store.close().await;
    let audit_entries = match verified? {
        Ok(n) => n,
        Err(brk) => bail!("restored, but the audit chain does not hold: {brk}"),
    };
    Ok(RestoreReport {
        backend: manifest.backend,
        created_at: manifest.created_at,
        data_files: data.len(),
        audit_entries,
    })
}

/// Unpacks `from` into `dir` and checks it against its manifest: known format and version,
/// only the entries the manifest lists (no absolute paths, no `..`), each with its SHA-256.
fn unpack(from: &Path, dir: &Path) -> anyhow::Result<Manifest> {
    let file = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut manifest: Option<Manifest> = None;
    let mut seen = Vec::new();
    let not_a_backup = || format!("{} is not a duress-receiver backup", from.display());
    for entry in archive.entries().with_context(not_a_backup)? {
        let mut entry = entry.with_context(not_a_backup)?;
        let name = entry.path()?.to_string_lossy().into_owned();
        ensure!(
            entry.header().entry_type().is_file(),
            "{}: unexpected entry {name:?}",
            from.display()
        );
        if name == "manifest.json" {
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            let m: Manifest = serde_json::from_slice(&text).with_context(not_a_backup)?;
            ensure!(m.format == FORMAT, "{}", not_a_backup());
            ensure!(
                m.version == VERSION,
                "{} is backup format version {}; this receiver reads version {VERSION}",
                from.display(),
                m.version
            );
            manifest = Some(m);
            continue;
        }
        let m = manifest
            .as_ref()
            .with_context(|| format!("{}: the manifest must come first", from.display()))?;
        let expected = m.sha256.get(&name).with_context(|| {
            format!("{}: entry {name:?} is not in the manifest", from.display())
        })?;
        // `unpack_in` refuses absolute paths and `..`; the digest is checked on the written copy.
        ensure!(
            entry.unpack_in(dir)?,
            "{}: entry {name:?} points outside the backup",
            from.display()
        );
        let got = sha256_file(&dir.join(&name))?;
        ensure!(
            &got == expected,
            "{}: entry {name:?} is damaged (SHA-256 {got}, manifest {expected})",
            from.display()
        );
        seen.push(name);
    }
    let m = manifest.with_context(not_a_backup)?;
    for name in m.sha256.keys() {
        ensure!(
            seen.contains(name),
            "{}: entry {name:?} is missing (a truncated file?)",
            from.display()
        );
    }
    Ok(m)
}
