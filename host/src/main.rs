//! The `switchyard` command line: `serve`, `config check`, `plugin run|check`,
//! `keys`, `listen`, and the operator commands that talk to a running
//! router over its HTTP API (`events`, `endpoints`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use switchyard::config::Config;
use switchyard::plugins::{self, RuntimeSettings};
use switchyard::signing::{KeygenKey, Secret};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Webhook event router: durable ingest, wasm plugins, signed delivery with retry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Serve {
        /// Configuration file.
        #[arg(short, long, default_value = "router.toml")]
        config: PathBuf,
        /// JSON log lines (overrides `[server] log_format`).
        #[arg(long)]
        log_json: bool,
    },
    /// Webhook events of a running router (over its HTTP API).
    #[command(subcommand)]
    Events(switchyard::cli::EventsCmd),
    /// Webhook endpoints of a running router (over its HTTP API).
    #[command(subcommand)]
    Endpoints(switchyard::cli::EndpointsCmd),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Plugin author tools.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Keys and secrets.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// A local receiver that verifies and prints deliveries.
    Listen {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Standard Webhooks secret (whsec_…) to verify `webhook-signature`.
        #[arg(long, env = "SWITCHYARD_LISTEN_SECRET")]
        secret: Option<String>,
        /// Keygen verify key (hex) to verify `Keygen-Signature`.
        #[arg(long)]
        keygen_public_key: Option<String>,
        /// Status to answer to valid deliveries.
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Print each body as well.
        #[arg(long)]
        body: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file and report every error with its location.
    Check {
        #[arg(short, long, default_value = "router.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Run one event through a plugin in the server's sandbox; prints the outcome as JSON.
    Run {
        /// A .wasm path, or a plugin name looked up in --plugins-dir.
        plugin: String,
        /// The event, in the ingest API's native form.
        #[arg(long)]
        event: PathBuf,
        /// Plugin configuration: JSON text or @file.
        #[arg(long)]
        config: Option<String>,
        #[command(flatten)]
        sandbox: SandboxArgs,
        /// Where plugin names are looked up.
        #[arg(long, default_value = "plugins/dist")]
        plugins_dir: PathBuf,
    },
    /// Write a new plugin project (source, WIT, helpers, README, sample event).
    New {
        /// The plugin's name (also its .wasm file's stem), e.g. `my-filter`.
        name: String,
        /// rust, python or js.
        #[arg(long, default_value = "rust")]
        lang: plugins::scaffold::Lang,
        /// Where to write it (default: ./<name>); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Validate a component against the plugin world; prints its exports, size and compile time.
    Check {
        path: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

#[derive(Args)]
struct SandboxArgs {
    /// CPU deadline per call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    deadline_ms: u64,
    /// Memory cap, in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mib: usize,
    /// Cache of compiled components, so a second run of a large (Python,
    /// JavaScript) component loads in milliseconds. Default:
    /// `$XDG_CACHE_HOME/switchyard/plugin-cache` (or `~/.cache/...`).
    #[arg(long, env = "SWITCHYARD_PLUGIN_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Compile every time (no cache).
    #[arg(long)]
    no_cache: bool,
}

impl SandboxArgs {
    fn settings(&self) -> RuntimeSettings {
        let default_cache = || {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(base.join("switchyard/plugin-cache"))
        };
        RuntimeSettings {
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            memory_limit: self.memory_mib << 20,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.clone().or_else(default_cache)
            },
            ..RuntimeSettings::default()
        }
    }
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Print the Keygen verify key (hex) of an account, for receivers to configure.
    Public {
        #[arg(long)]
        account: String,
        #[arg(short, long, default_value = "router.toml")]
        config: PathBuf,
    },
    /// Generate a new Keygen ed25519 signing key (prints the seed and the verify key).
    Generate,
    /// Generate a new Standard Webhooks secret (whsec_…).
    Secret,
}

// mimalloc instead of glibc malloc: the ingest and delivery paths allocate a
// lot (JSON, hyper buffers, sled nodes); measured in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Serve { config, log_json } => {
            if log_json {
                // The first subscriber installed wins; serve's own init is then a no-op.
                switchyard::telemetry::init_logging(switchyard::config::LogFormat::Json);
            }
            tokio_runtime()?.block_on(switchyard::app::serve(&config))?;
        }
        Command::Events(cmd) => switchyard::cli::run_events(cmd)?,
        Command::Endpoints(cmd) => switchyard::cli::run_endpoints(cmd)?,
        Command::Config(ConfigCmd::Check { config }) => return config_check(&config),
        Command::Plugin(PluginCmd::Run {
            plugin,
            event,
            config,
            sandbox,
            plugins_dir,
        }) => {
            init_cli_logging();
            let out = plugins::cli::cli_run(
                &plugin,
                &event,
                config.as_deref(),
                sandbox.settings(),
                Some(&plugins_dir),
            )?;
            print_json(&out);
        }
        Command::Plugin(PluginCmd::New { name, lang, dir }) => {
            let dir = plugins::scaffold::create(&name, lang, dir.as_deref())?;
            println!(
                "wrote plugin {name:?} ({}) in {}: build it with the first command block of {}",
                format!("{lang:?}").to_lowercase(),
                dir.display(),
                dir.join("README.md").display()
            );
        }
        Command::Plugin(PluginCmd::Check { path, sandbox }) => {
            init_cli_logging();
            let out = plugins::cli::cli_check(&path, sandbox.settings())?;
            print_json(&out);
        }
        Command::Keys(KeysCmd::Public { account, config }) => {
            let c = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let a = c.account(&account).ok_or_else(|| {
                anyhow::anyhow!("account {account:?} is not in {}", config.display())
            })?;
            let key = a.keygen_key.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "account {account:?} has no keygen_signing_key; generate one with `switchyard keys generate`"
                )
            })?;
            println!("{}", key.public_hex());
        }
        Command::Keys(KeysCmd::Generate) => {
            let k = KeygenKey::generate();
            print_json(
                &serde_json::json!({"keygen_signing_key": k.seed_hex(), "public_key": k.public_hex()}),
            );
        }
        Command::Keys(KeysCmd::Secret) => println!("{}", Secret::generate().encode()),
        Command::Listen {
            listen,
            secret,
            keygen_public_key,
            status,
            body,
        } => {
            let secret = secret
                .map(|s| Secret::parse(&s))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
            tokio_runtime()?.block_on(switchyard::listen::run(
                switchyard::listen::ListenOptions {
                    listen,
                    secret,
                    keygen_public_key,
                    status,
                    show_body: body,
                },
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init_cli_logging() {
    // Plugin log lines go to stderr; stdout stays one JSON object.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard::plugins=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn config_check(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(c) => {
            let mut warnings = Vec::new();
            let dir = &c.plugins.dir;
            for e in &c.endpoints {
                for p in &e.plugins {
                    if !dir.join(format!("{}.wasm", p.name)).is_file() {
                        warnings.push(format!(
                            "endpoint {:?} uses plugin {:?}, but {} does not exist yet (deliveries will fail until it does)",
                            e.id,
                            p.name,
                            dir.join(format!("{}.wasm", p.name)).display()
                        ));
                    }
                }
            }
            println!(
                "{}: ok ({} account(s), {} endpoint(s))",
                path.display(),
                c.accounts.len(),
                c.endpoints.len()
            );
            for w in warnings {
                println!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprint!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
