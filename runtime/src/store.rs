//! The crash-safe metadata store: pods and containers as JSON values in redb tables.
//!
//! redb commits are atomic and durable, so a server killed at any point restarts with every
//! committed record intact (except a start written lazily, which recovery reads from the
//! monitor's own record). Reads are served from the runtime's in-memory maps; this store is
//! only written through and read once at start.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{Container, Pod};
use crate::{Error, Result};

const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

#[derive(Debug)]
pub(crate) struct Store {
    path: std::path::PathBuf,
    /// redb refuses all further writes after an I/O error (a full disk, say) until the
    /// database is reopened; `None` only while it is being reopened.
    db: std::sync::RwLock<Option<Database>>,
}

fn open_db(path: &Path) -> Result<Database> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(PODS)?;
    txn.open_table(CONTAINERS)?;
    txn.commit()?;
    Ok(db)
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store {
            path: path.to_path_buf(),
            db: std::sync::RwLock::new(Some(open_db(path)?)),
        })
    }

    /// Runs a write transaction; after an I/O error the database is reopened and the write
    /// tried once more, so that a disk that was full for a while does not end all writes.
    fn write(&self, f: impl Fn(&Database) -> std::result::Result<(), redb::Error>) -> Result<()> {
        let first = {
            let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(db) => f(db),
                None => Err(redb::Error::PreviousIo),
            }
        };
        match first {
            Ok(()) => Ok(()),
            Err(redb::Error::PreviousIo | redb::Error::Io(_)) => {
                let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
                // The old handle holds the file lock: it must go before the new one opens.
                drop(guard.take());
                let db = open_db(&self.path)?;
                let retried = f(&db);
                *guard = Some(db);
                retried.map_err(Error::from)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        id: &str,
        value: &T,
        durability: Durability,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))?;
        self.write(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            txn.open_table(table)?.insert(id, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
    }

    fn delete(&self, table: TableDefinition<&str, &[u8]>, id: &str) -> Result<()> {
        self.write(|db| {
            let txn = db.begin_write()?;
            txn.open_table(table)?.remove(id)?;
            txn.commit()?;
            Ok(())
        })
    }

    fn all<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<T>> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        let db = guard
            .as_ref()
            .ok_or_else(|| Error::Store("the metadata store is being reopened".into()))?;
        let txn = db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            match serde_json::from_slice(value.value()) {
                Ok(v) => out.push(v),
                Err(e) => {
                    tracing::error!(id = key.value(), error = %e, "skipping unreadable record")
                }
            }
        }
        Ok(out)
    }

    pub fn put_pod(&self, pod: &Pod) -> Result<()> {
        self.put(PODS, &pod.id, pod, Durability::Immediate)
    }

    pub fn delete_pod(&self, id: &str) -> Result<()> {
        self.delete(PODS, id)
    }

    pub fn put_container(&self, c: &Container) -> Result<()> {
        self.put(CONTAINERS, &c.id, c, Durability::Immediate)
    }

    /// Writes `c` without waiting for the disk (no fsync): the write is atomic and visible at
    /// once, and durable with the next durable write. Only for what a crash may lose because
    /// recovery finds it elsewhere (a start, which the monitor records in `started.json`).
    pub fn put_container_lazily(&self, c: &Container) -> Result<()> {
        self.put(CONTAINERS, &c.id, c, Durability::None)
    }

    pub fn delete_container(&self, id: &str) -> Result<()> {
        self.delete(CONTAINERS, id)
    }

    pub fn pods(&self) -> Result<Vec<Pod>> {
        self.all(PODS)
    }

    pub fn containers(&self) -> Result<Vec<Container>> {
        self.all(CONTAINERS)
    }
}
