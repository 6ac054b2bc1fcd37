//! Per-operation cost of the sans-IO hot paths: the state machine's transitions and the
//! write queue. No syscall is measured here (see `macro_echo` for the whole loop).

use std::hint::black_box;
use std::io::IoSlice;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use finwait::SocketId;
use finwait::state::{Actions, Conn, ConnOptions};
use finwait::write_queue::{MAX_SLICES, WriteQueue};

fn machine(c: &mut Criterion) {
    // The machine only logs its id.
    let id = SocketId::from_parts(0, 0);
    let options = ConnOptions::default();
    let msg = [7u8; 64];
    let mut group = c.benchmark_group("conn");
    group.throughput(Throughput::Elements(1));

    // A write the kernel took whole: the common request/response case.
    group.bench_function("queue_write_all_sent", |b| {
        let mut conn = Conn::accepted(id, options);
        b.iter(|| black_box(conn.queue_write(black_box(&msg), msg.len())));
    });

    // A write queued whole, then flushed by one vectored write: push + on_written.
    group.bench_function("queue_write_queued+on_written", |b| {
        let mut conn = Conn::accepted(id, options);
        let mut out = Actions::new();
        b.iter(|| {
            black_box(conn.queue_write(black_box(&msg), 0));
            conn.on_written(msg.len(), &mut out);
            out.clear();
        });
    });

    // The active close: end() with an empty queue -> shutdown -> peer's FIN -> Destroyed.
    group.bench_function("end+shutdown+eof_close", |b| {
        let mut out = Actions::new();
        b.iter(|| {
            let mut conn = Conn::accepted(id, options);
            let _ = conn.end(&mut out);
            conn.on_shutdown(Ok(()), &mut out);
            conn.on_eof(&mut out);
            debug_assert!(conn.is_destroyed());
            out.clear();
            black_box(conn.state())
        });
    });

    // The passive close an echo server does: peer's FIN -> End delivered -> auto end() ->
    // Destroyed at once (`close` alone sends our FIN, no shutdown step).
    group.bench_function("eof+auto_end+close", |b| {
        let mut out = Actions::new();
        b.iter(|| {
            let mut conn = Conn::accepted(id, options);
            conn.on_eof(&mut out);
            conn.after_end_delivered(&mut out);
            debug_assert!(conn.is_destroyed());
            out.clear();
            black_box(conn.state())
        });
    });

    // A client's life: connecting -> connected -> write -> end -> shutdown -> eof.
    group.bench_function("connect+write+end+close", |b| {
        let mut out = Actions::new();
        b.iter(|| {
            let mut conn = Conn::connecting(id, options);
            conn.on_connected(&mut out);
            black_box(conn.queue_write(&msg, msg.len()));
            let _ = conn.end(&mut out);
            conn.on_shutdown(Ok(()), &mut out);
            conn.on_read(msg.len());
            conn.on_eof(&mut out);
            out.clear();
            black_box(conn.state())
        });
    });
    group.finish();
}

fn write_queue(c: &mut Criterion) {
    let small = [1u8; 64];
    let page = vec![2u8; 4096];
    let mut group = c.benchmark_group("write_queue");

    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("push64+fill+advance", |b| {
        let mut q = WriteQueue::new();
        b.iter(|| {
            q.push(black_box(&small));
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            black_box(q.fill(&mut slices));
            q.advance(small.len());
        });
    });

    // Many small writes packed into shared chunks, one fill, drained by partial writes.
    group.throughput(Throughput::Bytes(64 * small.len() as u64));
    group.bench_function("64x_push64+fill+advance_in_3", |b| {
        let mut q = WriteQueue::new();
        b.iter(|| {
            for _ in 0..64 {
                q.push(black_box(&small));
            }
            let total = q.len();
            for step in [total / 3, total / 3, total] {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                black_box(q.fill(&mut slices));
                q.advance(step);
            }
        });
    });

    // Backlog of pages: fill exposes many slices, partial advances walk chunk boundaries.
    group.throughput(Throughput::Bytes(16 * page.len() as u64));
    group.bench_function("16x_push4k+fill+advance_partial", |b| {
        let mut q = WriteQueue::new();
        b.iter(|| {
            for _ in 0..16 {
                q.push(black_box(&page));
            }
            while !q.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                black_box(q.fill(&mut slices));
                q.advance(10_000);
            }
        });
    });

    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function("push_owned4k+advance", |b| {
        b.iter_batched(
            || (WriteQueue::new(), page.clone()),
            |(mut q, buf)| {
                q.push_owned(buf);
                q.advance(page.len());
                q
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, machine, write_queue);
criterion_main!(benches);
