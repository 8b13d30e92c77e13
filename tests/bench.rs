//! `weir bench orders-csv`, `weir bench window-csv` and `weir report`, run as a user runs them.

mod support;

use std::collections::BTreeSet;
use support::weir;

#[test]
fn the_csv_window_job_counts_every_window_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("orders.csv");
    let csv_arg = csv.to_str().unwrap();
    let out = weir(&[
        "bench",
        "orders-csv",
        "--out",
        csv_arg,
        "--events",
        "20000",
        "--keys",
        "300",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The windows the file holds, counted here without the engine: one per customer and
    // 5-minute slot of event time that has at least one order.
    let text = std::fs::read_to_string(&csv).unwrap();
    let windows: BTreeSet<(String, i64)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "line {l:?}");
            let ts: i64 = f[2].parse().unwrap();
            (f[0].to_string(), ts.div_euclid(300_000))
        })
        .collect();
    assert_eq!(text.lines().count(), 20_000);
    let out = weir(&["bench", "window-csv", "--input", csv_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures["events"], 20_000);
    assert_eq!(figures["windows"], windows.len() as u64);
    assert!(figures["events_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_malformed_line_fails_the_run_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "customer-1,10.00,1000\ncustomer-2,ten,2000\n").unwrap();
    let out = weir(&["bench", "window-csv", "--input", csv.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("total_amount"),
        "{err}"
    );
    let long = dir.path().join("long.csv");
    std::fs::write(&long, format!("customer-1,{},1\n", "9".repeat(1_000))).unwrap();
    let out = weir(&["bench", "window-csv", "--input", long.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 256"));
}

/// `weir bench real` runs two models on this machine (a broker process, crashes included),
/// then `weir report` writes its figures beside the simulated ones.
#[test]
fn the_report_is_written_from_scratch_with_its_charts() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("models-real.json");
    let out = weir(&[
        "bench",
        "real",
        "--models",
        "pipelined,storm",
        "--rate",
        "100",
        "--feed-ms",
        "4000",
        "--dir",
        dir.path().join("runs").to_str().unwrap(),
        "--json",
        real.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    let figures = run["figures"].as_array().unwrap();
    assert_eq!(figures.len(), 6, "two models, three schedules: {stderr}");
    for f in figures {
        let (model, schedule) = (
            f["model"].as_str().unwrap(),
            f["schedule"].as_str().unwrap(),
        );
        let what = format!("{model} / {schedule}: {f}\n{stderr}");
        // The pipelined model is exactly once, Storm at least once: both pass their checker.
        assert_eq!(f["passed"], 1, "{what}");
        assert!(f["inputs"].as_u64().unwrap() >= 400, "{what}");
        assert!(f["inputs_per_s"].as_f64().unwrap() > 0.0, "{what}");
        if model == "pipelined" {
            assert_eq!(
                (&f["duplicates"], &f["losses"], &f["wrong"]),
                (&0.into(), &0.into(), &0.into()),
                "{what}"
            );
        }
        match schedule {
            "backlog" => assert!(f["latency_ms"].is_null(), "{what}"),
            _ => assert!(f["latency_ms"]["count"].as_u64().unwrap() > 0, "{what}"),
        }
        if schedule == "shared faults" {
            assert!(f["recovery_ms"]["count"].as_u64().unwrap() >= 1, "{what}");
        }
    }
    let out_dir = dir.path().join("reports");
    let missing = dir.path().join("nothing-here");
    let out = weir(&[
        "report",
        "--seeds",
        "0..1",
        "--out",
        out_dir.to_str().unwrap(),
        "--peers",
        missing.to_str().unwrap(),
        "--criterion",
        missing.to_str().unwrap(),
        "--real",
        real.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(out_dir.join("framework-comparison.md")).unwrap();
    for row in [
        "| order-totals | pipelined |",
        "| order-totals | micro-batch |",
        "| order-totals | kafka-streams |",
        "| order-totals | storm |",
        "| nexmark-q7 | storm |",
        "| Flink | Very Low | Very High |",
        "## On this machine",
        "| order-totals | storm | shared faults | 1/1 |",
        "Backlog of `order-totals`: storm read",
    ] {
        assert!(md.contains(row), "the report has no {row:?}");
    }
    // Sections whose inputs are missing say so instead of showing figures.
    assert_eq!(md.matches("Not run here").count(), 2, "{md}");
    for chart in [
        "models-latency.svg",
        "models-recovery.svg",
        "models-checkpoint.svg",
        "models-real-latency.svg",
    ] {
        let svg = std::fs::read_to_string(out_dir.join("figures").join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
    }
}
