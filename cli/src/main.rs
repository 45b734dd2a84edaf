//! `kelp`: run Kelp locally and work with extensions.

mod admin;
mod build;
mod dev;
mod new;
mod plans;
mod tail;
mod up;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

const FOOTER: &str = "\
Getting started:
  kelp up                                   # in one terminal; export what it prints
  kelp new hello --lang js && kelp dev hello

Environment:
  KELP_URL          base URL of Kelp (kelp up prints it; default http://127.0.0.1:8080)
  KELP_ADMIN_TOKEN  bearer token for the admin commands (publish, install, config, ...)
  KELP_TOKEN        bearer token for the debug stream (tail, dev)
  XDG_CACHE_HOME    where the build toolchains are installed (default ~/.cache; kelp uses kelp/)

Exit codes:
  0  done
  1  failed; the message says why (an HTTP refusal starts with its status, e.g. 404 Not Found)
  2  the command line was wrong (see --help)";

#[derive(Parser)]
#[command(
    name = "kelp",
    version,
    about = "Kelp: WebAssembly extensions behind HTTP, locally and on AWS Lambda",
    after_help = FOOTER
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway on localhost over the embedded default (SQLite, files, in-process
    /// debug bus), with the examples published and installed for a demo tenant.
    #[command(after_help = "Example:\n  kelp up --listen 127.0.0.1:8080 --data-dir .kelp")]
    Up(up::UpArgs),
    /// Mint a development token (HS256 with the local secret) for a tenant.
    #[command(after_help = "Example:\n  kelp token --tenant acme --perm extension:read,extension:debug")]
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
    #[command(
        after_help = "Example:\n  kelp publish hello            # a project (built first), a built dir or a .tar.zst"
    )]
    Publish {
        /// Bundle file or directory.
        source: PathBuf,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Install a published version for a tenant.
    #[command(after_help = "Example:\n  kelp install com.example.hello --config greeting=Hi --debug-logs")]
    Install {
        #[command(flatten)]
        args: admin::InstallArgs,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// The tenant's installs: extension, version, enabled, debug stream.
    #[command(after_help = "Example:\n  kelp installs list")]
    Installs {
        #[command(subcommand)]
        command: InstallsCommand,
    },
    /// Switch an install on (by extension name, registry id or install id).
    #[command(after_help = "Example:\n  kelp enable com.example.hello")]
    Enable {
        /// Extension name, registry id or install id.
        install: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Switch an install off: its routes answer 404 until it is enabled again.
    #[command(after_help = "Example:\n  kelp disable com.example.hello")]
    Disable {
        /// Extension name, registry id or install id.
        install: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Move an install to another version (the highest published release by default).
    #[command(after_help = "Example:\n  kelp upgrade com.example.hello --version 1.2.0")]
    Upgrade {
        /// Extension name, registry id or install id.
        install: String,
        /// Version (semver or version id).
        #[arg(long)]
        version: Option<String>,
        /// Without --version, consider prereleases too (`kelp dev` builds).
        #[arg(long)]
        prerelease: bool,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Grant capabilities to an install (only those its version's manifest declares).
    #[command(after_help = "Example:\n  kelp grant com.example.hello secrets.get http.fetch")]
    Grant {
        /// Extension name, registry id or install id.
        install: String,
        /// Capabilities, with or without `cap:` (e.g. secrets.get).
        #[arg(required = true)]
        capabilities: Vec<String>,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Take capabilities back from an install: its calls to them are then `denied`.
    #[command(after_help = "Example:\n  kelp revoke com.example.hello http.fetch")]
    Revoke {
        /// Extension name, registry id or install id.
        install: String,
        /// Capabilities, with or without `cap:`.
        #[arg(required = true)]
        capabilities: Vec<String>,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Tenant plans: named limit sets (deadline, memory, request rates, storage, egress, ...).
    #[command(
        after_help = "Example:\n  kelp plans set small timeout_ms=1000 install_requests_per_minute=120\n  kelp plans assign acme small"
    )]
    Plans {
        #[command(subcommand)]
        command: PlansCommand,
    },
    /// Show an install's effective limits, or narrow them with its own (`name=value`; `name=`
    /// removes one).
    #[command(after_help = "Example:\n  kelp limits com.example.hello timeout_ms=1000 warm_reuse=false")]
    Limits {
        /// Extension name, registry id or install id.
        install: String,
        /// Limits to set, `name=value`.
        #[arg(value_parser = admin::parse_pair)]
        pairs: Vec<(String, String)>,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// What each install used (requests, errors, wall time, guest CPU, memory, egress, storage),
    /// per UTC hour; this month by default.
    #[command(after_help = "Example:\n  kelp usage --from 2026-12-01 --csv > usage.csv")]
    Usage {
        /// First day or hour (YYYY-MM-DD, YYYY-MM-DDTHH or RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Day or hour after the last.
        #[arg(long)]
        to: Option<String>,
        /// Only this install (extension name, registry id or install id).
        #[arg(long)]
        install: Option<String>,
        /// One CSV line per install and hour (billing export).
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Switch an install's debug stream on or off (`cap:debug.logs`).
    #[command(after_help = "Example:\n  kelp debug on com.example.hello")]
    Debug {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Extension name, registry id or install id.
        install: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Remove an install. Its storage is kept for the next install of the extension in this
    /// tenant, unless --purge.
    #[command(after_help = "Example:\n  kelp uninstall com.example.hello --purge")]
    Uninstall {
        /// Extension name, registry id or install id.
        install: String,
        /// Delete the install's storage too (a new install then starts empty).
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Install config.
    #[command(
        after_help = "Example:\n  kelp config set com.example.hello greeting=Hi && kelp config unset com.example.hello greeting"
    )]
    Config {
        #[command(subcommand)]
        command: SetCommand,
    },
    /// Install secrets (write-only).
    #[command(
        after_help = "Example:\n  kelp secrets set com.example.hello api_key=s3cr3t --expires-at 2027-01-01T00:00:00Z"
    )]
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Follow an extension's debug stream (reconnects and resumes after disconnects).
    #[command(after_help = "Example:\n  kelp tail com.example.hello --level warn")]
    Tail(tail::TailArgs),
    /// Make a new extension project from a template that builds and runs as is.
    #[command(after_help = "Example:\n  kelp new hello --lang ts")]
    New {
        /// Directory to create (its name becomes the extension's: com.example.<dir>).
        dir: PathBuf,
        /// Language of the guest.
        #[arg(long, value_enum, default_value = "js")]
        lang: new::Lang,
        /// Extension name (default com.example.<directory name>).
        #[arg(long)]
        name: Option<String>,
    },
    /// Check an extension's manifest (and a TypeScript project's types), then build its
    /// component from source (`*.wat`, `src/index.{ts,js}`, `src/handler.{ts,js}` or
    /// `index.{ts,js}`) into a staging directory ready to publish.
    #[command(after_help = "Example:\n  kelp build hello --out .kelp/build")]
    Build {
        /// Extension directory (with manifest.json).
        dir: PathBuf,
        /// Where to stage the built extension.
        #[arg(long, default_value = ".kelp/build")]
        out: PathBuf,
        /// Skip the TypeScript type-check (run by default when the project has a tsconfig.json).
        #[arg(long)]
        no_check: bool,
    },
    /// Print the guest contract: the WIT of `alga:extension` (the Alga world) and Kelp's
    /// `kelp:extension`; with --out, write it as a `wit/` directory to build against.
    #[command(
        after_help = "Example:\n  kelp wit | less\n  kelp wit --out wit   # wit/kelp.wit and wit/deps/alga/extension.wit\n  kelp wit --ts > src/alga.d.ts"
    )]
    Wit {
        /// Write `kelp.wit` and `deps/alga/extension.wit` under this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the TypeScript declarations of every interface instead (what `kelp new`
        /// writes to src/alga.d.ts).
        #[arg(long, conflicts_with = "out")]
        ts: bool,
    },
    /// Build, publish a prerelease and upgrade the install on every source change, following
    /// the extension's debug stream (against a running `kelp up` or a deployed Kelp).
    #[command(after_help = "Example:\n  kelp dev hello")]
    Dev(dev::DevArgs),
}

#[derive(Subcommand)]
enum PlansCommand {
    /// Every plan, `default` (the deployment's settings) first.
    List {
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// A plan's effective limits.
    Show {
        /// Plan name.
        name: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Create a plan or change its limits (`name=value`; `name=` removes one). Every tenant
    /// on it gets the change on its next request.
    #[command(
        after_help = "Example:\n  kelp plans set small timeout_ms=1000 memory_mb=64 install_requests_per_minute=120"
    )]
    Set {
        /// Plan name (a-z, 0-9, '.', '_', '-').
        name: String,
        /// Limits, `name=value`.
        #[arg(value_parser = admin::parse_pair, required = true)]
        pairs: Vec<(String, String)>,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Delete a plan no tenant is on.
    Delete {
        /// Plan name.
        name: String,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Put a tenant on a plan (`default` for the deployment's settings).
    #[command(after_help = "Example:\n  kelp plans assign acme small")]
    Assign {
        /// Tenant id.
        #[arg(value_name = "TENANT")]
        tenant_id: String,
        /// Plan name.
        plan: String,
        #[command(flatten)]
        remote: admin::Remote,
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
    /// Set config keys, keeping the others (bumps config_version).
    Set {
        /// Extension name, registry id or install id.
        install: String,
        /// key=value pairs.
        #[arg(value_parser = admin::parse_pair, required = true)]
        pairs: Vec<(String, String)>,
        /// Replace the whole map with these pairs instead.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Remove config keys (bumps config_version).
    Unset {
        /// Extension name, registry id or install id.
        install: String,
        /// Keys to remove.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        remote: admin::Remote,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Write secrets, keeping the others (bumps secrets_version; values are never shown).
    Set {
        /// Extension name, registry id or install id.
        install: String,
        /// key=value pairs.
        #[arg(value_parser = admin::parse_pair, required = true)]
        pairs: Vec<(String, String)>,
        /// Expiry of the envelope (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        /// Replace all secrets with these pairs instead.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        remote: admin::Remote,
    },
    /// Remove secrets (bumps secrets_version).
    Unset {
        /// Extension name, registry id or install id.
        install: String,
        /// Keys to remove.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        remote: admin::Remote,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Like any Unix tool, end quietly when the reader of stdout goes away (`kelp installs list
    // | head -1`) instead of panicking on the failed write: Rust ignores SIGPIPE by default.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal at start, before any thread
    // that could be writing exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    kelp_runtime::telemetry::init();
    let command = Cli::parse().command;
    match run(command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain (`{:#}`), never a Rust backtrace: the message is
            // the product here.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
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
        Command::Upgrade { install, version, prerelease, remote } => {
            admin::upgrade(&remote, &install, version, prerelease).await
        }
        Command::Grant { install, capabilities, remote } => {
            admin::change_grants(&remote, &install, &capabilities, true).await
        }
        Command::Revoke { install, capabilities, remote } => {
            admin::change_grants(&remote, &install, &capabilities, false).await
        }
        Command::Plans { command } => match command {
            PlansCommand::List { remote } => plans::list(&remote).await,
            PlansCommand::Show { name, remote } => plans::show(&remote, &name).await,
            PlansCommand::Set { name, pairs, remote } => plans::set(&remote, &name, &pairs).await,
            PlansCommand::Delete { name, remote } => plans::delete(&remote, &name).await,
            PlansCommand::Assign { tenant_id, plan, remote } => plans::assign(&remote, &tenant_id, &plan).await,
        },
        Command::Limits { install, pairs, remote } => plans::install_limits(&remote, &install, &pairs).await,
        Command::Usage { from, to, install, csv, remote } => {
            let filter =
                plans::UsageFilter { from: from.as_deref(), to: to.as_deref(), install: install.as_deref(), csv };
            plans::usage(&remote, &filter).await
        }
        Command::Debug { state, install, remote } => admin::set_debug(&remote, &install, state == "on").await,
        Command::Config { command: SetCommand::Set { install, pairs, replace, remote } } => {
            let change = if replace { admin::MapChange::Replace(&pairs) } else { admin::MapChange::Merge(&pairs, &[]) };
            admin::change_config(&remote, &install, change).await
        }
        Command::Config { command: SetCommand::Unset { install, keys, remote } } => {
            admin::change_config(&remote, &install, admin::MapChange::Merge(&[], &keys)).await
        }
        Command::Secrets { command: SecretsCommand::Set { install, pairs, expires_at, replace, remote } } => {
            let change = if replace { admin::MapChange::Replace(&pairs) } else { admin::MapChange::Merge(&pairs, &[]) };
            admin::change_secrets(&remote, &install, change, expires_at).await
        }
        Command::Secrets { command: SecretsCommand::Unset { install, keys, remote } } => {
            admin::change_secrets(&remote, &install, admin::MapChange::Merge(&[], &keys), None).await
        }
        Command::Tail(args) => tail::run(args).await,
        Command::New { dir, lang, name } => new::run(&dir, lang, name),
        Command::Build { dir, out, no_check } => {
            let check = if no_check { build::TypeCheck::Off } else { build::TypeCheck::Fail };
            let built = build::build(&dir, &out, check)?;
            println!("{}", built.dir.display());
            Ok(())
        }
        Command::Dev(args) => dev::run(args).await,
        Command::Wit { ts: true, .. } => {
            print!("{}", kelp_runtime::devtools::typings::declarations("kelp:extension/runner")?);
            Ok(())
        }
        Command::Wit { out, ts: false } => wit(out.as_deref()),
    }
}

/// `kelp wit`: the contract compiled into this binary, so it is at hand without a checkout.
fn wit(out: Option<&std::path::Path>) -> Result<()> {
    use kelp_runtime::components::{ALGA_WIT, KELP_WIT};
    let Some(dir) = out else {
        print!("// wit/deps/alga/extension.wit\n{ALGA_WIT}\n// wit/kelp.wit\n{KELP_WIT}");
        return Ok(());
    };
    let alga = dir.join("deps/alga/extension.wit");
    std::fs::create_dir_all(alga.parent().expect("a parent"))?;
    std::fs::write(&alga, ALGA_WIT)?;
    std::fs::write(dir.join("kelp.wit"), KELP_WIT)?;
    println!("{}\n{}", dir.join("kelp.wit").display(), alga.display());
    Ok(())
}
