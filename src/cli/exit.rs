//! Exit codes: a documented contract.

/// Success: every selected node is fresh or ran.
pub const OK: i32 = 0;
/// A node failed (its dependents were skipped; independent branches finished).
pub const NODE_FAILED: i32 = 1;
/// `plan --exit-code`: a node would run or be fetched, or an exported file would be written (the results are not
/// those of the store).
pub const WOULD_RUN: i32 = 1;
/// Usage error, invalid pipeline, or bad input data (a node failed on the user's files).
pub const USAGE: i32 = 2;
/// The store is locked by another `polyflow run` (use `--wait` to wait for it).
pub const LOCKED: i32 = 3;
/// The store could not be read or written (I/O, index error, a full disk — also when a node's artifact could
/// not be written), or `verify` found damage.
pub const STORE: i32 = 4;
/// Interrupted by Ctrl-C (SIGINT) while running: nodes that were running are not cached, those that finished
/// are; submitted Slurm jobs were cancelled or, with `--keep-jobs`, left running for the next `run` to re-attach to.
pub const INTERRUPTED: i32 = 130;
/// Terminated by SIGTERM while running: as [`INTERRUPTED`].
pub const TERMINATED: i32 = 143;
/// Hung up (SIGHUP: its terminal closed, an ssh session dropped) while running: as [`INTERRUPTED`], so the
/// programs of `command` nodes are stopped with it rather than left running unattended.
pub const HUNG_UP: i32 = 129;
/// `run`'s standard output was closed by its reader (`polyflow run … --json | head`): it stopped as on SIGTERM
/// (128 + SIGPIPE, what a shell reports for a process SIGPIPE ended).
pub const PIPE_CLOSED: i32 = 141;
