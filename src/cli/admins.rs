//! `finsync admins`: named admin credentials, from a host with the database's
//! credentials: how the first admin is made, and how one is revoked when the API
//! cannot be reached. Each command is recorded in the audit trail as `cli`.

use std::process::ExitCode;

use secrecy::ExposeSecret;

use crate::app::{self, Logging};
use crate::cli::render;
use crate::store::{Actor, AdminName, AuditEntry, Role};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Issues a named credential with a role and prints it (shown only this once).
    Create {
        /// 1 to 64 of a-z, 0-9, `.`, `_` and `-`; never reused.
        name: String,
        /// admin (everything), operator (runs the fleet) or auditor (reads the audit trail).
        #[arg(long)]
        role: Role,
    },
    /// Lists admin credentials (never the credentials themselves).
    List,
    /// Revokes a credential at once, in every process.
    Revoke { name: String },
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &Role::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let settings = app::boot(None, Logging::Configured, "admins")?;
    let store = app::open_store(&settings).await?;
    match command {
        Command::Create { name, role } => {
            let name = AdminName::parse(&name).map_err(anyhow::Error::msg)?;
            let audit = AuditEntry::new(Actor::cli(), "admin.create")
                .detail(serde_json::json!({ "role": role }));
            let (admin, credential) = store
                .create_admin(&name, role, Actor::cli().as_str(), audit)
                .await?;
            println!("admin:      {} ({})", admin.name, admin.role);
            println!("credential: {}", credential.0.expose_secret());
            println!(
                "Store it now: finsync keeps only its hash. Send it as `Authorization: Bearer …`."
            );
        }
        Command::List => print!("{}", render::admins(&store.admins().await?)),
        Command::Revoke { name } => {
            let audit = AuditEntry::new(Actor::cli(), "admin.revoke");
            match store.revoke_admin(&name, audit).await? {
                Some(admin) => println!("Revoked `{}` ({}).", admin.name, admin.role),
                None => {
                    eprintln!("No live admin named `{name}`.");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
