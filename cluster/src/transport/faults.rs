//! The network faults tests inject (this kernel has no netem): frames to or from a cut-off
//! node are dropped, frames are delayed or dropped at random. Off unless a test turns it on.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// One node's switch over its links to the others.
#[derive(Debug, Default)]
pub struct FaultSwitch {
    cut: Mutex<HashSet<u64>>,
    delay_ms: AtomicU64,
    drop_per_mille: AtomicU32,
}

impl FaultSwitch {
    /// Drops every frame to and from `node` (cut both nodes' switches for a clean partition).
    pub fn cut(&self, node: u64) {
        self.cut.lock().expect("not poisoned").insert(node);
    }

    /// Restores the link to `node`.
    pub fn heal(&self, node: u64) {
        self.cut.lock().expect("not poisoned").remove(&node);
    }

    /// Whether the link to `node` is cut.
    pub fn is_cut(&self, node: u64) -> bool {
        self.cut.lock().expect("not poisoned").contains(&node)
    }

    /// Holds every outgoing frame this long first (`Duration::ZERO`: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// The delay, if any.
    pub fn delay(&self) -> Option<Duration> {
        match self.delay_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Drops this share of outgoing frames at random (per mille).
    pub fn set_drop_per_mille(&self, per_mille: u32) {
        self.drop_per_mille
            .store(per_mille.min(1000), Ordering::Relaxed);
    }

    /// Whether to drop the next frame.
    pub fn drops_next(&self) -> bool {
        let per_mille = self.drop_per_mille.load(Ordering::Relaxed);
        per_mille > 0 && fastrand::u32(..1000) < per_mille
    }
}
