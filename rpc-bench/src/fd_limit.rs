//! Raises this process's limit of open files to its hard limit: the
//! benchmark and stress runs hold thousands of connections, both ends of
//! each in one process.

/// Raises the soft `RLIMIT_NOFILE` to the hard one; leaves it be on failure.
pub fn raise() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a value on the stack.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
