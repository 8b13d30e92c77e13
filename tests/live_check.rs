//! `weir check` against `weir cluster`, with brokers paused and killed during the run.
//!
//! The same fault sequence runs against two clusters. Brokers 1 and 2 are paused (SIGSTOP)
//! for 3 s while broker 0 goes on alone. Then broker 0 is killed (SIGKILL) and the other two
//! resume. The cluster restarts broker 0 only after a backoff longer than the controller's
//! session timeout, so that its partitions get new leaders from the replicas that were paused.
//!
//! - With acks=all, nothing broker 0 held alone was acknowledged. The queue and transactional
//!   checks must find nothing.
//! - With acks=1, broker 0 acknowledged records that no other replica had. Its restart
//!   truncates them away, and the queue check must report them lost or overwritten.

mod support;

use std::process::{Command, Output};
use std::time::Duration;
use support::{LocalCluster, signal, start_cluster};

/// Longer than the brokers' 6 s session timeout.
const RESTART_BACKOFF_MS: &str = "8000";

/// Runs `weir check ARGS` in the background while the fault sequence hits `cluster`.
fn checks_under_faults(cluster: &LocalCluster, checks: &[&[&str]]) -> Vec<Output> {
    let children: Vec<_> = checks
        .iter()
        .map(|args| {
            Command::new(env!("CARGO_BIN_EXE_weir"))
                .args([
                    "check",
                    "--bootstrap",
                    &cluster.bootstrap,
                    "--duration",
                    "12s",
                ])
                .args(*args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("weir check starts")
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let followers = [cluster.pids[1], cluster.pids[2]];
    signal("STOP", &followers);
    std::thread::sleep(Duration::from_secs(3));
    signal("KILL", &[cluster.pids[0]]);
    std::thread::sleep(Duration::from_millis(500));
    signal("CONT", &followers);
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("weir check ends"))
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_finds_nothing_against_a_healthy_cluster_with_acks_all() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path(), 3, &["--restart-backoff-ms", RESTART_BACKOFF_MS]);
    let outs = checks_under_faults(
        &cluster,
        &[
            &["--workload", "queue", "--acks", "all"],
            &["--workload", "transactions"],
        ],
    );
    for out in &outs {
        let t = text(out);
        assert!(out.status.success(), "anomalies on a healthy cluster:\n{t}");
        assert!(t.contains("no anomalies found"), "{t}");
    }
    let queue = text(&outs[0]);
    let ok: u64 = queue
        .split(" ok,")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("a count of acknowledged sends");
    assert!(ok > 100, "the workload made progress: {queue}");
    assert!(text(&outs[1]).contains(" committed,"), "{}", text(&outs[1]));
    let status = cluster.process.terminate();
    assert!(status.success(), "weir cluster exited with {status}");
}

#[test]
fn check_reports_lost_writes_with_acks_1() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(
        dir.path(),
        3,
        &[
            "--restart-backoff-ms",
            RESTART_BACKOFF_MS,
            "--unclean-leader-election",
        ],
    );
    let outs = checks_under_faults(&cluster, &[&["--workload", "queue", "--acks", "1"]]);
    let t = text(&outs[0]);
    assert_eq!(outs[0].status.code(), Some(1), "{t}");
    // Broker 0's acknowledged records are gone: missing from the log, or replaced at their
    // offsets by what the new leader appended.
    assert!(
        t.contains("lost write") || t.contains("inconsistent offset"),
        "{t}"
    );
}
