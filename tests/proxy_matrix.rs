//! The close-propagation matrix of the `proxy` example, driven from outside: the test
//! process is both the client and the upstream server, so each case controls both ends (see
//! tests/common/proxy_matrix.rs for the harness and what every case asserts).
//!
//! One test per case, each against its own proxy process; a failure names the case.
//! `FINWAIT_PROXY_ARGS="--flag value"` adds arguments to every proxy started, so the same
//! matrix runs with other flags.
//!
//! Any other proxy: the ignored `matrix_table_for_any_proxy` prints a pass/fail table.
//!
//! ```text
//! PROXY_MATRIX_CMD='haproxy -db -f {config}' PROXY_MATRIX_CONFIG=haproxy.cfg.in \
//!   cargo test --test proxy_matrix -- --ignored --nocapture matrix_table_for_any_proxy
//! ```
//!
//! where haproxy.cfg.in holds `bind 127.0.0.1:{listen_port}` and
//! `server s1 127.0.0.1:{upstream_port}`; without `PROXY_MATRIX_CMD` the table is finwait's
//! (with `FINWAIT_PROXY_ARGS`). `PROXY_MATRIX_CASES=reset,8_mib` runs only the cases whose
//! names contain one of those words; `PROXY_MATRIX_HALF_OPEN_GUARD_SECS` (default 90) bounds
//! the wait of the half-open case.

mod common;
#[path = "common/proxy_matrix.rs"]
mod proxy_matrix;

use proxy_matrix::{CASES, ProxySpec, run_case, run_matrix, table};

fn check(name: &str) {
    if let Err(e) = run_case(&ProxySpec::finwait_from_env(), name) {
        panic!("case {name}: {e}");
    }
}

macro_rules! cases {
    ($($(#[$meta:meta])* $name:ident,)*) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
        const TESTED: &[&str] = &[$(stringify!($name)),*];
    };
}

cases! {
    client_half_close_reaches_upstream_then_answer_and_fin_reach_client,
    upstream_half_close_reaches_client_then_reply_and_fin_reach_upstream,
    simultaneous_half_closes_deliver_both_streams_and_both_fins,
    client_reset_while_upstream_streams_reaches_upstream_as_reset,
    upstream_reset_while_client_streams_reaches_client_as_reset,
    upstream_reset_after_client_half_close_reaches_client_as_reset,
    client_reset_with_bytes_queued_toward_it_reaches_upstream_as_reset,
    upstream_reset_while_client_side_is_paused_reaches_client_as_reset,
    client_fin_after_8_mib_reaches_upstream_after_every_byte,
    unreachable_upstream_resets_client,
    client_reset_before_upstream_accepts_leaves_no_fd_and_no_clean_end,
    #[ignore = "waits out the reactor's default 30 s FIN wait: the proxy example has no option to shorten it"]
    upstream_that_never_sends_its_fin_is_given_up_and_client_gets_fin,
    upstream_fin_after_8_mib_reaches_slow_client_after_every_byte,
    simultaneous_resets_release_the_pair_and_the_proxy_serves_on,
    upstream_answer_then_immediate_reset_reaches_client_as_reset,
    client_reset_while_its_side_is_paused_reaches_upstream_as_reset,
}

#[test]
fn every_case_of_the_matrix_has_its_test() {
    let cases: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    assert_eq!(cases, TESTED);
}

#[test]
#[ignore = "a report, not a check: PROXY_MATRIX_CMD='...' cargo test --test proxy_matrix -- --ignored --nocapture matrix_table_for_any_proxy"]
fn matrix_table_for_any_proxy() {
    let spec = ProxySpec::from_env();
    let only: Vec<String> = std::env::var("PROXY_MATRIX_CASES")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    // The table carries every failure; the default hook would add a backtrace per case.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        eprintln!("(a case failed at {at})");
    }));
    let results = run_matrix(&spec, |name| {
        only.is_empty() || only.iter().any(|w| name.contains(w.as_str()))
    });
    std::panic::set_hook(previous);
    println!("{}", table(&spec, &results));
}
