//! `shardgate migrate`: brings a PostgreSQL session store's schema up to this build's
//! migrations (`migrations/postgres/`). Idempotent: a second run applies nothing.

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The PostgreSQL database, `postgres://user@host:port/db`.
    #[arg(long, env = "SHARDGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let url = args.database_url;
    crate::credentials::url_from_environment_if_secret(
        "--database-url",
        "SHARDGATE_DATABASE_URL",
        &url,
    )?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!(
            "--database-url must be a postgres:// URL (a SQLite store migrates itself when opened)"
        );
    }
    let migrated = shardgate_store::postgres::migrate(&url).await?;
    for m in &migrated.applied {
        println!("applied {:04} {}", m.version, m.description);
    }
    if migrated.applied.is_empty() {
        println!(
            "nothing to apply: all {} migrations are applied",
            migrated.known
        );
    } else {
        println!(
            "applied {} of {} migrations",
            migrated.applied.len(),
            migrated.known
        );
    }
    Ok(())
}
