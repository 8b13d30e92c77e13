//! The simulated world of one run: a turmoil simulation, the disks of its servers, the
//! recorder that clients write their history into, and the nemesis that applies a fault plan.

use crate::fault::{BASE_LATENCY_MAX_MS, Fault, FaultPlan, Topology};
use crate::history::History;
use crate::trace::Trace;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use weir_engine::runtime::Throttle;
use weir_seams::disk::DiskFaults;
use weir_seams::rng;

/// The simulated wall clock at the start of every run: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// Shared by the clients of a run: the history and the trace.
#[derive(Default)]
pub struct Recorder {
    /// Client operations.
    pub history: History,
    /// Every event, hashed.
    pub trace: Trace,
}

/// A handle clients use to record what they do.
pub type Rec = Rc<RefCell<Recorder>>;

thread_local! {
    /// When a live run (against a real cluster, see [`crate::live`]) started on this thread.
    static LIVE_START: std::cell::Cell<Option<tokio::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Milliseconds since the run started: simulated inside a simulation, and wall-clock time
/// since [`start_live_clock`] in a live run.
pub fn now_ms() -> u64 {
    match turmoil::sim_elapsed() {
        Some(d) => d.as_millis() as u64,
        None => LIVE_START.with(|s| s.get().map_or(0, |t| t.elapsed().as_millis() as u64)),
    }
}

/// Starts the clock of a live run on this thread: [`now_ms`] counts from here.
pub fn start_live_clock() {
    LIVE_START.with(|s| s.set(Some(tokio::time::Instant::now())));
}

/// Knobs of the simulated world that a seed chooses.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorldConfig {
    /// Crashes tear pending writes at this block size, if set.
    pub torn_block_bytes: Option<u64>,
    /// Range of fsync latency, in milliseconds.
    pub sync_latency_ms: (u64, u64),
    /// Hard stop for the whole run, in simulated milliseconds.
    pub limit_ms: u64,
}

/// One run's world.
pub struct Env<'a> {
    /// The turmoil simulation.
    pub sim: turmoil::Sim<'a>,
    /// The recorder shared with the clients.
    pub rec: Rec,
    topo: Topology,
    disks: BTreeMap<String, DiskFaults>,
    throttles: BTreeMap<String, Throttle>,
    down: BTreeSet<String>,
    /// Directed links the nemesis has cut or is holding, as (from, to).
    links: BTreeMap<(String, String), LinkFault>,
    seed: u64,
}

/// What the nemesis has done to one direction of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkFault {
    Cut,
    Held,
}

impl<'a> Env<'a> {
    /// Builds the simulation for `seed`.
    pub fn new(seed: u64, topo: Topology, world: &WorldConfig) -> Self {
        let mut b = turmoil::Builder::new();
        b.rng_seed(seed)
            .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
            .simulation_duration(Duration::from_millis(world.limit_ms))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(Duration::from_millis(0))
            .max_message_latency(Duration::from_millis(BASE_LATENCY_MAX_MS));
        if let Some(block) = world.torn_block_bytes {
            b.fs().block_size(block);
        }
        let sim = b.build();
        let mut disks = BTreeMap::new();
        for s in &topo.servers {
            let d = DiskFaults::new(rng::derive(seed, &format!("disk/{s}")));
            d.set_sync_latency_ms(world.sync_latency_ms.0, world.sync_latency_ms.1);
            disks.insert(s.clone(), d);
        }
        let throttles = topo
            .servers
            .iter()
            .map(|s| (s.clone(), Throttle::default()))
            .collect();
        Self {
            sim,
            rec: Rc::new(RefCell::new(Recorder::default())),
            topo,
            disks,
            throttles,
            down: BTreeSet::new(),
            links: BTreeMap::new(),
            seed,
        }
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The fault switchboard of server `node`'s disk.
    pub fn disk(&self, node: &str) -> DiskFaults {
        self.disks
            .get(node)
            .unwrap_or_else(|| panic!("{node} is not a server"))
            .clone()
    }

    /// The per-row delay knob of server `node`'s stream tasks.
    pub fn throttle(&self, node: &str) -> Throttle {
        self.throttles
            .get(node)
            .unwrap_or_else(|| panic!("{node} is not a server"))
            .clone()
    }

    fn note(&self, what: String) {
        let at = self.sim.elapsed().as_millis() as u64;
        self.rec.borrow_mut().trace.record(at, "nemesis", what);
    }

    fn each_pair(&self, a: &[String], b: &[String], mut f: impl FnMut(&str, &str)) {
        for x in a {
            for y in b {
                if x != y {
                    f(x, y);
                }
            }
        }
    }

    fn mark(&mut self, a: &[String], b: &[String], fault: LinkFault, both_ways: bool) {
        for x in a {
            for y in b.iter().filter(|y| *y != x) {
                self.links.insert((x.clone(), y.clone()), fault);
                if both_ways {
                    self.links.insert((y.clone(), x.clone()), fault);
                }
            }
        }
    }

    /// Crashes `node` as a machine dies: it sends nothing on the way down.
    ///
    /// turmoil drops the host's tasks, and with them its sockets, in an order that follows
    /// tokio's process-wide task ids, and each dropped socket sends a FIN or RST whose latency
    /// is drawn from the run's RNG. Sent, those would make a run depend on what ran earlier in
    /// the process. So the node's outgoing links are cut for the instant of the crash (which
    /// also drops what it had in flight, as a power loss would) and then put back as they were.
    fn crash_silently(&mut self, node: &str) {
        let others: Vec<String> = self
            .topo
            .servers
            .iter()
            .chain(&self.topo.clients)
            .filter(|h| h.as_str() != node)
            .cloned()
            .collect();
        let before: Vec<(String, Option<LinkFault>)> = others
            .into_iter()
            .map(|y| {
                let f = self.links.get(&(node.to_string(), y.clone())).copied();
                (y, f)
            })
            .collect();
        for (y, f) in &before {
            if *f != Some(LinkFault::Cut) {
                self.sim.partition_oneway(node, y.as_str());
            }
        }
        self.sim.crash(node);
        for (y, f) in &before {
            match f {
                None => self.sim.repair_oneway(node, y.as_str()),
                Some(LinkFault::Held) => self.sim.hold(node, y.as_str()),
                Some(LinkFault::Cut) => {}
            }
        }
    }

    /// Applies one fault now.
    pub fn apply(&mut self, fault: &Fault) {
        self.note(fault.to_string());
        match fault {
            Fault::Crash { node, garbage } => {
                if self.down.insert(node.clone()) {
                    self.disk(node).crashed(*garbage);
                    self.crash_silently(node);
                }
            }
            Fault::Restart { node } => {
                if self.down.remove(node) {
                    self.sim.bounce(node.as_str());
                }
            }
            Fault::Partition { a, b } => {
                self.each_pair(a, b, |x, y| self.sim.partition(x, y));
                self.mark(a, b, LinkFault::Cut, true);
            }
            Fault::PartitionOneWay { from, to } => {
                self.each_pair(from, to, |x, y| self.sim.partition_oneway(x, y));
                self.mark(from, to, LinkFault::Cut, false);
            }
            Fault::Hold { a, b } => {
                self.each_pair(a, b, |x, y| self.sim.hold(x, y));
                self.mark(a, b, LinkFault::Held, true);
            }
            Fault::HealNetwork => {
                let all: Vec<String> = self
                    .topo
                    .servers
                    .iter()
                    .chain(&self.topo.clients)
                    .cloned()
                    .collect();
                self.each_pair(&all, &all, |x, y| {
                    self.sim.release(x, y);
                    self.sim.repair(x, y);
                });
                self.links.clear();
            }
            Fault::Latency { max_ms } => self
                .sim
                .set_max_message_latency(Duration::from_millis(*max_ms)),
            Fault::DiskErrors { node, on } => self.disk(node).set_failing(*on),
            Fault::Slow { node, row_delay_us } => {
                self.throttle(node).set_row_delay_us(*row_delay_us);
            }
        }
    }

    /// Heals everything: restarts crashed servers, heals the network, resets latency and stops
    /// disk errors.
    pub fn heal(&mut self) {
        self.note("heal everything".into());
        for node in self.topo.servers.clone() {
            if self.throttle(&node).row_delay_us() > 0 {
                self.apply(&Fault::Slow {
                    node: node.clone(),
                    row_delay_us: 0,
                });
            }
            self.apply(&Fault::DiskErrors {
                node: node.clone(),
                on: false,
            });
            self.apply(&Fault::Restart { node });
        }
        self.apply(&Fault::HealNetwork);
        self.apply(&Fault::Latency {
            max_ms: BASE_LATENCY_MAX_MS,
        });
    }

    /// Steps the simulation, applying `plan` as its faults fall due and healing at `heal_at_ms`,
    /// until every client has finished. Errs if a host or client fails, or if the run reaches
    /// its time limit first.
    pub fn run(&mut self, plan: &FaultPlan, heal_at_ms: u64) -> Result<(), String> {
        let mut next = 0;
        let mut healed = false;
        loop {
            let now = self.sim.elapsed().as_millis() as u64;
            while next < plan.faults.len()
                && plan.faults[next].at_ms <= now
                && plan.faults[next].at_ms < heal_at_ms
            {
                let f = plan.faults[next].fault.clone();
                self.apply(&f);
                next += 1;
            }
            if !healed && now >= heal_at_ms {
                self.heal();
                healed = true;
            }
            match self.sim.step() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}
