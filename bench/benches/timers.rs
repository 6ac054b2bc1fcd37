//! Per-operation cost of the lazy timers: `touch` must be a store, churn a
//! push plus amortised cleanup, and an idle `expire` a peek.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use finwait::timers::{TimerId, Timers};

const TIMERS: usize = 100_000;
const PERIOD: Duration = Duration::from_secs(30);

fn armed(now: Instant) -> (Timers<usize>, Vec<TimerId>) {
    let mut timers = Timers::with_capacity(TIMERS);
    let ids = (0..TIMERS)
        .map(|k| timers.arm_idle(k, PERIOD, now))
        .collect();
    (timers, ids)
}

fn touch(c: &mut Criterion) {
    let mut group = c.benchmark_group("touch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("100k_idle_round_robin", |b| {
        let mut now = Instant::now();
        let (mut timers, ids) = armed(now);
        let mut i = 0;
        b.iter(|| {
            now += Duration::from_nanos(100);
            timers.touch(black_box(ids[i]), now);
            i += 1;
            if i == ids.len() {
                i = 0;
            }
        });
    });
    // Same loop without the touch: subtract it to get touch's own cost.
    group.bench_function("loop_overhead_baseline", |b| {
        let mut now = Instant::now();
        let (_timers, ids) = armed(now);
        let mut i = 0;
        b.iter(|| {
            now += Duration::from_nanos(100);
            black_box((black_box(ids[i]), now));
            i += 1;
            if i == ids.len() {
                i = 0;
            }
        });
    });
    group.finish();
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("arm_idle+cancel");
    group.throughput(Throughput::Elements(1));
    group.bench_function("over_100k_armed", |b| {
        let mut now = Instant::now();
        let (mut timers, _ids) = armed(now);
        let mut key = TIMERS;
        b.iter(|| {
            now += Duration::from_nanos(100);
            let id = timers.arm_idle(key, PERIOD, now);
            key = key.wrapping_add(1);
            black_box(timers.cancel(black_box(id)))
        });
    });
    group.finish();
}

fn expire(c: &mut Criterion) {
    let mut group = c.benchmark_group("expire");
    group.throughput(Throughput::Elements(1));
    group.bench_function("nothing_due_100k_armed", |b| {
        let now = Instant::now();
        let (mut timers, _ids) = armed(now);
        let mut fired = 0usize;
        b.iter(|| timers.expire(black_box(now + Duration::from_secs(1)), |_, _| fired += 1));
        assert_eq!(fired, 0);
    });

    // What the laziness defers: every timer was touched, so each pop is a
    // re-push at the real due time. Reported per timer.
    group.throughput(Throughput::Elements(TIMERS as u64));
    group.sample_size(20);
    group.bench_function("repush_100k_touched", |b| {
        let start = Instant::now();
        b.iter_batched_ref(
            || {
                let (mut timers, ids) = armed(start);
                for &id in &ids {
                    timers.touch(id, start + Duration::from_secs(10));
                }
                timers
            },
            |timers| timers.expire(start + PERIOD, |_, _| unreachable!()),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, touch, churn, expire);
criterion_main!(benches);
