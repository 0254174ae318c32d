//! raft-rs logs through slog; Oxbow logs through tracing. This drain forwards one to the
//! other, with raft-rs's key-value pairs (term, index, peer) appended to the message.

use std::fmt::Write as _;

/// A slog logger whose records go to tracing (target `raft`), tagged with the node id. raft-rs
/// reports elections and role changes at info; they are debug here, since the shell logs the
/// leader changes that matter to an operator.
pub fn tracing_logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => node_id))
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::enabled!(target: "raft", tracing::Level::ERROR)
            }
            slog::Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
            slog::Level::Info | slog::Level::Debug => {
                tracing::enabled!(target: "raft", tracing::Level::DEBUG)
            }
            slog::Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut text = record.msg().to_string();
        let mut pairs = Pairs(&mut text);
        let _ = slog::KV::serialize(&record.kv(), record, &mut pairs);
        let _ = slog::KV::serialize(values, record, &mut pairs);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{text}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{text}"),
            slog::Level::Info | slog::Level::Debug => tracing::debug!(target: "raft", "{text}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{text}"),
        }
        Ok(())
    }
}

struct Pairs<'a>(&'a mut String);

impl slog::Serializer for Pairs<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
