//! A team of threads that run every parallel launch of an executable: the calling thread
//! plus `threads - 1` workers that **spin** between launches instead of sleeping.
//!
//! A decode step is ~340 short launches (tens of microseconds each) separated by serial
//! work; a work-stealing pool whose idle workers go to sleep (rayon) pays a wake-up of the
//! other core on nearly every launch, which measured as the main loss at 2 threads (SmolLM2
//! decode scaled 1.3x from 1 to 2 threads, llama.cpp 1.9x; its threads, like these,
//! spin on a counter between operations). A worker spins for [`SPIN`] after its last job,
//! then parks until the next one.
//!
//! One team per thread count is shared by every executable of the process ([`Team::get`]);
//! jobs from different threads are serialized, and a job that submits another job (never
//! done by the runtime) runs it inline.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// The job being run: a pointer to the caller's closure, valid until every worker is done.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));
// SAFETY: the closure is `Sync` and outlives the job (`Team::run` waits for every worker).
unsafe impl Send for Job {}

struct Shared {
    /// Incremented when a job is published.
    epoch: AtomicU64,
    /// The current job (written before `epoch` is incremented, read after it changed).
    job: Mutex<Option<Job>>,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    /// Workers parked on `wake`.
    parked: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    /// A worker's part of the current job panicked.
    panicked: AtomicBool,
}

/// The live teams, by thread count.
type Registry = Vec<(usize, Weak<Team>)>;

/// A team of `threads` participants (see the module docs).
pub(crate) struct Team {
    threads: usize,
    shared: Arc<Shared>,
    /// Serializes jobs submitted from different threads.
    submit: Mutex<()>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

thread_local! {
    /// Set while this thread runs a team job (a nested submission runs inline).
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

impl Team {
    /// The process's team of `threads` participants, created on first use.
    pub fn get(threads: usize) -> Result<Arc<Team>, std::io::Error> {
        static TEAMS: OnceLock<Mutex<Registry>> = OnceLock::new();
        let teams = TEAMS.get_or_init(|| Mutex::new(Vec::new()));
        let mut teams = teams.lock().unwrap_or_else(|e| e.into_inner());
        teams.retain(|(_, w)| w.strong_count() > 0);
        if let Some(t) = teams
            .iter()
            .find(|(n, _)| *n == threads)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(t);
        }
        let t = Arc::new(Team::new(threads)?);
        teams.push((threads, Arc::downgrade(&t)));
        Ok(t)
    }

    fn new(threads: usize) -> Result<Team, std::io::Error> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for index in 1..threads {
            let s = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("kiln-cpu-{index}"))
                    .spawn(move || worker(&s, index))?,
            );
        }
        Ok(Team {
            threads,
            shared,
            submit: Mutex::new(()),
            workers,
        })
    }

    /// Participants (the caller and the workers).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` on every participant `i` in `0..threads` (the caller is 0) and returns
    /// when all are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 || IN_JOB.with(|c| c.get()) {
            for i in 0..self.threads {
                f(i);
            }
            return;
        }
        let _one_at_a_time = self.submit.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY (of the erased lifetime): this call returns only after `pending` reached
        // zero, i.e. after every worker finished calling `f`.
        let job = Job(unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
                f as *const _,
            )
        });
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        s.pending.store(self.threads - 1, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        IN_JOB.with(|c| c.set(true));
        // The workers hold a pointer to `f`: wait for them even if this part panics.
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        IN_JOB.with(|c| c.set(false));
        while s.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kiln-cpu worker thread panicked while running a launch");
        }
    }

    /// Runs `task(t)` for every `t` in `0..tasks`, spread over the participants (each takes
    /// the next task when done with one).
    pub fn for_each(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || self.threads == 1 {
            (0..tasks).for_each(task);
            return;
        }
        let next = AtomicUsize::new(0);
        self.run(&|_| loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            if t >= tasks {
                break;
            }
            task(t);
        });
    }
}

/// The largest of `f(t)` over `t in 0..tasks` (a launch's worst status word), or the first
/// error a task returns: the tasks spread over `team`'s participants, or run in order on
/// this thread when `team` is `None`.
pub(crate) fn max_over<E: Send>(
    team: Option<&Team>,
    tasks: usize,
    f: &(dyn Fn(usize) -> Result<i64, E> + Sync),
) -> Result<i64, E> {
    let Some(team) = team else {
        let mut worst = 0;
        for t in 0..tasks {
            worst = worst.max(f(t)?);
        }
        return Ok(worst);
    };
    let worst = std::sync::atomic::AtomicI64::new(0);
    let failed: Mutex<Option<E>> = Mutex::new(None);
    team.for_each(tasks, &|t| match f(t) {
        Ok(s) => {
            worst.fetch_max(s, Ordering::Relaxed);
        }
        Err(e) => {
            failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(worst.into_inner()),
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared, index: usize) {
    IN_JOB.with(|c| c.set(true));
    // The epoch at the team's creation (a job may be published before this thread starts).
    let mut seen = 0;
    loop {
        // Wait for the next job: spin, then park.
        let idle = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            if s.epoch.load(Ordering::Acquire) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || idle.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.parked.fetch_add(1, Ordering::SeqCst);
            let g = s
                .wake
                .wait_while(g, |_| {
                    s.epoch.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::SeqCst)
                })
                .unwrap_or_else(|e| e.into_inner());
            s.parked.fetch_sub(1, Ordering::SeqCst);
            drop(g);
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Job(f)) = job {
            // SAFETY: the submitter keeps the closure alive until `pending` reaches zero,
            // which this worker's decrement below is part of.
            let run = std::panic::AssertUnwindSafe(|| unsafe { (*f)(index) });
            if std::panic::catch_unwind(run).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_on_every_team_size() {
        for threads in 1..=3 {
            let team = Team::get(threads).unwrap();
            for tasks in [0usize, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                team.for_each(tasks, &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
            // Every participant runs a `run` job, the caller as 0.
            let seen: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            team.run(&|i| {
                seen[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(seen.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn max_over_takes_the_largest_status_or_the_first_error() {
        let team = Team::get(2).unwrap();
        for t in [None, Some(&*team)] {
            let r: Result<i64, ()> = max_over(t, 9, &|i| Ok((i as i64 * 7) % 5));
            assert_eq!(r, Ok(4));
            let r: Result<i64, usize> = max_over(t, 9, &|i| if i == 6 { Err(i) } else { Ok(1) });
            assert_eq!(r, Err(6));
            assert_eq!(max_over::<()>(t, 0, &|_| Ok(3)), Ok(0));
        }
    }

    #[test]
    fn jobs_from_several_threads_and_parked_workers() {
        let team = Team::get(2).unwrap();
        // Let the worker park, then submit again.
        std::thread::sleep(SPIN * 3);
        let sum = AtomicUsize::new(0);
        team.for_each(10, &|t| {
            sum.fetch_add(t, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
        std::thread::scope(|sc| {
            for _ in 0..3 {
                sc.spawn(|| {
                    let team = Team::get(2).unwrap();
                    for _ in 0..200 {
                        let n = AtomicUsize::new(0);
                        team.for_each(5, &|_| {
                            n.fetch_add(1, Ordering::Relaxed);
                        });
                        assert_eq!(n.load(Ordering::Relaxed), 5);
                    }
                });
            }
        });
    }
}
