//! Which CPUs the VMM's threads run on: the vCPU on one of the CPUs this process may use, the
//! vsock worker (and the doorbell) on the others.
//!
//! Why: after each packet it sends, the enclave's virtio driver spins until the vsock worker has
//! taken it. When the scheduler wakes the worker on the vCPU's own CPU, the worker waits there for
//! the next scheduler tick (4 ms at HZ=250) while another CPU is idle: a KDC exchange through the
//! enclave then takes 2, 4 or 8 ms longer about half the time (docs/BENCHMARKS.md, "KCM"). Kept
//! apart, the two never wait for each other's CPU. With a single usable CPU nothing is pinned.

/// The CPU sets of the vCPU thread and of the I/O threads, or none when this process may use
/// fewer than two CPUs.
#[derive(Clone, Copy)]
pub struct Placement {
    sets: Option<(libc::cpu_set_t, libc::cpu_set_t)>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sets {
            Some((vcpu, io)) => f
                .debug_struct("Placement")
                .field("vcpu", &cpus_of(vcpu))
                .field("io", &cpus_of(io))
                .finish(),
            None => f.write_str("Placement(unpinned)"),
        }
    }
}

fn empty_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
    unsafe { std::mem::zeroed() }
}

fn cpus_of(set: &libc::cpu_set_t) -> Vec<usize> {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `c` of `set`, inside the set for every c < CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
        .collect()
}

impl Placement {
    /// The placement for the CPUs this process may use now: the vCPU on the last of them, the
    /// I/O threads on all the others.
    pub fn for_this_process() -> Self {
        let mut allowed = empty_set();
        // SAFETY: sched_getaffinity writes at most the size given into `allowed`, which is that
        // size.
        let got = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) };
        if got != 0 {
            tracing::debug!(
                "cannot read this process's CPUs ({}): threads unpinned",
                std::io::Error::last_os_error()
            );
            return Placement { sets: None };
        }
        Self::from_cpus(&cpus_of(&allowed))
    }

    /// The placement for `cpus` (the CPUs this process may use).
    pub fn from_cpus(cpus: &[usize]) -> Self {
        let Some((&vcpu_cpu, io_cpus)) = cpus.split_last() else {
            return Placement { sets: None };
        };
        if io_cpus.is_empty() {
            return Placement { sets: None };
        }
        let (mut vcpu, mut io) = (empty_set(), empty_set());
        // SAFETY: CPU_SET sets one bit of the set; every CPU number here came from a set of
        // CPU_SETSIZE bits.
        unsafe { libc::CPU_SET(vcpu_cpu, &mut vcpu) };
        for &c in io_cpus {
            // SAFETY: as above.
            unsafe { libc::CPU_SET(c, &mut io) };
        }
        Placement { sets: Some((vcpu, io)) }
    }

    /// Whether threads are pinned at all.
    pub fn is_pinned(&self) -> bool {
        self.sets.is_some()
    }

    /// Pins the calling thread as the vCPU thread (call it on that thread, before its seccomp
    /// filter).
    pub fn pin_vcpu_thread(&self) {
        if let Some((vcpu, _)) = &self.sets {
            pin_this_thread(vcpu, "vcpu");
        }
    }

    /// Pins the calling thread as an I/O thread (the vsock worker, the doorbell).
    pub fn pin_io_thread(&self) {
        if let Some((_, io)) = &self.sets {
            pin_this_thread(io, "I/O");
        }
    }
}

fn pin_this_thread(set: &libc::cpu_set_t, what: &str) {
    // SAFETY: sched_setaffinity(0, ..) reads `set` (of the size given) for the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r != 0 {
        // Only slower, never wrong: carry on where the scheduler puts the thread.
        tracing::debug!(
            "cannot pin the {what} thread to CPUs {:?}: {}",
            cpus_of(set),
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vcpu_gets_a_cpu_of_its_own_when_there_are_two() {
        assert!(!Placement::from_cpus(&[]).is_pinned());
        assert!(!Placement::from_cpus(&[3]).is_pinned());
        let p = Placement::from_cpus(&[0, 2, 5]);
        let Some((vcpu, io)) = &p.sets else { panic!("pinned") };
        assert_eq!((cpus_of(vcpu), cpus_of(io)), (vec![5], vec![0, 2]));
    }

    #[test]
    fn a_thread_is_pinned_where_it_is_told() {
        let p = Placement::for_this_process();
        if !p.is_pinned() {
            return; // a single usable CPU: nothing to pin
        }
        std::thread::spawn(move || {
            p.pin_vcpu_thread();
            let mut now = empty_set();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            // SAFETY: as in for_this_process.
            let got = unsafe { libc::sched_getaffinity(0, size, &mut now) };
            assert_eq!(got, 0);
            let Some((vcpu, _)) = &p.sets else { unreachable!() };
            assert_eq!(cpus_of(&now), cpus_of(vcpu));
        })
        .join()
        .unwrap();
    }
}
