/work/wt/target-old/release/deps/env_filter-7e64d4936c5efd83.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/directive.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filter.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filtered_log.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/op.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/parser.rs

/work/wt/target-old/release/deps/libenv_filter-7e64d4936c5efd83.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/directive.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filter.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filtered_log.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/op.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/parser.rs

/work/wt/target-old/release/deps/libenv_filter-7e64d4936c5efd83.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/directive.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filter.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filtered_log.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/op.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/parser.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/directive.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filter.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/filtered_log.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/op.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/env_filter-2.1.0/src/parser.rs:
