//! `order-totals`, the job of `eos-pipeline` and `backpressure`: keyed integer amounts
//! counted and summed per key in 1-second tumbling event-time windows.
//!
//! ```text
//! orders --> [source -> amounts] ==by key==> [1 s tumbling count/sum -> totals] --> order-totals
//! ```
//!
//! Each output record is keyed as its input was, valued [`WindowTotals`]; a value that is not
//! an integer is dropped as unparseable.

use super::{END_MARKER, OUT_OF_ORDERNESS_MS, PipelineJob, WINDOW_MS};
use crate::checker::WindowTotals;
use std::time::Duration;
use weir_engine::state::CountSum;
use weir_engine::{
    DropReason, KafkaRecord, KafkaSink, KafkaSource, StreamEnv, WatermarkStrategy, WindowAssigner,
    Windowed,
};

/// The job.
pub(super) fn build() -> Result<weir_engine::Job, weir_engine::graph::GraphError> {
    let env = StreamEnv::new("order-totals");
    env.set_parallelism(2);
    let source =
        KafkaSource::raw(PipelineJob::OrderTotals.input_topic()).bounded_by_marker(END_MARKER);
    let strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(
        OUT_OF_ORDERNESS_MS as u64,
    ));
    let totals = env
        .from_source(source, strategy)
        .uid("orders-source")
        .process(|r: KafkaRecord, ctx| {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            match std::str::from_utf8(&r.value)
                .ok()
                .and_then(|v| v.parse().ok())
            {
                Some(amount) => ctx.emit((key, amount)),
                None => ctx.dropped(DropReason::Unparseable),
            }
        })
        .key_by(|(key, _): &(String, i64)| key.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate(CountSum::new(|(_, amount): &(String, i64)| *amount))
        .uid("totals");
    let sink = KafkaSink::new(
        PipelineJob::OrderTotals.outputs()[0],
        |w: &Windowed<String, (u64, i64)>| {
            let totals = WindowTotals {
                start: w.window.start,
                end: w.window.end,
                count: w.value.0,
                sum: w.value.1,
            };
            let value = serde_json::to_vec(&totals).map_err(|e| e.to_string())?;
            Ok((Some(w.key.clone().into_bytes()), value))
        },
    );
    totals.sink_to(sink).uid("totals-sink");
    env.build()
}
