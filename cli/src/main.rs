//! `kelp`: run Kelp locally and work with extensions.

mod admin;
mod tail;
mod up;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kelp", version, about = "Kelp: WebAssembly extensions behind HTTP, locally and on AWS Lambda")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway on localhost over the embedded default (SQLite, files, in-process
    /// debug bus), with the examples published and installed for a demo tenant.
    Up(up::UpArgs),
    /// Mint a development token (HS256 with the local secret) for a tenant.
    Token {
        /// Tenant id.
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// Subject (user id).
        #[arg(long, default_value = "demo-user")]
        sub: String,
        /// Permissions (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_values_t = up::DEMO_PERMS.iter().map(|s| s.to_string()))]
        perm: Vec<String>,
        /// Data directory of `kelp up` (holds the local signing secret).
        #[arg(long, default_value = ".kelp")]
        data_dir: PathBuf,
    },
    /// Publish a version: a .tar.zst bundle, a built directory or an extension source
    /// directory (built first).
    Publish {
        /// Bundle file or directory.
        source: PathBuf,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Install a published version for a tenant.
    Install {
        #[command(flatten)]
        args: admin::InstallArgs,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// The tenant's installs: extension, version, enabled, debug stream.
    Installs {
        #[command(subcommand)]
        command: InstallsCommand,
    },
    /// Switch an install on (by extension name, registry id or install id).
    Enable {
        /// Extension name, registry id or install id.
        install: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Switch an install off: its routes answer 404 until it is enabled again.
    Disable {
        /// Extension name, registry id or install id.
        install: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Move an install to another version (the latest published one by default).
    Upgrade {
        /// Extension name, registry id or install id.
        install: String,
        /// Version (semver or version id).
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Switch an install's debug stream on or off (`cap:debug.logs`).
    Debug {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Extension name, registry id or install id.
        install: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Remove an install (its storage is kept unless --purge).
    Uninstall {
        /// Extension name, registry id or install id.
        install: String,
        /// Delete the install's storage too.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Install config.
    Config {
        #[command(subcommand)]
        command: SetCommand,
    },
    /// Install secrets (write-only).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Follow an extension's debug stream (reconnects and resumes after disconnects).
    Tail(tail::TailArgs),
    /// Build an extension's component from source (`*.wat` or `src/index.js`) into a staging
    /// directory ready to publish.
    Build {
        /// Extension directory (with manifest.json).
        dir: PathBuf,
        /// Where to stage the built extension.
        #[arg(long, default_value = ".kelp/build")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum InstallsCommand {
    /// One line per install.
    List {
        #[command(flatten)]
        remote: admin::Remote,
    },
}

#[derive(Subcommand)]
enum SetCommand {
    /// Replace an install's config map (bumps config_version).
    Set {
        /// Install id.
        install: String,
        /// key=value pairs.
        #[arg(value_parser = admin::parse_pair, required = true)]
        pairs: Vec<(String, String)>,
        #[command(flatten)]
        remote: admin::Remote,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Write an install's secrets (bumps secrets_version).
    Set {
        /// Install id.
        install: String,
        /// key=value pairs.
        #[arg(value_parser = admin::parse_pair, required = true)]
        pairs: Vec<(String, String)>,
        /// Expiry of the envelope (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        remote: admin::Remote,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    kelp_runtime::telemetry::init();
    match Cli::parse().command {
        Command::Up(args) => up::run(args).await,
        Command::Token { tenant, sub, perm, data_dir } => {
            let secret = up::existing_dev_secret(&data_dir)?;
            println!("{}", up::mint(&secret, &tenant, &sub, &perm));
            Ok(())
        }
        Command::Publish { source, remote } => admin::publish(&remote, &source).await,
        Command::Install { args, remote } => admin::install(&remote, &args).await,
        Command::Installs { command: InstallsCommand::List { remote } } => admin::list_installs(&remote).await,
        Command::Enable { install, remote } => admin::set_enabled(&remote, &install, true).await,
        Command::Disable { install, remote } => admin::set_enabled(&remote, &install, false).await,
        Command::Uninstall { install, purge, remote } => admin::uninstall(&remote, &install, purge).await,
        Command::Upgrade { install, version, remote } => admin::upgrade(&remote, &install, version).await,
        Command::Debug { state, install, remote } => admin::set_debug(&remote, &install, state == "on").await,
        Command::Config { command: SetCommand::Set { install, pairs, remote } } => {
            admin::set_config(&remote, &install, &pairs).await
        }
        Command::Secrets { command: SecretsCommand::Set { install, pairs, expires_at, remote } } => {
            admin::set_secrets(&remote, &install, &pairs, expires_at).await
        }
        Command::Tail(args) => tail::run(args).await,
        Command::Build { dir, out } => {
            let root =
                kelp_runtime::devtools::repo_root(&std::env::current_dir()?).unwrap_or_else(|| PathBuf::from("."));
            let staged = kelp_runtime::devtools::stage_example(&root, &dir, &out)?;
            println!("built {}", staged.display());
            Ok(())
        }
    }
}
