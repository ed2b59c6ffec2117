//! The registry: every valid connector from the connectors directory, by id, and
//! the client secrets their files refer to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;

use super::{Connector, Problems, validate_file};

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
    #[error(
        "connector `{connector}` needs the client secret `{env}`: set that environment variable"
    )]
    MissingSecret { connector: String, env: String },
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    connectors: BTreeMap<String, Arc<Connector>>,
    secrets: BTreeMap<String, SecretString>,
}

impl Registry {
    /// Loads every `*.toml` in `dir`. Valid files are served; each invalid file is
    /// returned with all its problems and left out, so one bad file never takes the
    /// others down.
    pub fn load(
        dir: &Path,
        base_urls: &BTreeMap<String, String>,
        secrets: BTreeMap<String, SecretString>,
    ) -> Result<(Self, Vec<Problems>), RegistryError> {
        // Variable names are upper case; configuration keys arrive lower-cased from
        // FINSYNC__… variables, so compare without case.
        let secrets = secrets
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        let mut registry = Self {
            connectors: BTreeMap::new(),
            secrets,
        };
        let mut problems = Vec::new();
        for path in connector_files(dir)? {
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            match validate_file(&path, base_urls.get(id).map(String::as_str)) {
                Ok(connector) => {
                    registry
                        .connectors
                        .insert(connector.id.clone(), Arc::new(connector));
                }
                Err(p) => problems.push(p),
            }
        }
        Ok((registry, problems))
    }

    pub fn get(&self, id: &str) -> Result<Arc<Connector>, RegistryError> {
        self.connectors
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::Unknown(id.to_owned()))
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Connector>> {
        self.connectors.values()
    }

    /// The connector's client secret: the environment variable it names, else the
    /// configured value for that name.
    pub fn client_secret(&self, connector: &Connector) -> Result<SecretString, RegistryError> {
        let env = &connector.auth.client_secret_env;
        std::env::var(env)
            .ok()
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
            .or_else(|| self.secrets.get(&env.to_ascii_uppercase()).cloned())
            .ok_or_else(|| RegistryError::MissingSecret {
                connector: connector.id.clone(),
                env: env.clone(),
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
