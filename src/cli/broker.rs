//! `weir broker`: one broker on real sockets and files.

use super::wall_ms;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use weir_broker::{Broker, BrokerConfig, Durability, Voter};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;

/// How long a starting broker may take to join its cluster, in seconds.
const JOIN_TIMEOUT_S: u64 = 120;

/// Settings of `weir broker`.
#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Address the Kafka listener binds (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// Directory of the broker's log and metadata; created if missing.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This broker's id.
    #[arg(long, default_value_t = 0)]
    pub node_id: i32,
    /// Every broker of the cluster as ID@HOST:PORT of its internal listener, this one
    /// included, comma-separated. Empty for a single broker.
    #[arg(long, value_delimiter = ',', value_parser = parse_voter)]
    pub voters: Vec<Voter>,
    /// Host clients are told to connect to; the listen host by default.
    #[arg(long)]
    pub advertised_host: Option<String>,
    /// Partitions of a topic created with -1 or auto-created.
    #[arg(long, default_value_t = 1)]
    pub default_partitions: i32,
    /// Replication factor of a topic created with -1, capped by the live brokers.
    #[arg(long, default_value_t = 1)]
    pub default_replication_factor: i16,
    /// How long the first generation of an empty group waits for more members to join
    /// (Kafka's `group.initial.rebalance.delay.ms`), in milliseconds.
    #[arg(long, default_value_t = 3_000)]
    pub group_initial_rebalance_delay_ms: u64,
    /// Topic creation and safety switches.
    #[command(flatten)]
    pub switches: Switches,
    /// Seed of the broker's random choices (election timeouts, ids); the clock by default.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Switches that `weir cluster` passes on to each of its brokers.
#[derive(Args, Debug, Clone)]
pub struct Switches {
    /// Create a topic when a client asks for metadata of an unknown one.
    #[arg(long)]
    pub auto_create_topics: bool,
    /// Unsafe: let a replica outside the ISR lead when the whole ISR is down.
    #[arg(long)]
    pub unclean_leader_election: bool,
    /// Unsafe: count records towards the high watermark once in the page cache, before fsync.
    #[arg(long)]
    pub page_cache_acks: bool,
}

impl Switches {
    /// The switches that are on, as `weir broker` arguments.
    pub fn to_args(&self) -> Vec<String> {
        [
            (self.auto_create_topics, "--auto-create-topics"),
            (self.unclean_leader_election, "--unclean-leader-election"),
            (self.page_cache_acks, "--page-cache-acks"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, flag)| flag.to_string())
        .collect()
    }
}

/// Parses `ID@HOST:PORT`.
fn parse_voter(s: &str) -> Result<Voter, String> {
    let (id, addr) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected ID@HOST:PORT"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected ID@HOST:PORT"))?;
    Ok(Voter {
        id: id.parse().map_err(|e| format!("{s:?}: broker id: {e}"))?,
        host: host.to_string(),
        internal_port: port.parse().map_err(|e| format!("{s:?}: port: {e}"))?,
    })
}

impl BrokerArgs {
    fn config(&self, advertised_port: u16) -> BrokerConfig {
        let listen_host = self
            .listen
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        BrokerConfig {
            node_id: self.node_id,
            advertised_host: self.advertised_host.clone().unwrap_or(listen_host),
            advertised_port,
            net: Net::Tokio,
            voters: self.voters.clone(),
            default_partitions: self.default_partitions,
            default_replication_factor: self.default_replication_factor,
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            auto_create_topics: self.switches.auto_create_topics,
            unclean_leader_election: self.switches.unclean_leader_election,
            durability: if self.switches.page_cache_acks {
                Durability::PageCache
            } else {
                Durability::Fsync
            },
            ..BrokerConfig::default()
        }
    }

    /// The internal listener's address: this broker's entry among the voters.
    fn internal_addr(&self) -> Result<Option<String>, String> {
        if self.voters.is_empty() {
            return Ok(None);
        }
        let me = self
            .voters
            .iter()
            .find(|v| v.id == self.node_id)
            .ok_or_else(|| format!("--voters does not list this broker (id {})", self.node_id))?;
        Ok(Some(format!("{}:{}", me.host, me.internal_port)))
    }
}

/// Runs the broker until SIGTERM or Ctrl-C.
pub fn run(args: BrokerArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    super::block_on("broker", runtime, serve(args))
}

async fn serve(args: BrokerArgs) -> Result<(), String> {
    let internal_addr = args.internal_addr()?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("data dir {}: {e}", args.data_dir.display()))?;
    let listener = Net::Tokio
        .bind(&args.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", args.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let internal = match &internal_addr {
        Some(a) => Some(
            Net::Tokio
                .bind(a)
                .await
                .map_err(|e| format!("bind internal {a}: {e}"))?,
        ),
        None => None,
    };
    let seed = args.seed.unwrap_or(wall_ms() as u64);
    let broker = Broker::open(
        args.config(bound.port()),
        Disk::real(&args.data_dir),
        Clock::starting_at(wall_ms()),
        weir_seams::rng::derive(seed, &format!("broker-{}", args.node_id)),
    )
    .await
    .map_err(|e| format!("open {}: {e}", args.data_dir.display()))?;
    if let Some(internal) = internal {
        let b = broker.clone();
        tokio::spawn(async move { b.serve_internal(internal).await });
    }
    tracing::info!(node_id = args.node_id, "waiting to join the cluster");
    broker
        .ready(Duration::from_secs(JOIN_TIMEOUT_S))
        .await
        .map_err(|e| e.to_string())?;
    let b = broker.clone();
    let serving = tokio::spawn(async move { b.serve(listener).await });
    // Scripts wait for this line, so it goes to stdout and is flushed at once.
    println!(
        "weir broker {} listening on {bound}{} data in {}",
        args.node_id,
        internal_addr
            .map(|a| format!(" internal {a}"))
            .unwrap_or_default(),
        args.data_dir.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        signal = termination() => tracing::info!(signal, "shutting down"),
        ended = serving => return Err(format!("stopped serving: {ended:?}")),
    }
    broker.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT, with the signal's name.
pub async fn termination() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still ends on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
