//! The agent runs its async tasks on one worker thread (`agent::main`: with two, the
//! cross-worker wake-ups of each request cost a UVM exec a third of its time, issue 17). Work
//! that may block must therefore never hold that worker: long, known-blocking work goes to the
//! blocking pool (`tokio::task::spawn_blocking`); a call that may block only at times runs
//! through [`block`], which hands the worker's other tasks to another thread meanwhile: a
//! SCSI disk's open (a command to the disk), a workload Create's pinning of its pod's shares
//! (a host 9p server can stop answering), reads of a container's user databases.
//!
//! Left on the worker on purpose: decoding a large payload (~100 ms for 16 MiB), and a
//! Create's writes of its bundle and working directory (on the UVM's tmpfs or a scratch disk):
//! handed off, a burst of 10 MiB requests peaked 10 MiB higher (tests/robustness.rs
//! `hostile_process_strings_cost_only_their_counted_copies`; the task finishes on the thread
//! that blocked while the worker's core moves on). Also tee-log appends: a hand-off per relayed
//! chunk would cost more than the page-cache write it guards.

/// Runs `f` on this thread, first handing this worker's other tasks to another thread when
/// called from a multi-thread tokio runtime (`tokio::task::block_in_place`); elsewhere (a
/// current-thread runtime, or no runtime: unit tests, the in-process fuzzer) it simply runs `f`.
pub fn block<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::block;

    #[test]
    fn runs_without_a_runtime() {
        assert_eq!(block(|| 7), 7);
    }

    #[tokio::test]
    async fn runs_on_a_current_thread_runtime() {
        assert_eq!(block(|| 8), 8);
    }

    /// On a multi-thread runtime with one worker, another task keeps running while `block`
    /// waits: the worker's tasks were handed to another thread.
    #[test]
    fn other_tasks_run_while_it_blocks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::spawn(async {
                let (tx, rx) = std::sync::mpsc::channel();
                let other = tokio::spawn(async move { tx.send(()).unwrap() });
                // Blocks until the other task, spawned onto this one worker, has run.
                let got = block(|| rx.recv_timeout(std::time::Duration::from_secs(10)));
                assert!(got.is_ok(), "the other task did not run while block waited");
                other.await.unwrap();
            })
            .await
            .unwrap();
        });
    }
}
