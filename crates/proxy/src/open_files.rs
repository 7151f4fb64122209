//! The open-files limit the proxy needs, raised at start as Redis raises
//! its own: each client costs two descriptors (its socket and its
//! connection to the primary), so `maxclients = 10000` needs about 20,000,
//! while many systems give a process 1,024 unless told otherwise.

/// Descriptors kept for everything but client sessions: the listener,
/// Kafka's connections, the metrics server, the sync, logs.
const RESERVED: libc::rlim_t = 128;

/// Raises the soft `RLIMIT_NOFILE` towards what `max_clients` sessions
/// need, as far as the hard limit allows; says so once when that is not
/// enough (clients past it are refused by the system, not by `maxclients`).
pub(crate) fn raise_for(max_clients: usize) {
    let want = libc::rlim_t::try_from(max_clients)
        .unwrap_or(libc::rlim_t::MAX)
        .saturating_mul(2)
        .saturating_add(RESERVED);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let soft = limit.rlim_cur;
    if soft >= want {
        return;
    }
    let target = want.min(limit.rlim_max);
    if target > soft {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            log::warn!(
                "cannot raise the open-files limit from {soft} to {target}: {}",
                std::io::Error::last_os_error()
            );
            return;
        }
    }
    if target < want {
        log::warn!(
            "open-files limit {target} (the hard limit) is below the {want} that maxclients = \
             {max_clients} needs (two per client): raise it (ulimit -n, LimitNOFILE) or lower \
             maxclients"
        );
    }
}
