//! The `ordo` command: parses the command line, sets up logging and signals, and
//! hands over to the library. Everything worth testing lives in the library.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// jemalloc gives memory back to the OS once connections and messages are
/// gone (glibc malloc keeps its fragmented arenas).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options: a background thread returns unused pages to the OS
/// within about a second instead of when the next allocation happens to
/// trigger it.
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 63] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use ordo::auth::{ScramCredential, DEFAULT_ITERATIONS};
use ordo::config::{Config, LogFormat, LoggingConfig};
use tracing_subscriber::EnvFilter;

/// The configuration `ordo` and `ordo run` use when not given `--config`, if it
/// exists in the working directory.
const DEFAULT_CONFIG_PATH: &str = "conf/ordo.toml";

/// Ordo, an AMQP 1.0 message broker for ordered, exclusive and grouped
/// consumption.
///
/// With no command, runs the broker as `ordo run` does. Configuration keys can
/// be overridden by environment variables ORDO_<SECTION>__<KEY>, e.g.
/// ORDO_LISTENER__PORT=5673; see docs/CONFIG.md.
#[derive(Parser)]
#[command(name = "ordo", version)]
struct Cli {
    /// What to do; `run` when left out.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Run the broker until SIGTERM or SIGINT (Ctrl-C).
    Run(RunArgs),
    /// Check a configuration file, with ORDO_* environment overrides applied as
    /// `run` would: prints "ok", or every problem found and exits with status 1.
    CheckConfig {
        /// The configuration file to check.
        file: PathBuf,
    },
    /// Print the commented default configuration (conf/ordo.toml), a starting
    /// point for your own.
    PrintDefaultConfig,
    /// Read a password from standard input (one line) and print the
    /// SCRAM-SHA-256 credential to put in a [[users]] entry's `password`.
    HashPassword {
        /// PBKDF2 iterations: the cost of each guess for someone who steals the
        /// configuration (and of each login).
        #[arg(long, value_name = "N", default_value_t = DEFAULT_ITERATIONS,
              value_parser = clap::value_parser!(u32).range(1..))]
        iterations: u32,
    },
    /// Send messages to an address (a data-section body each).
    Send(ordo::tools::cli::SendArgs),
    /// Receive messages from an address and print their bodies, one per line.
    Receive(ordo::tools::cli::ReceiveArgs),
    /// List queues with their depth, consumers and groups (admin API).
    Queues(ordo::tools::admin_cli::AdminArgs),
    /// List a queue's message groups: owner, queued, unsettled, held.
    Groups {
        /// The queue.
        queue: String,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// List consumers (of one queue, or of every queue): priority, credit,
    /// unsettled, active, connection.
    Consumers {
        /// The queue (default: every queue).
        queue: Option<String>,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// List open connections: peer, user, container-id, sessions, links.
    Connections(ordo::tools::admin_cli::AdminArgs),
    /// Close a connection (the client gets amqp:connection:forced).
    CloseConnection {
        /// The connection's id (`ordo connections`).
        id: u64,
        /// Told to the client in the close.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// List topics and their subscriptions.
    Topics(ordo::tools::admin_cli::AdminArgs),
    /// Move a queue's waiting messages, oldest first, to another address,
    /// or (without --to) each back to its original address (a DLQ's).
    Move {
        /// The queue.
        queue: String,
        /// The address to move to (default: each message's original one).
        #[arg(long)]
        to: Option<String>,
        /// Move at most this many.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// Change a queue's run-time settings, e.g. `max-length=1000`.
    SetQueue {
        /// The queue.
        queue: String,
        /// KEY=VALUE pairs, as in the config's queue settings.
        #[arg(required = true)]
        settings: Vec<String>,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// Remove every waiting message of a queue.
    Purge {
        /// The queue.
        queue: String,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// Spread a queue's groups evenly over its consumers (hand-over rules of
    /// docs/GROUPS.md).
    Rebalance {
        /// The queue.
        queue: String,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// Let a group held at a poison message go on.
    Release {
        /// The queue.
        queue: String,
        /// The held group.
        group: String,
        #[command(flatten)]
        admin: ordo::tools::admin_cli::AdminArgs,
    },
    /// Benchmark tools: `bench run` (throughput, latency, CPU, loss) and
    /// `bench fsync` (the durable reference). See docs/PERFORMANCE.md.
    #[command(subcommand)]
    Bench(ordo::tools::cli::BenchCommand),
}

/// Options of `ordo run`.
#[derive(Args, Default)]
struct RunArgs {
    /// Configuration file. Default: conf/ordo.toml if it exists in the working
    /// directory, else the built-in default (`ordo print-default-config`).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on HOST:PORT instead of the configured [listener] address and
    /// port. Port 0 picks a free port; the log line "listening on HOST:PORT" and
    /// --port-file tell which. IPv6 hosts go in brackets: [::1]:5672.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    listen: Option<ListenAddr>,
    /// Keep the message store in DIR instead of the configured [store] path.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Once listening, write the bound address (HOST:PORT) to FILE, and the
    /// amqps address on a second line when TLS is on.
    /// The file appears whole (written aside, then renamed) and is removed on a
    /// clean exit, so a script can wait for it.
    #[arg(long, value_name = "FILE")]
    port_file: Option<PathBuf>,
    /// Once listening, write the admin (HTTP) listener's address to FILE, as
    /// --port-file does.
    #[arg(long, value_name = "FILE")]
    admin_port_file: Option<PathBuf>,
}

/// A `--listen` value.
#[derive(Clone, Debug)]
struct ListenAddr {
    /// Host name or IP address, brackets removed.
    host: String,
    /// TCP port, 0 for any free one.
    port: u16,
}

fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or("expected HOST:PORT, such as 127.0.0.1:5672")?;
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .strip_suffix(']')
            .ok_or("an opening [ needs a closing ]")?,
        None if host.contains(':') => {
            return Err("write IPv6 addresses in brackets, such as [::1]:5672".to_owned())
        }
        None => host,
    };
    if host.is_empty() {
        return Err("the host is missing, as in 127.0.0.1:5672".to_owned());
    }
    let port = port
        .parse()
        .map_err(|_| format!("`{port}` is not a port number (0 to 65535)"))?;
    Ok(ListenAddr {
        host: host.to_owned(),
        port,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => run(args),
        Command::CheckConfig { file } => return check_config(&file),
        Command::PrintDefaultConfig => write_stdout(Config::DEFAULT_TOML),
        Command::HashPassword { iterations } => hash_password(iterations),
        Command::Send(args) => tool(ordo::tools::cli::send(args)),
        Command::Receive(args) => tool(ordo::tools::cli::receive(args)),
        Command::Bench(command) => tool(ordo::tools::cli::bench(command)),
        Command::Queues(admin) => admin_tool(ordo::tools::admin_cli::queues(&admin)),
        Command::Groups { queue, admin } => {
            admin_tool(ordo::tools::admin_cli::groups(&admin, &queue))
        }
        Command::Consumers { queue, admin } => {
            admin_tool(ordo::tools::admin_cli::consumers(&admin, queue.as_deref()))
        }
        Command::Connections(admin) => admin_tool(ordo::tools::admin_cli::connections(&admin)),
        Command::CloseConnection { id, reason, admin } => admin_tool(
            ordo::tools::admin_cli::close_connection(&admin, id, reason.as_deref()),
        ),
        Command::Topics(admin) => admin_tool(ordo::tools::admin_cli::topics(&admin)),
        Command::Move {
            queue,
            to,
            limit,
            admin,
        } => admin_tool(ordo::tools::admin_cli::move_messages(
            &admin,
            &queue,
            to.as_deref(),
            limit,
        )),
        Command::SetQueue {
            queue,
            settings,
            admin,
        } => admin_tool(ordo::tools::admin_cli::set_queue(&admin, &queue, &settings)),
        Command::Purge { queue, admin } => {
            admin_tool(ordo::tools::admin_cli::purge(&admin, &queue))
        }
        Command::Rebalance { queue, admin } => {
            admin_tool(ordo::tools::admin_cli::rebalance(&admin, &queue))
        }
        Command::Release {
            queue,
            group,
            admin,
        } => admin_tool(ordo::tools::admin_cli::release(&admin, &queue, &group)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ordo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The result of an admin command.
fn admin_tool(result: Result<(), ordo::tools::admin_cli::AdminError>) -> anyhow::Result<()> {
    Ok(result?)
}

/// Runs a client tool on a two-thread runtime.
fn tool(
    future: impl Future<Output = Result<(), ordo::tools::cli::ToolError>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(future)?;
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let path = args.config.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        default.is_file().then_some(default)
    });
    let mut config = Config::read_with_env(path.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listener.address = listen.host;
        config.listener.port = listen.port;
    }
    if let Some(dir) = args.data_dir {
        config.store.path = dir;
    }
    config.validate()?;
    init_tracing(&config.logging)?;
    let source = path.as_ref().map_or_else(
        || "built-in default".to_owned(),
        |p| p.display().to_string(),
    );
    tracing::info!(config = %source, version = env!("CARGO_PKG_VERSION"), "starting Ordo");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ordo")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(
        config,
        path.as_deref(),
        args.port_file.as_deref(),
        args.admin_port_file.as_deref(),
    ))
}

/// Binds, announces the address, and serves until a signal.
async fn serve(
    config: Config,
    config_path: Option<&Path>,
    port_file: Option<&Path>,
    admin_port_file: Option<&Path>,
) -> anyhow::Result<()> {
    // Before binding, so a signal sent as soon as the address is known is not lost.
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    for file in [port_file, admin_port_file].into_iter().flatten() {
        // A file left by an earlier run would announce the wrong port.
        remove_if_present(file)?;
    }
    let server = ordo::server::Server::bind(config).await?;
    reload_on_hangup(server.reloader(), config_path.map(Path::to_path_buf))?;
    let addr: SocketAddr = server.local_addr();
    tracing::info!(%addr, "listening on {addr}");
    let tls_addr = server.tls_addr();
    if let Some(tls_addr) = tls_addr {
        tracing::info!(addr = %tls_addr, "listening for amqps on {tls_addr}");
    }
    let admin_addr = server.admin_addr();
    if let Some(admin_addr) = admin_addr {
        tracing::info!(addr = %admin_addr, "admin API listening on http://{admin_addr}");
    }
    if let (Some(file), Some(admin_addr)) = (admin_port_file, admin_addr) {
        write_port_file(file, admin_addr, None)?;
    }
    if let Some(port_file) = port_file {
        write_port_file(port_file, addr, tls_addr)?;
    }
    server.run(shutdown).await?;
    for file in [port_file, admin_port_file].into_iter().flatten() {
        remove_if_present(file)?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// On SIGHUP, reads the configuration file again and applies what may
/// change at run time (users, access rules); an invalid file is logged and
/// changes nothing.
#[cfg(unix)]
fn reload_on_hangup(reloader: ordo::server::Reloader, path: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let loaded = Config::read_with_env(path.as_deref(), std::env::vars())
                .map_err(anyhow::Error::from)
                .and_then(|c| c.validate().map(|()| c).map_err(anyhow::Error::from));
            match loaded {
                Ok(config) => {
                    if let Err(e) = reloader.apply(&config) {
                        tracing::error!(error = %e, "reload refused: nothing changed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "reload refused: nothing changed"),
            }
        }
    });
    Ok(())
}

/// Without signals there is nothing to reload on.
#[cfg(not(unix))]
fn reload_on_hangup(_: ordo::server::Reloader, _: Option<PathBuf>) -> anyhow::Result<()> {
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "ctrl-c", "shutting down");
        }
    })
}

/// Logs to stderr, filtered by `RUST_LOG` when set, else by `logging.level`.
fn init_tracing(logging: &LoggingConfig) -> anyhow::Result<()> {
    let (directives, source) = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => (directives, "RUST_LOG"),
        _ => (logging.level.clone(), "logging.level"),
    };
    let mut filter = EnvFilter::try_new(&directives)
        .with_context(|| format!("{source} is not a valid filter"))?;
    // The store engine narrates every recovery step at info; keep its
    // warnings and errors unless the filter names it.
    for quiet in ["fjall", "lsm_tree"] {
        if !directives.contains(quiet) {
            filter = filter.add_directive(format!("{quiet}=warn").parse()?);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match logging.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Writes `addr` to `path` so that readers never see a partial file: written to
/// a temporary file in the same directory, then renamed over `path`.
fn write_port_file(
    path: &Path,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("--port-file {} does not name a file", path.display()))?;
    let mut temporary = name.to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary);
    let mut text = format!("{addr}\n");
    if let Some(tls_addr) = tls_addr {
        text.push_str(&format!("{tls_addr}\n"));
    }
    std::fs::write(&temporary, text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| {
        format!(
            "cannot rename {} to {}",
            temporary.display(),
            path.display()
        )
    })
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// `ordo check-config`: "ok" and status 0, or every problem and status 1.
fn check_config(file: &Path) -> ExitCode {
    match Config::load(Some(file)) {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let problems = error.problems();
            let noun = if problems.len() == 1 {
                "problem"
            } else {
                "problems"
            };
            println!("{}: {} {noun}", file.display(), problems.len());
            for problem in problems {
                println!("  - {problem}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `ordo hash-password`: one line of stdin in, one credential out.
fn hash_password(iterations: u32) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (shown as you type; pipe it in to avoid that): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input: give it one line, as in `echo 'secret' | ordo hash-password`");
    }
    write_stdout(&format!(
        "{}\n",
        ScramCredential::generate(password, iterations)
    ))
}

/// Writes to stdout, treating a closed pipe (`| head`) as success.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        let a = parse_listen("127.0.0.1:0").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 0));
        let a = parse_listen("localhost:5673").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("localhost", 5673));
        let a = parse_listen("[::1]:5672").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 5672));
        for bad in [
            "5672",
            ":5672",
            "::1:5672",
            "[::1:5672",
            "host:port",
            "host:70000",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
