//! Consensus clusters in one process, over an in-process network with injected faults.
//!
//! Numbered by area: t10 forming a cluster, t20 failure detection, t30 partitions, t40
//! restarts, t50 leaving, t60 scaling, t70 the cluster id.

mod fixture;
mod router;

mod t10_bootstrap;
mod t20_failure_detector;
mod t30_partition;
mod t40_restart;
mod t50_leave;
mod t60_scaling;
mod t70_cluster_id;
