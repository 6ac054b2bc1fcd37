/work/wt/target-old/release/deps/finwait-291e778557594b3a.d: src/lib.rs src/context.rs src/driver.rs src/error.rs src/event.rs src/group.rs src/group/steering.rs src/handler.rs src/handover.rs src/id.rs src/listener/mod.rs src/listener/machine.rs src/options.rs src/pipe/mod.rs src/pipe/machine.rs src/pipe/splice.rs src/reactor.rs src/socket/mod.rs src/socket/machine.rs src/socket/slot.rs src/socket/write_queue.rs src/stats.rs src/sys.rs src/table.rs src/timers.rs

/work/wt/target-old/release/deps/libfinwait-291e778557594b3a.rlib: src/lib.rs src/context.rs src/driver.rs src/error.rs src/event.rs src/group.rs src/group/steering.rs src/handler.rs src/handover.rs src/id.rs src/listener/mod.rs src/listener/machine.rs src/options.rs src/pipe/mod.rs src/pipe/machine.rs src/pipe/splice.rs src/reactor.rs src/socket/mod.rs src/socket/machine.rs src/socket/slot.rs src/socket/write_queue.rs src/stats.rs src/sys.rs src/table.rs src/timers.rs

/work/wt/target-old/release/deps/libfinwait-291e778557594b3a.rmeta: src/lib.rs src/context.rs src/driver.rs src/error.rs src/event.rs src/group.rs src/group/steering.rs src/handler.rs src/handover.rs src/id.rs src/listener/mod.rs src/listener/machine.rs src/options.rs src/pipe/mod.rs src/pipe/machine.rs src/pipe/splice.rs src/reactor.rs src/socket/mod.rs src/socket/machine.rs src/socket/slot.rs src/socket/write_queue.rs src/stats.rs src/sys.rs src/table.rs src/timers.rs

src/lib.rs:
src/context.rs:
src/driver.rs:
src/error.rs:
src/event.rs:
src/group.rs:
src/group/steering.rs:
src/handler.rs:
src/handover.rs:
src/id.rs:
src/listener/mod.rs:
src/listener/machine.rs:
src/options.rs:
src/pipe/mod.rs:
src/pipe/machine.rs:
src/pipe/splice.rs:
src/reactor.rs:
src/socket/mod.rs:
src/socket/machine.rs:
src/socket/slot.rs:
src/socket/write_queue.rs:
src/stats.rs:
src/sys.rs:
src/table.rs:
src/timers.rs:
