//! The catalog: keeps the connectors every process serves in step with the connectors
//! directory and the database. A valid file that is new or changed on disk, or a text
//! put through the admin API, becomes the connector's next stored version; each
//! process polls for latest versions and puts them in service. A file that does not
//! validate is reported and never replaces the version in service. Deleting a file
//! does not retire its institution: users' connections depend on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connectors::registry::connector_files;
use crate::connectors::{Problems, Registry, RegistryError};
use crate::fingerprint::sha256_hex;
use crate::store::{Actor, AuditEntry, Published, Store, StoreError, VersionSource};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error(transparent)]
    Directory(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the connector is invalid:\n{0}")]
    Invalid(Problems),
}

#[derive(Debug, Clone)]
pub struct Catalog {
    store: Store,
    registry: Arc<Registry>,
    dir: PathBuf,
    /// Stored versions this process could not build, so each is reported once.
    unusable: Arc<Mutex<BTreeMap<String, i64>>>,
    /// The SHA-256 of each file's text when this process last dealt with it: an
    /// unchanged file is neither validated nor published again.
    seen: Arc<Mutex<BTreeMap<PathBuf, String>>>,
}

impl Catalog {
    pub fn new(store: Store, registry: Arc<Registry>, dir: PathBuf) -> Self {
        Self {
            store,
            registry,
            dir,
            unusable: Arc::default(),
            seen: Arc::default(),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Looks at the directory, then at the database: afterwards this process serves
    /// the latest valid version of every connector.
    pub async fn reload(&self) -> Result<(), CatalogError> {
        self.scan_directory().await?;
        self.install_latest().await?;
        Ok(())
    }

    /// Publishes every valid file whose text differs from what the directory last
    /// published for it; records each refused file's problems.
    async fn scan_directory(&self) -> Result<(), CatalogError> {
        for path in connector_files(&self.dir)? {
            let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let file = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // Being written or removed right now; the next scan sees it whole.
                Err(error) => {
                    tracing::debug!(file, %error, "Connector file unreadable for now.");
                    continue;
                }
            };
            let hash = sha256_hex(text.as_bytes());
            let unchanged = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&path)
                == Some(&hash);
            if unchanged {
                continue;
            }
            match self.registry.validate(&file, id, &text) {
                Ok(connector) => {
                    if self.registry.set_refused(id, None) {
                        tracing::info!(file, "Connector file is valid again.");
                    }
                    let published = self
                        .store
                        .publish_connector(
                            id,
                            &text,
                            &connector.hash,
                            VersionSource::File,
                            &file,
                            AuditEntry::new(Actor::system(), "connector.file_published")
                                .detail(serde_json::json!({ "file": file })),
                        )
                        .await?;
                    if let Published::New(version) = published {
                        tracing::info!(
                            connector = id,
                            version = version.version,
                            file,
                            "Connector file published."
                        );
                    }
                }
                Err(problems) => {
                    if self.registry.set_refused(id, Some(problems.clone())) {
                        for problem in &problems.0 {
                            tracing::error!(%problem, "Connector file refused; the version in service stays.");
                        }
                    }
                }
            }
            // Only once dealt with: a file whose publishing failed is tried again.
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.clone(), hash);
        }
        Ok(())
    }

    /// Puts the latest stored version of each connector in service, where it is not
    /// already. Returns how many changed.
    async fn install_latest(&self) -> Result<usize, CatalogError> {
        let mut installed = 0;
        for (id, number) in self.store.latest_connector_versions().await? {
            let id = id.as_str();
            let known_bad = self
                .unusable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                == Some(&number);
            if known_bad
                || self
                    .registry
                    .served(id)
                    .is_some_and(|s| s.version == number)
            {
                continue;
            }
            let version = self.store.connector_version(id, number).await?;
            let file = format!("{id} version {}", version.version);
            match self.registry.validate(&file, id, &version.content) {
                Ok(connector) => {
                    self.store
                        .upsert_institution(&connector.institution())
                        .await?;
                    self.registry.install(connector, version.version);
                    installed += 1;
                    tracing::info!(
                        connector = id,
                        version = version.version,
                        "Connector in service."
                    );
                }
                Err(problems) => {
                    let mut unusable = self.unusable.lock().unwrap_or_else(|e| e.into_inner());
                    if unusable.insert(id.to_owned(), version.version) != Some(version.version) {
                        tracing::error!(connector = id, version = version.version, %problems, "Stored connector version does not validate here; the version in service stays.");
                    }
                }
            }
        }
        Ok(installed)
    }

    /// Validates `text` as connector `id` and, if it is valid, stores it as the next
    /// version and puts it in service here at once (other processes follow within
    /// their poll interval).
    pub async fn publish(
        &self,
        id: &str,
        text: &str,
        audit: AuditEntry,
    ) -> Result<Published, CatalogError> {
        let file = format!("{id}.toml");
        let connector = self
            .registry
            .validate(&file, id, text)
            .map_err(CatalogError::Invalid)?;
        let published = self
            .store
            .publish_connector(
                id,
                text,
                &connector.hash,
                VersionSource::Api,
                &audit.actor().to_string(),
                audit.clone(),
            )
            .await?;
        if let Published::New(version) = &published {
            tracing::info!(
                connector = id,
                version = version.version,
                actor = %audit.actor(),
                "Connector published through the admin API."
            );
        }
        self.install_latest().await?;
        Ok(published)
    }

    /// Syncs every `every` until `shutdown` resolves, the first time `every` after
    /// it starts (the process loaded the catalog as it started, and a round at once
    /// would pick up, at some moment the scheduler chooses, what was published
    /// since); a failed round is logged and the next one tries again.
    pub async fn run(&self, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {
                    if let Err(error) = self.reload().await {
                        tracing::warn!(%error, "Connector catalog sync failed; retrying.");
                    }
                }
            }
        }
    }
}
