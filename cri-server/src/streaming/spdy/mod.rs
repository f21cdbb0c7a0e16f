//! SPDY/3.1, as kubelet's streaming protocols (remotecommand, portforward) use it: no Rust crate
//! serves it, so the framing ([`frame`]) and a server-side session ([`session`]) live here.

pub mod frame;
pub mod session;

#[cfg(test)]
mod tests;
