//! Opening a store file that an older herd wrote with redb 2 (redb's file format v2).
//!
//! redb 3 and later read only format v3, and they encode the variable-width tuple keys of `exp`,
//! `zs` and `zo` differently, so redb's own in-place upgrade is not enough: every entry is read
//! with redb 2 and written to a new file with today's redb. The old file is kept beside the new
//! one as `<file>.v2.bak`. At every moment `<file>` is either the whole old file or the whole new
//! one: the old inode is first hard-linked to the backup name, then the new file is renamed over
//! `<file>`; an upgrade cut short (crash, `kill -9`) leaves the old file in place and is simply
//! done again on the next open.

use std::path::{Path, PathBuf};

use redb::Database;
use redb2::{ReadableTable as _, TableDefinition as TableDefinition2};

use super::codec::{EXP, KV, ZO, ZS};

/// The old file's tables, as redb 2 typed them (same names and types as [`super::codec`]).
const KV2: TableDefinition2<&str, &[u8]> = TableDefinition2::new("kv");
const EXP2: TableDefinition2<(u64, &str), ()> = TableDefinition2::new("exp");
const ZS2: TableDefinition2<(&str, &str), u64> = TableDefinition2::new("zs");
const ZO2: TableDefinition2<(&str, u64, &str), ()> = TableDefinition2::new("zo");

/// What an upgrade did, for the log line.
#[derive(Debug)]
pub(super) struct Upgraded {
    pub(super) entries: u64,
    pub(super) backup: PathBuf,
}

/// The name the old file is kept under.
pub(super) fn backup_path(path: &Path) -> PathBuf {
    sibling(path, "v2.bak")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Rewrites the format-v2 file at `path` in today's format, keeping the old one as a backup.
pub(super) fn from_v2(path: &Path) -> Result<Upgraded, String> {
    let fresh = sibling(path, "upgrading");
    // A leftover from an upgrade cut short: the old file is still in place, start again.
    remove_if_present(&fresh)?;
    let entries = {
        let old = redb2::Database::open(path)
            .map_err(|e| format!("failed to open it with redb 2 to upgrade it: {e}"))?;
        let new = Database::create(&fresh)
            .map_err(|e| format!("failed to create {}: {e}", fresh.display()))?;
        copy_all(&old, &new).map_err(|e| format!("failed to copy its entries: {e}"))?
    };
    let backup = backup_path(path);
    remove_if_present(&backup)?;
    std::fs::hard_link(path, &backup)
        .or_else(|_| std::fs::copy(path, &backup).map(|_| ()))
        .map_err(|e| format!("failed to keep the old file as {}: {e}", backup.display()))?;
    std::fs::rename(&fresh, path)
        .map_err(|e| format!("failed to move {} into place: {e}", fresh.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("failed to sync the directory {}: {e}", dir.display()))?;
    }
    Ok(Upgraded { entries, backup })
}

fn remove_if_present(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("failed to remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Copies the four tables in one durable transaction; answers how many entries moved.
fn copy_all(old: &redb2::Database, new: &Database) -> Result<u64, Box<dyn std::error::Error>> {
    let read = old.begin_read()?;
    let write = new.begin_write()?;
    let mut n = 0;
    // The same loop for each table; a macro because each table has its own key and value types
    // in two different crates.
    macro_rules! copy {
        ($from:expr, $to:expr) => {{
            let mut to = write.open_table($to)?;
            if let Some(from) = table(&read, $from)? {
                for row in from.iter()? {
                    let (k, v) = row?;
                    to.insert(k.value(), v.value())?;
                    n += 1;
                }
            }
        }};
    }
    copy!(KV2, KV);
    copy!(EXP2, EXP);
    copy!(ZS2, ZS);
    copy!(ZO2, ZO);
    write.commit()?;
    Ok(n)
}

/// An old table, or `None` where the old file never created it.
fn table<K: redb2::Key + 'static, V: redb2::Value + 'static>(
    read: &redb2::ReadTransaction,
    def: TableDefinition2<K, V>,
) -> Result<Option<redb2::ReadOnlyTable<K, V>>, redb2::TableError> {
    match read.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb2::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    use redb2::ReadableTableMetadata as _;

    use super::*;

    /// Writes a file the way herd did before redb 4, one entry in each table.
    fn write_v2(path: &Path) {
        let db = redb2::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(KV2)
                .unwrap()
                .insert("session:a", b"payload".as_slice())
                .unwrap();
            txn.open_table(EXP2)
                .unwrap()
                .insert((42, "session:a"), ())
                .unwrap();
            txn.open_table(ZS2)
                .unwrap()
                .insert(("q{jobs}:wait", "job-1"), 7)
                .unwrap();
            txn.open_table(ZO2)
                .unwrap()
                .insert(("q{jobs}:wait", 7, "job-1"), ())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_v2_file_is_rewritten_with_every_entry_and_kept_as_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        write_v2(&path);
        assert!(matches!(
            Database::create(&path),
            Err(redb::DatabaseError::UpgradeRequired(2))
        ));

        let done = from_v2(&path).unwrap();
        assert_eq!(done.entries, 4);
        assert_eq!(done.backup, dir.path().join("store.redb.v2.bak"));
        assert!(!dir.path().join("store.redb.upgrading").exists());

        let db = Database::create(&path).unwrap();
        let read = db.begin_read().unwrap();
        let kv = read.open_table(KV).unwrap();
        assert_eq!(kv.get("session:a").unwrap().unwrap().value(), b"payload");
        let exp = read.open_table(EXP).unwrap();
        assert!(exp.get((42, "session:a")).unwrap().is_some());
        let zs = read.open_table(ZS).unwrap();
        assert_eq!(
            zs.get(("q{jobs}:wait", "job-1")).unwrap().unwrap().value(),
            7
        );
        let zo = read.open_table(ZO).unwrap();
        assert_eq!(zo.len().unwrap(), 1);
        assert!(zo.get(("q{jobs}:wait", 7, "job-1")).unwrap().is_some());

        // The backup is the old file, still readable by redb 2.
        let old = redb2::Database::open(&done.backup).unwrap();
        let txn = old.begin_read().unwrap();
        assert_eq!(txn.open_table(KV2).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn an_upgrade_cut_short_is_done_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        write_v2(&path);
        // What a crash mid-copy leaves: a half-written new file and a stale backup name.
        std::fs::write(dir.path().join("store.redb.upgrading"), b"partial").unwrap();
        std::fs::write(dir.path().join("store.redb.v2.bak"), b"stale").unwrap();
        assert_eq!(from_v2(&path).unwrap().entries, 4);
        assert!(redb2::Database::open(dir.path().join("store.redb.v2.bak")).is_ok());
    }
}
