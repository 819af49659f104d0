//! Shared pieces of the loom models of the ring protocol (included by each `tests/loom_*.rs`
//! with `mod loom_model;`).
//!
//! Every model is parameterised by the [`Orderings`] each side uses, so the passing tests run
//! with [`Orderings::SPEC`] (the very values of `vireo_queue::ordering`, which the ring code
//! uses) and the negative controls run the same model with one ordering weakened.
#![allow(dead_code, unused_imports)] // each test file uses a different subset

use loom::sync::atomic::{fence, Ordering};
use vireo_queue::ordering::{CONSUME, FIELD, NOTIFY_FENCE, PUBLISH};

/// The orderings one side of the ring (driver or device) uses at each step.
#[derive(Debug, Clone, Copy)]
pub struct Orderings {
    /// Storing the index or flags that publish entries (`PUBLISH`).
    pub publish: Ordering,
    /// Loading the other side's index or flags before reading entries (`CONSUME`).
    pub consume: Ordering,
    /// Plain ring fields (`FIELD`).
    pub field: Ordering,
    /// The event-suppression fence (`notify_fence()`); `None` models the fence removed.
    pub notify_fence: Option<Ordering>,
}

impl Orderings {
    /// What the ring code uses: `vireo_queue::ordering::{PUBLISH, CONSUME, FIELD, NOTIFY_FENCE}`.
    pub const SPEC: Orderings = Orderings {
        publish: PUBLISH,
        consume: CONSUME,
        field: FIELD,
        notify_fence: Some(NOTIFY_FENCE),
    };

    /// SPEC with the publishing store weakened to `o`.
    pub const fn publish(o: Ordering) -> Orderings {
        Orderings {
            publish: o,
            ..Orderings::SPEC
        }
    }

    /// SPEC with the consuming load weakened to `o`.
    pub const fn consume(o: Ordering) -> Orderings {
        Orderings {
            consume: o,
            ..Orderings::SPEC
        }
    }

    /// SPEC with the notification fence replaced by `o` (`None`: removed).
    pub const fn fence(o: Option<Ordering>) -> Orderings {
        Orderings {
            notify_fence: o,
            ..Orderings::SPEC
        }
    }

    /// The notification fence, as `vireo_queue::ordering::notify_fence()` issues it.
    pub fn notify_fence(&self) {
        if let Some(o) = self.notify_fence {
            fence(o);
        }
    }
}

/// Runs `f` under loom: every interleaving and every value a load may return under the C11
/// memory model (within `LOOM_MAX_PREEMPTIONS` if set; loom reads it from the environment).
///
/// Prints how many executions loom explored (visible with `--nocapture`), so a model that
/// accidentally stopped exploring shows up.
pub fn check<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    loom::model(move || {
        counter.fetch_add(1, Relaxed);
        f();
    });
    let n = runs.load(Relaxed);
    eprintln!("loom explored {n} executions");
    assert!(
        n > 1,
        "loom explored a single execution: the model has no concurrency"
    );
}

/// Packed ring pieces (virtio 1.2 §2.8): the flag logic and the DESC-mode decision are
/// `vireo_spec::packed`'s own (`WrapCounter::{avail_flags, used_flags, is_avail, is_used}`,
/// `need_event`), the very functions the ring code calls, so the model checks them too.
pub mod packed {
    pub use vireo_spec::packed::desc::{F_AVAIL, F_USED};
    pub use vireo_spec::packed::event::{FLAGS_DESC, FLAGS_DISABLE, FLAGS_ENABLE, WRAP_BIT};
    pub use vireo_spec::packed::WrapCounter;

    /// `vireo_spec::packed::need_event`, the DESC-mode decision the ring code makes (§2.8.10).
    pub use vireo_spec::packed::need_event;
}

/// Outcomes the model reached over all explored executions (a plain `std` mutex outside loom's
/// view), so a test can assert that the interesting cases really were explored: a model whose
/// consumer never sees the producer's entries would pass vacuously.
#[derive(Debug, Clone, Default)]
pub struct Coverage(std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(u16, u16)>>>);

impl Coverage {
    /// Records that an execution ended in `outcome`.
    pub fn hit(&self, outcome: (u16, u16)) {
        self.0.lock().unwrap().insert(outcome);
    }

    /// Asserts that every outcome in `expected` was reached by some execution.
    pub fn assert_reached(&self, expected: &[(u16, u16)]) {
        let seen = self.0.lock().unwrap();
        for e in expected {
            assert!(
                seen.contains(e),
                "outcome {e:?} never reached; reached: {seen:?}"
            );
        }
    }
}
