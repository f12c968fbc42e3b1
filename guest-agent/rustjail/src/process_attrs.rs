//! Kernel attributes of the container process that need a raw syscall:
//! I/O priority, scheduling policy, and personality.

use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Scheduler,
};

#[derive(Debug, thiserror::Error)]
pub enum AttrError {
    #[error("process.ioPriority: priority {0} is out of range 0..=7")]
    IoPriorityRange(i64),
    #[error("process.ioPriority: ioprio_set: {0}")]
    IoPriority(#[source] std::io::Error),
    #[error("process.scheduler: sched_setattr {policy:?}: {source}")]
    Scheduler {
        policy: LinuxSchedulerPolicy,
        #[source]
        source: std::io::Error,
    },
    #[error("process.scheduler: {0}")]
    SchedulerValue(String),
    #[error("linux.personality: flags {0:?} are not supported (no personality flag is)")]
    PersonalityFlags(Vec<String>),
    #[error("linux.personality: personality {domain}: {source}")]
    Personality {
        domain: String,
        #[source]
        source: std::io::Error,
    },
}

/// The kernel's `ioprio` value: class in the top bits, level below.
pub fn ioprio_value(p: &LinuxIOPriority) -> Result<u32, AttrError> {
    let level = p.priority();
    if !(0..=7).contains(&level) {
        return Err(AttrError::IoPriorityRange(level));
    }
    let class: u32 = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    Ok(class << 13 | level as u32)
}

pub fn set_io_priority(p: &LinuxIOPriority) -> Result<(), AttrError> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    let value = ioprio_value(p)?;
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if rc < 0 {
        return Err(AttrError::IoPriority(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `struct sched_attr` (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SchedAttr {
    size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    util_min: u32,
    util_max: u32,
}

fn policy_number(p: LinuxSchedulerPolicy) -> u32 {
    match p {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    }
}

fn flag_bit(f: &LinuxSchedulerFlag) -> u64 {
    match f {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// The `sched_attr` for a spec scheduler, checked as the runtime spec asks.
pub fn sched_attr(s: &Scheduler) -> Result<SchedAttr, AttrError> {
    let policy = *s.policy();
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(AttrError::SchedulerValue(format!(
            "nice {nice} is out of range -20..=19"
        )));
    }
    let priority = s.priority().unwrap_or(0);
    let realtime = matches!(
        policy,
        LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
    );
    if realtime != (priority != 0) {
        return Err(AttrError::SchedulerValue(format!(
            "priority {priority}: must be 1..=99 for SCHED_FIFO and SCHED_RR and 0 otherwise"
        )));
    }
    let deadline = policy == LinuxSchedulerPolicy::SchedDeadline;
    if !deadline && (s.runtime().is_some() || s.deadline().is_some() || s.period().is_some()) {
        return Err(AttrError::SchedulerValue(
            "runtime, deadline and period are for SCHED_DEADLINE only".into(),
        ));
    }
    Ok(SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: policy_number(policy),
        flags: s
            .flags()
            .iter()
            .flatten()
            .map(flag_bit)
            .fold(0, |a, b| a | b),
        nice,
        priority: priority.max(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        util_min: 0,
        util_max: 0,
    })
}

pub fn set_scheduler(s: &Scheduler) -> Result<(), AttrError> {
    let attr = sched_attr(s)?;
    // SAFETY: `attr` is a valid, initialised sched_attr whose size field
    // is its own size; the kernel only reads it during the call.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc < 0 {
        return Err(AttrError::Scheduler {
            policy: *s.policy(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// personality(2)'s query: the current persona, unchanged.
pub(crate) const PERSONALITY_QUERY: libc::c_ulong = 0xffff_ffff;

/// Clears `ADDR_NO_RANDOMIZE`, which the runtime sets for the init itself
/// (see `container::spawn_init`): the flag acts at the next execve, so the
/// user's program gets a random layout again.
pub fn randomize_next_exec() -> Result<(), AttrError> {
    let err = || AttrError::Personality {
        domain: "without ADDR_NO_RANDOMIZE".into(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: personality takes one integer and touches no memory of ours.
    let current = unsafe { libc::personality(PERSONALITY_QUERY) };
    if current < 0 {
        return Err(err());
    }
    let without = current & !libc::ADDR_NO_RANDOMIZE;
    // SAFETY: as above.
    if without != current && unsafe { libc::personality(without as libc::c_ulong) } < 0 {
        return Err(err());
    }
    Ok(())
}

pub fn set_personality(p: &LinuxPersonality) -> Result<(), AttrError> {
    if let Some(flags) = p.flags().as_ref().filter(|f| !f.is_empty()) {
        return Err(AttrError::PersonalityFlags(flags.clone()));
    }
    let (persona, domain) = match p.domain() {
        LinuxPersonalityDomain::PerLinux => (0x0000, "LINUX"),
        LinuxPersonalityDomain::PerLinux32 => (0x0008, "LINUX32"),
    };
    // SAFETY: personality takes one integer and touches no memory of ours.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(AttrError::Personality {
            domain: domain.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxIOPriorityBuilder, SchedulerBuilder};

    #[test]
    fn ioprio_packs_class_and_level() {
        let p = LinuxIOPriorityBuilder::default()
            .class(IOPriorityClass::IoprioClassIdle)
            .priority(4)
            .build()
            .unwrap();
        assert_eq!(ioprio_value(&p).unwrap(), 3 << 13 | 4);
        let bad = LinuxIOPriorityBuilder::default()
            .class(IOPriorityClass::IoprioClassBe)
            .priority(8)
            .build()
            .unwrap();
        assert!(ioprio_value(&bad).unwrap_err().to_string().contains("8"));
    }

    #[test]
    fn scheduler_values_are_checked_and_packed() {
        let rr = SchedulerBuilder::default()
            .policy(LinuxSchedulerPolicy::SchedRr)
            .priority(10)
            .flags(vec![LinuxSchedulerFlag::SchedResetOnFork])
            .build()
            .unwrap();
        let a = sched_attr(&rr).unwrap();
        assert_eq!((a.policy, a.priority, a.flags, a.size), (2, 10, 1, 56));
        let batch_with_prio = SchedulerBuilder::default()
            .policy(LinuxSchedulerPolicy::SchedBatch)
            .priority(3)
            .build()
            .unwrap();
        assert!(sched_attr(&batch_with_prio).is_err());
        let idle_nice = SchedulerBuilder::default()
            .policy(LinuxSchedulerPolicy::SchedIdle)
            .nice(30)
            .build()
            .unwrap();
        assert!(sched_attr(&idle_nice)
            .unwrap_err()
            .to_string()
            .contains("nice 30"));
    }
}
