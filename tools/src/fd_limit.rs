//! The process's limit on open files. A connection holds a descriptor on each side, so a
//! thousand clients need a thousand sockets in the load generator and a thousand in the
//! server: both lift their soft limit to the hard one before they start.

/// Lifts the soft limit on open files to the hard one (child processes inherit it) and
/// returns the soft limit now in force (0 where it cannot be read).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    fn soft_limit() -> u64 {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) },
            0
        );
        limit.rlim_cur
    }

    #[test]
    fn the_limit_returned_is_the_one_in_force_and_never_lower() {
        let before = soft_limit();
        let now = super::raise_open_file_limit();
        assert_eq!(now, soft_limit());
        assert!(now >= before, "{now} < {before}");
    }
}
