//! Where client tasks run: `--threads` shards, each one OS thread with a current-thread
//! tokio runtime and a `LocalSet`. Shard 0 is the main thread, which also runs the
//! orchestrator (the scenario's control flow) and the publisher; the default is that
//! single shard, so the generator uses one core and pays no cross-thread cost.
//!
//! A client task lives on one shard for its whole life and touches only that shard's
//! [`ShardCtx`] (counters and latency histogram) besides the few run-wide atomics of the
//! scenario. Owns: starting and stopping shard threads, handing them jobs, merging their
//! histograms. Does not own: what the tasks do.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use crate::stats::{self, Counters};

/// What a client task on a shard shares with its neighbours.
#[derive(Debug)]
pub struct ShardCtx {
    /// This shard's counters, also held by the orchestrator.
    pub counters: Arc<Counters>,
    /// This shard's latency histogram (µs); only this thread touches it.
    pub hist: RefCell<Histogram<u64>>,
    /// `cross-node`: latency histograms per node, grown on first use.
    pub node_hists: RefCell<Vec<Histogram<u64>>>,
}

/// Work for a shard: runs on the shard's thread, inside its `LocalSet`, and usually
/// spawns a local task.
type Job = Box<dyn FnOnce(&Rc<ShardCtx>) + Send>;

/// The shards of a run.
pub struct Shards {
    /// Shard 0, on the calling (main) thread.
    local: Rc<ShardCtx>,
    /// Shards 1.., each a thread fed jobs through a channel.
    remote: Vec<(mpsc::UnboundedSender<Job>, JoinHandle<()>)>,
    /// Every shard's counters, shard 0 first.
    counters: Vec<Arc<Counters>>,
}

fn ctx() -> Rc<ShardCtx> {
    Rc::new(ShardCtx {
        counters: Arc::new(Counters::default()),
        hist: RefCell::new(stats::histogram()),
        node_hists: RefCell::new(Vec::new()),
    })
}

impl Shards {
    /// Start `n` shards (at least one). Must be called inside the main thread's
    /// `LocalSet`, which becomes shard 0.
    pub fn start(n: usize) -> std::io::Result<Shards> {
        let local = ctx();
        let mut counters = vec![local.counters.clone()];
        let mut remote = Vec::new();
        for i in 1..n.max(1) {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let shard = ctx();
                    let _ = ready_tx.send(Ok(shard.counters.clone()));
                    let set = tokio::task::LocalSet::new();
                    set.block_on(&rt, async move {
                        while let Some(job) = rx.recv().await {
                            job(&shard);
                        }
                    });
                    // Dropping the set here cancels any task still running on it.
                })?;
            let shard_counters = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("shard thread died before starting"))??;
            counters.push(shard_counters);
            remote.push((tx, handle));
        }
        Ok(Shards {
            local,
            remote,
            counters,
        })
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        1 + self.remote.len()
    }

    /// Run `job` on shard `i % len`.
    pub fn spawn(&self, i: usize, job: impl FnOnce(&Rc<ShardCtx>) + Send + 'static) {
        match i % self.len() {
            0 => job(&self.local),
            k => {
                // A closed channel means the shard thread is gone; its clients then
                // never report and the scenario's setup timeout counts them.
                let _ = self.remote[k - 1].0.send(Box::new(job));
            }
        }
    }

    /// Every shard's counters.
    pub fn counters(&self) -> &[Arc<Counters>] {
        &self.counters
    }

    /// All shards' latency histograms merged.
    pub async fn histogram(&self) -> Histogram<u64> {
        let mut all = self.local.hist.borrow().clone();
        for (tx, _) in &self.remote {
            let (back, rx) = oneshot::channel();
            let job: Job = Box::new(move |ctx: &Rc<ShardCtx>| {
                let _ = back.send(ctx.hist.borrow().clone());
            });
            if tx.send(job).is_ok() {
                if let Ok(h) = rx.await {
                    // Same bounds everywhere, so adding cannot fail.
                    let _ = all.add(&h);
                }
            }
        }
        all
    }

    /// All shards' per-node latency histograms merged, index by index.
    pub async fn node_histograms(&self) -> Vec<Histogram<u64>> {
        let mut all = self.local.node_hists.borrow().clone();
        for (tx, _) in &self.remote {
            let (back, rx) = oneshot::channel();
            let job: Job = Box::new(move |ctx: &Rc<ShardCtx>| {
                let _ = back.send(ctx.node_hists.borrow().clone());
            });
            if tx.send(job).is_ok() {
                if let Ok(hs) = rx.await {
                    for (i, h) in hs.iter().enumerate() {
                        if i < all.len() {
                            let _ = all[i].add(h);
                        } else {
                            all.push(h.clone());
                        }
                    }
                }
            }
        }
        all
    }

    /// Stop the shard threads (cancelling what still runs there) and wait for them.
    pub fn stop(self) {
        for (tx, handle) in self.remote {
            drop(tx);
            let _ = handle.join();
        }
    }
}
