//! The registry: the connectors this process serves, by id, with the version of each
//! in service, the problems of connector files it had to refuse, and the client
//! secrets the files refer to. It changes while the process runs (see
//! [`crate::catalog`]); readers always get a whole connector, old or new.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use secrecy::{ExposeSecret, SecretString};

use super::{Connector, Problems, validate_str};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("cannot read the connectors directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("no connector `{0}`")]
    Unknown(String),
    #[error("connector `{connector}` needs the secret `{env}`: set that environment variable")]
    MissingSecret { connector: String, env: String },
}

/// A connector in service and the stored version it was built from.
#[derive(Debug, Clone)]
pub struct Served {
    pub connector: Arc<Connector>,
    pub version: i64,
}

#[derive(Debug, Default)]
struct State {
    served: BTreeMap<String, Served>,
    /// Connector files on disk this process refused, by connector id.
    refused: BTreeMap<String, Problems>,
}

#[derive(Debug, Default)]
pub struct Registry {
    state: RwLock<State>,
    base_urls: BTreeMap<String, String>,
    secrets: BTreeMap<String, SecretString>,
}

impl Registry {
    /// An empty registry; `base_urls` override the files' own (e.g. to point at a
    /// sandbox) and `secrets` stand in for unset secret variables.
    pub fn new(
        base_urls: BTreeMap<String, String>,
        secrets: BTreeMap<String, SecretString>,
    ) -> Self {
        // Variable names are upper case; configuration keys arrive lower-cased from
        // FINSYNC__… variables, so compare without case.
        let secrets = secrets
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        Self {
            state: RwLock::default(),
            base_urls,
            secrets,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written map: every
        // write is a single insert or remove.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Validates connector text as it would be served under `id`, with this
    /// process's base-URL override for that id.
    pub fn validate(&self, file: &str, id: &str, text: &str) -> Result<Connector, Problems> {
        validate_str(file, id, text, self.base_urls.get(id).map(String::as_str))
    }

    /// Puts a validated connector in service (replacing any older version).
    pub fn install(&self, connector: Connector, version: i64) {
        self.write().served.insert(
            connector.id.clone(),
            Served {
                connector: Arc::new(connector),
                version,
            },
        );
    }

    /// Records that the file for `id` was refused (or, with `None`, is fine again).
    /// Returns whether that changed anything, so callers report a problem once.
    pub fn set_refused(&self, id: &str, problems: Option<Problems>) -> bool {
        let mut state = self.write();
        match problems {
            Some(problems) => {
                state.refused.insert(id.to_owned(), problems.clone()) != Some(problems)
            }
            None => state.refused.remove(id).is_some(),
        }
    }

    pub fn get(&self, id: &str) -> Result<Arc<Connector>, RegistryError> {
        self.read()
            .served
            .get(id)
            .map(|s| Arc::clone(&s.connector))
            .ok_or_else(|| RegistryError::Unknown(id.to_owned()))
    }

    pub fn served(&self, id: &str) -> Option<Served> {
        self.read().served.get(id).cloned()
    }

    /// Every connector in service, by id.
    pub fn all(&self) -> Vec<Served> {
        self.read().served.values().cloned().collect()
    }

    /// Files refused, by connector id.
    pub fn refused(&self) -> BTreeMap<String, Problems> {
        self.read().refused.clone()
    }

    /// The connector's client secret: the environment variable it names, else the
    /// configured value for that name.
    pub fn client_secret(&self, connector: &Connector) -> Result<SecretString, RegistryError> {
        self.secret(connector, &connector.auth.client_secret_env)
    }

    /// The secret a reference of `connector`'s file names (`{ env = "NAME" }`):
    /// the environment variable, else the configured value for that name.
    pub fn secret(&self, connector: &Connector, env: &str) -> Result<SecretString, RegistryError> {
        std::env::var(env)
            .ok()
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .or_else(|| {
                self.secrets
                    .get(&env.to_ascii_uppercase())
                    .filter(|v| !v.expose_secret().is_empty())
                    .cloned()
            })
            .ok_or_else(|| RegistryError::MissingSecret {
                connector: connector.id.clone(),
                env: env.to_owned(),
            })
    }
}

/// The connector files in `dir`, sorted so reports read the same every time.
pub fn connector_files(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::Directory {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}
