//! Preloaded (`LD_PRELOAD`) into every process the e2e node agent runs as a pod's
//! container. Pods on that agent share one network namespace, each with an address of its
//! own (`TRIBUTARY_E2E_POD_IP`, 10.244.N.x): a bind to every IPv4
//! address (`0.0.0.0:port`), which in a pod of its own network namespace means "every
//! address of this pod", binds the pod's address instead, so every broker keeps the same
//! ports as on a real cluster. Binds to a given address, and IPv6 binds, pass unchanged.
//! Test-only: never part of an image.

// An interposed libc function cannot be written without unsafe code.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use libc::{AF_INET, INADDR_ANY, RTLD_NEXT, sockaddr, sockaddr_in, socklen_t};

/// The variable the node agent sets to the pod's address.
const POD_IP_VARIABLE: &str = "TRIBUTARY_E2E_POD_IP";

type BindFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;

fn real_bind() -> BindFn {
    static REAL: OnceLock<usize> = OnceLock::new();
    let address = *REAL.get_or_init(|| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; the next `bind` is libc's.
        unsafe { libc::dlsym(RTLD_NEXT, c"bind".as_ptr()) as usize }
    });
    assert!(address != 0, "bind-shim: libc's bind not found");
    // SAFETY: the symbol is libc's bind, whose signature this is.
    unsafe { std::mem::transmute::<usize, BindFn>(address) }
}

fn pod_ip() -> Option<Ipv4Addr> {
    static IP: OnceLock<Option<Ipv4Addr>> = OnceLock::new();
    *IP.get_or_init(|| std::env::var(POD_IP_VARIABLE).ok()?.parse().ok())
}

/// # Safety
/// As libc's `bind`: `address` points at `length` readable bytes of a socket address.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, address: *const sockaddr, length: socklen_t) -> c_int {
    let real = real_bind();
    if address.is_null() || (length as usize) < std::mem::size_of::<sockaddr_in>() {
        // SAFETY: the caller's arguments, unchanged.
        return unsafe { real(fd, address, length) };
    }
    // SAFETY: at least a sockaddr_in's bytes are readable (checked above).
    let mut inet = unsafe { std::ptr::read_unaligned(address.cast::<sockaddr_in>()) };
    match pod_ip() {
        Some(ip) if inet.sin_family as c_int == AF_INET && inet.sin_addr.s_addr == INADDR_ANY => {
            inet.sin_addr.s_addr = u32::from(ip).to_be();
            // SAFETY: a valid sockaddr_in on this stack frame.
            unsafe {
                real(
                    fd,
                    (&raw const inet).cast::<sockaddr>(),
                    std::mem::size_of::<sockaddr_in>() as socklen_t,
                )
            }
        }
        // SAFETY: the caller's arguments, unchanged.
        _ => unsafe { real(fd, address, length) },
    }
}
