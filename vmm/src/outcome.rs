//! How an enclave run ended, decoded for people and for tests.

use std::fmt;

use credguard_proto::abi::Report;

/// How an enclave run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    /// The guest exited on purpose ([`credguard_proto::abi::ExitCode::Clean`]).
    Clean,
    /// The VMM stopped the guest (e.g. on SIGTERM), not the guest itself.
    Stopped,
    /// A Rust panic in the guest; the last lines of its serial console, oldest first.
    Panic {
        /// The last console lines (the panic message is usually among them).
        last_lines: Vec<String>,
    },
    /// A CPU exception the guest could not handle, from its report page.
    Fault(FaultInfo),
    /// The doorbell benchmark finished.
    BenchDone(BenchResult),
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`): its fault handling itself failed.
    TripleFault,
    /// Anything else that stopped the vCPU: an emulation failure, an unexpected exit reason, an
    /// unknown exit code, a failed ioctl.
    Unexpected(String),
}

impl ExitOutcome {
    /// Whether this outcome means the enclave did what was asked (a clean exit, a requested stop,
    /// or a finished benchmark).
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            ExitOutcome::Clean | ExitOutcome::Stopped | ExitOutcome::BenchDone(_)
        )
    }
}

impl fmt::Display for ExitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitOutcome::Clean => write!(f, "the enclave exited cleanly"),
            ExitOutcome::Stopped => write!(f, "the enclave was stopped"),
            ExitOutcome::Panic { last_lines } => {
                write!(f, "the enclave panicked")?;
                if !last_lines.is_empty() {
                    write!(f, "; last console lines:")?;
                    for line in last_lines {
                        write!(f, "\n  {line}")?;
                    }
                }
                Ok(())
            }
            ExitOutcome::Fault(fault) => write!(f, "the enclave faulted: {fault}"),
            ExitOutcome::BenchDone(bench) => write!(f, "doorbell benchmark done: {bench}"),
            ExitOutcome::TripleFault => write!(f, "the enclave triple-faulted (KVM_EXIT_SHUTDOWN)"),
            ExitOutcome::Unexpected(what) => write!(f, "the enclave stopped unexpectedly: {what}"),
        }
    }
}

/// A CPU exception reported by the guest through the report page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInfo {
    /// The raw report.
    pub report: Report,
}

impl FaultInfo {
    /// The exception's mnemonic, e.g. `#PF`, or `vector N` for others.
    pub fn vector_name(&self) -> String {
        exception_name(self.report.fault_vector)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("vector {}", self.report.fault_vector))
    }

    /// The privilege ring the fault happened in (the low bits of CS).
    pub fn ring(&self) -> u64 {
        self.report.fault_cs & 3
    }
}

impl fmt::Display for FaultInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.report;
        write!(
            f,
            "{} in ring {} at rip {:#x} (error code {:#x}, rsp {:#x}, rflags {:#x}",
            self.vector_name(),
            self.ring(),
            r.fault_rip,
            r.fault_error_code,
            r.fault_rsp,
            r.fault_rflags
        )?;
        if r.fault_vector == 14 {
            write!(f, ", cr2 {:#x}", r.fault_cr2)?;
        }
        write!(f, ")")
    }
}

/// Mnemonics of the architectural exceptions.
pub fn exception_name(vector: u64) -> Option<&'static str> {
    Some(match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        _ => return None,
    })
}

/// Results of the doorbell benchmark, in TSC cycles as measured by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchResult {
    /// The raw report.
    pub report: Report,
    /// TSC frequency the guest was told (0 if KVM did not know it).
    pub tsc_khz: u64,
}

impl BenchResult {
    /// Converts TSC cycles to microseconds; `None` without a known TSC frequency.
    pub fn cycles_to_us(&self, cycles: u64) -> Option<f64> {
        (self.tsc_khz != 0).then(|| cycles as f64 * 1000.0 / self.tsc_khz as f64)
    }

    /// The result as one JSON object, for scripts: iterations, median/p99/min in µs (null when
    /// the TSC frequency is unknown) and in cycles.
    pub fn to_json(&self) -> String {
        let r = &self.report;
        let us = |c| match self.cycles_to_us(c) {
            Some(v) => format!("{v:.3}"),
            None => "null".to_owned(),
        };
        format!(
            "{{\"iterations\":{},\"median_us\":{},\"p99_us\":{},\"min_us\":{},\"median_cycles\":{},\"p99_cycles\":{},\"min_cycles\":{},\"tsc_khz\":{}}}",
            r.bench_iterations,
            us(r.bench_median_cycles),
            us(r.bench_p99_cycles),
            us(r.bench_min_cycles),
            r.bench_median_cycles,
            r.bench_p99_cycles,
            r.bench_min_cycles,
            self.tsc_khz
        )
    }
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_display_names_vector_ring_and_cr2() {
        let fault = FaultInfo {
            report: Report {
                fault_vector: 14,
                fault_error_code: 4,
                fault_rip: 0x10_1234,
                fault_cs: 0x33,
                fault_cr2: 0xdead_0000,
                ..Default::default()
            },
        };
        let s = fault.to_string();
        assert!(s.starts_with("#PF in ring 3 at rip 0x101234"), "{s}");
        assert!(s.contains("cr2 0xdead0000"), "{s}");
        let other = FaultInfo {
            report: Report {
                fault_vector: 200,
                ..Default::default()
            },
        };
        assert!(other.to_string().starts_with("vector 200 in ring 0"));
    }

    #[test]
    fn bench_json() {
        let bench = BenchResult {
            report: Report {
                bench_iterations: 10,
                bench_median_cycles: 2000,
                bench_p99_cycles: 4000,
                bench_min_cycles: 1000,
                ..Default::default()
            },
            tsc_khz: 2_000_000,
        };
        assert_eq!(
            bench.to_json(),
            "{\"iterations\":10,\"median_us\":1.000,\"p99_us\":2.000,\"min_us\":0.500,\"median_cycles\":2000,\"p99_cycles\":4000,\"min_cycles\":1000,\"tsc_khz\":2000000}"
        );
    }
}
