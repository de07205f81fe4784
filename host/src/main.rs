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
enum StoreCmd {
    /// Copy an embedded (sled) store into an empty PostgreSQL database, with
    /// its pending deliveries, endpoints and history. Stop the router first;
    /// then start the nodes with `[store] backend = "postgres"`.
    Copy {
        /// The router's `[server] data_dir` (the folder holding `store/`).
        #[arg(long)]
        from: PathBuf,
        /// PostgreSQL URL, e.g. postgres://switchyard@127.0.0.1:5432/switchyard.
        #[arg(long, env = "SWITCHYARD_DATABASE_URL", hide_env_values = true)]
        to: String,
    },
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
    /// Store tools.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Keygen tools.
    #[command(subcommand)]
    Keygen(KeygenCmd),
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
        /// The plugin's name in log lines and errors. Default: the name it
        /// gets in the plugins folder (the file stem; for a Cargo build
        /// artifact such as target/wasm32-wasip2/release/slack_notify.wasm,
        /// the crate's name, slack-notify).
        #[arg(long)]
        name: Option<String>,
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
enum KeygenCmd {
    /// Send a sample event to a router's Keygen source, signed as Keygen signs.
    Send(switchyard::keygen_send::SendArgs),
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
            name,
            event,
            config,
            sandbox,
            plugins_dir,
        }) => {
            init_cli_logging();
            match plugins::cli::cli_run(
                &plugin,
                name.as_deref(),
                &event,
                config.as_deref(),
                sandbox.settings(),
                Some(&plugins_dir),
            ) {
                Ok(out) => print_json(&out),
                // One JSON line on stdout like a success, the explanation
                // on stderr, and a failing exit status.
                Err(e) => {
                    print_json(&e.to_json());
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
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
        Command::Store(StoreCmd::Copy { from, to }) => {
            let rt = tokio::runtime::Runtime::new()?;
            let c = rt.block_on(switchyard::store::copy::run(&from, &to))?;
            println!(
                "done: {} events, {} deliveries ({} pending), {} attempts copied; start the routers with [store] backend = \"postgres\"",
                c.events, c.deliveries, c.pending, c.attempts
            );
        }
        Command::Keys(KeysCmd::Generate) => {
            let k = KeygenKey::generate();
            print_json(
                &serde_json::json!({"keygen_signing_key": k.seed_hex(), "public_key": k.public_hex()}),
            );
        }
        Command::Keygen(KeygenCmd::Send(args)) => switchyard::keygen_send::run(args)?,
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
        .with_ansi(switchyard::telemetry::stderr_colour())
        .with_writer(std::io::stderr)
        .try_init();
}

fn config_check(path: &Path) -> anyhow::Result<ExitCode> {
    use switchyard::plugins::{PluginRuntime, suggest};
    let c = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut warnings = Vec::new();
    if c.accounts.is_empty() {
        warnings.push(switchyard::app::NO_ACCOUNTS.to_string());
    }
    // The plugins the endpoints use are loaded and configured as `serve`
    // will (same sandbox); a configuration a plugin rejects is an error
    // with the endpoint's line, as `serve` would refuse to start.
    let dir = &c.plugins.dir;
    let present: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let p = e.path();
                    let name = p.file_name()?.to_str()?;
                    (name.ends_with(".wasm") && !name.starts_with('.'))
                        .then(|| p.file_stem()?.to_str().map(str::to_string))?
                })
                .collect()
        })
        .unwrap_or_default();
    let mut settings = switchyard::app::runtime_settings(&c);
    // The check is about configurations, not timing: a first, uncached
    // instantiation on a busy machine may take longer than a call's
    // deadline, which `serve` enforces on every call anyway.
    settings.deadline = settings.deadline.max(std::time::Duration::from_secs(2));
    if !c.server.data_dir.is_dir() {
        // No side effects on a fresh machine: compile without the cache.
        settings.cache_dir = None;
    }
    let runtime = PluginRuntime::new(settings)?;
    let mut wanted: Vec<&str> = c
        .endpoints
        .iter()
        .flat_map(|e| e.plugins.iter().map(|p| p.name.as_str()))
        .collect();
    wanted.sort();
    wanted.dedup();
    for name in wanted {
        let file = dir.join(format!("{name}.wasm"));
        if !file.is_file() {
            let users: Vec<String> = c
                .endpoints
                .iter()
                .filter(|e| e.plugins.iter().any(|p| p.name == name))
                .map(|e| {
                    c.endpoint_location(&e.account, &e.id)
                        .unwrap_or_else(|| e.id.clone())
                })
                .collect();
            let hint = match suggest::nearest(name, present.iter().map(String::as_str)) {
                Some(n) => format!("; did you mean {n:?}?"),
                None => String::new(),
            };
            warnings.push(format!(
                "{}: plugin {name:?}: {} does not exist (deliveries fail with not_loaded until it does){hint}",
                users.join(", "),
                file.display()
            ));
        } else if let Err(e) = runtime.load_file(&file) {
            warnings.push(format!(
                "plugin {name:?} ({}) does not load: {}: {} (serve keeps running without it; its deliveries fail with not_loaded)",
                file.display(),
                e.kind.as_str(),
                e.message
            ));
        }
    }
    let (_, errors) = switchyard::registry::Snapshot::build(&c, &[], &runtime);
    if !errors.is_empty() {
        let lines = switchyard::app::endpoint_errors(&c, &errors);
        eprintln!(
            "{} has {} endpoint(s) that cannot load:",
            path.display(),
            lines.len()
        );
        for l in lines {
            eprintln!("  {l}");
        }
        for w in warnings {
            eprintln!("warning: {w}");
        }
        return Ok(ExitCode::FAILURE);
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
