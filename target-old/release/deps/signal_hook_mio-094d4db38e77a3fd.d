/work/wt/target-old/release/deps/signal_hook_mio-094d4db38e77a3fd.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/signal-hook-mio-0.3.0/src/lib.rs

/work/wt/target-old/release/deps/libsignal_hook_mio-094d4db38e77a3fd.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/signal-hook-mio-0.3.0/src/lib.rs

/work/wt/target-old/release/deps/libsignal_hook_mio-094d4db38e77a3fd.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/signal-hook-mio-0.3.0/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/signal-hook-mio-0.3.0/src/lib.rs:
