//! The crash-safe metadata store: pods and containers as JSON values in redb tables.
//!
//! redb commits are atomic and durable, so a server killed at any point restarts with every
//! committed record intact. Reads are served from the runtime's in-memory maps; this store is
//! only written through and read once at start.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Result;
use crate::model::{Container, Pod};

const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(PODS)?;
        txn.open_table(CONTAINERS)?;
        txn.commit()?;
        Ok(Store { db })
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        id: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| crate::Error::Store(e.to_string()))?;
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.insert(id, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn delete(&self, table: TableDefinition<&str, &[u8]>, id: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.remove(id)?;
        txn.commit()?;
        Ok(())
    }

    fn all<T: DeserializeOwned>(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
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
        self.put(PODS, &pod.id, pod)
    }

    pub fn delete_pod(&self, id: &str) -> Result<()> {
        self.delete(PODS, id)
    }

    pub fn put_container(&self, c: &Container) -> Result<()> {
        self.put(CONTAINERS, &c.id, c)
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
