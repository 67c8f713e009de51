//! The process allocator: jemalloc on Linux, configured here (the binary's edge owns it; the
//! library crates allocate through whatever the binary picks).
//!
//! Why not glibc's malloc: after a crowd of connections leaves, glibc keeps the pages that
//! free chunks' headers sit on between the few allocations that outlive the crowd, and
//! `malloc_trim` cannot give those back — RSS stayed 12–40 % above its level before a storm
//! of 19,400 connections (BENCHMARKS, connection storms). jemalloc allocates small objects
//! from size-class slabs of a few pages and returns whole free extents to the system after
//! `dirty_decay_ms`, from its own background thread, so an idle server shrinks without
//! allocator activity.
//!
//! Besides its own decay, the server asks jemalloc to give every free page back at once when a
//! crowd of connections has left ([`release_free_pages`], registered with
//! `samos_server::memory::release_also_with` by `samos serve`), where it trims glibc's heap.
//!
//! Options are read at jemalloc's first allocation from [`MALLOC_CONF`]; `_RJEM_MALLOC_CONF`
//! in the environment overrides them (e.g. `_RJEM_MALLOC_CONF=dirty_decay_ms:30000`).

#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options (a C `const char *`: a thin pointer to NUL-terminated bytes).
/// - `background_thread`: purging runs on jemalloc's own thread, not inside a connection's
///   `free`, and happens while the server is idle;
/// - `muzzy_decay_ms:0`: freed pages are returned with `MADV_DONTNEED` (RSS falls at once),
///   not `MADV_FREE` (RSS falls only under memory pressure, which hides a leak).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 40] = b"background_thread:true,muzzy_decay_ms:0\0";

/// Returns the free pages of every jemalloc arena to the system now; logs when jemalloc
/// refuses (it does not: the test below holds it to that).
pub fn release_free_pages() {
    if let Err(code) = purge_all_arenas() {
        tracing::debug!(code, "jemalloc did not purge its arenas");
    }
}

/// `mallctl("arena.<MALLCTL_ARENAS_ALL>.purge")`: jemalloc's error code if it fails.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
fn purge_all_arenas() -> Result<(), i32> {
    // 4096 is MALLCTL_ARENAS_ALL: the purge applies to every arena.
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a void mallctl: no old or new value is read or written (null pointers, length 0),
    // and the name is a NUL-terminated string jemalloc only reads.
    let code = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if code == 0 { Ok(()) } else { Err(code) }
}

/// Other platforms keep the system allocator: glibc's trim (or nothing) is all there is.
#[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
fn purge_all_arenas() -> Result<(), i32> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn jemalloc_purges_every_arena_on_request() {
        let freed: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 64 * 1024]).collect();
        drop(freed);
        assert_eq!(super::purge_all_arenas(), Ok(()));
    }
}
