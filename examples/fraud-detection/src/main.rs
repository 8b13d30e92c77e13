//! The fraud-detection job as its own binary: `fraud-detection run --bootstrap HOST:PORT`
//! runs it on one machine; `jobmanager` and `taskmanager` run it distributed.

use fraud_detection::{Settings, Variant, build};

fn main() -> std::process::ExitCode {
    weir_engine::launch::main(|| build(Variant::Correct, &Settings::default()))
}
