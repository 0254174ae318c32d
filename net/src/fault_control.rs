//! Network faults on a running broker, for multi-process tests (`cluster.fault_injection`,
//! off by default): the metrics listener takes `POST /faults/cut/<node>` and
//! `POST /faults/heal/<node>`, which set this node's transport fault switch for its link to
//! `node`. Cutting both ends of every link between two sides makes a clean partition.

use crate::metrics::ExtraRoutes;
use oxbow_cluster::metadata_group::raft_id;
use oxbow_cluster::transport::Transport;
use std::rc::Rc;
use std::sync::Arc;

/// The fault routes over `transport`.
pub fn routes(transport: Arc<Transport>) -> ExtraRoutes {
    Rc::new(move |head: &[u8]| {
        let line = head.split(|&b| b == b'\r').next()?;
        let path = std::str::from_utf8(line)
            .ok()?
            .strip_prefix("POST /faults/")?;
        let (action, rest) = path.split_once('/')?;
        let node: i32 = rest.split(' ').next()?.parse().ok()?;
        let switch = transport.faults();
        match action {
            "cut" => switch.cut(raft_id(node)),
            "heal" => switch.heal(raft_id(node)),
            _ => return None,
        }
        tracing::warn!(action, node, "fault injection: cluster link changed");
        Some(("200 OK", format!("{action} {node}\n")))
    })
}
