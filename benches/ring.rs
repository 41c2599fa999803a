//! `cargo bench`: the ring and the doorbell of src/core alone, process to process, without Node
//! and without N-API, so that what the JS benchmark (`npm run bench`) pays on top is visible.
//!
//! The bench binary re-executes itself as the child process (role in `CSHM_BENCH_CHILD`, segment
//! name in `CSHM_BENCH_SEGMENT`). The parent holds the primary's endpoint, the child a worker's;
//! both use the same core API as the addon: `Outbox::try_write` (what `bus.write()` calls),
//! `Ring::write_message` chunk by chunk with the space bell (what the sender thread behind
//! `bus.send()` does), and `Inbox::run` (the delivery thread's loop: drain, deliver, spin
//! optionally, then sleep on the futex doorbell).
//!
//! Cases:
//! - one-way latency (RTT/2 of a strict ping-pong of 64-byte messages), with a sleeping reader
//!   (futex doorbell, as `spinMicros: 0`), a spinning reader (`spinMicros: 50`) and a reader that
//!   never sleeps;
//! - 64-byte messages/s, one writer (`try_write`, waiting on the space bell when full) to one
//!   sleeping reader, end to end (until the reader confirms the count);
//! - 1 MiB messages, MB/s end to end (chunked through the 1 MiB ring), beside a plain
//!   in-process memcpy of 1 MiB for scale.
//!
//! Every case runs 3 times (fresh processes each time) and the table shows the median round,
//! with every round in the detail. Options (after `--`): `--quick` (one short round, nothing
//! written), `--no-save` (do not write bench/results/native.json), case names to run only those
//! (lat_sleep, lat_spin50, lat_busy, tput64, bulk, memcpy).

use std::io::Write;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_shm::core::endpoint::ring_bell_always;
use cluster_shm::core::platform;
use cluster_shm::core::ring::Outgoing;
use cluster_shm::core::{kind, Attach, Batch, Endpoint, Inbox, Outbox, Shared};

const ROLE_ENV: &str = "CSHM_BENCH_CHILD";
const SEG_ENV: &str = "CSHM_BENCH_SEGMENT";
const ARG_ENV: &str = "CSHM_BENCH_ARG";
const RING: u32 = 1 << 20; // the addon's default for a 2-worker cluster
const SMALL: usize = 64;
const BULK: usize = 1 << 20;
const MARKER: usize = 8;

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        child(&role);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // Positional arguments select cases by name (lat_sleep, lat_spin50, lat_busy, tput64, bulk,
    // memcpy); cargo's own flags (--bench) are ignored.
    let only: Vec<&str> = args[1..]
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.as_str())
        .collect();
    let want = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o));
    let save = !args.iter().any(|a| a == "--no-save") && !quick && only.is_empty();
    let phase = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_millis(2000)
    };
    // Every case runs ROUNDS times (each a fresh pair of processes); the table shows the median
    // round, the detail every round: on a shared machine one round can land in a bad moment.
    let rounds = if quick { 1 } else { 3 };
    let warm = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(300)
    };

    println!(
        "cluster-shm native benchmark: ring + doorbell, process to process ({} CPUs{})",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if quick { ", quick" } else { "" }
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut raw = Vec::new();

    for (name, label, spin_us) in [
        ("lat_sleep", "one-way latency, sleeping reader (futex doorbell)", 0u64),
        (
            "lat_spin50",
            "one-way latency, spinning reader (spin 50 µs, then sleep)",
            50,
        ),
        (
            "lat_busy",
            "one-way latency, reader never sleeps (busy drain)",
            10_000_000,
        ),
    ] {
        if !want(name) {
            continue;
        }
        let mut all: Vec<Latency> = (0..rounds).map(|_| latency(name, spin_us, warm, phase)).collect();
        all.sort_by(|a, b| a.p50.total_cmp(&b.p50));
        let each = all
            .iter()
            .map(|r| format!("{:.2}", r.p50))
            .collect::<Vec<_>>()
            .join(" / ");
        let r = all.swap_remove(all.len() / 2);
        rows.push(Row {
            name: label.into(),
            value: format!("p50 {:.2} µs", r.p50),
            detail: format!(
                "p90 {:.2}, p99 {:.2}, min {:.2} µs; {} round trips; CPU {:.2} µs/msg{}",
                r.p90,
                r.p99,
                r.min,
                r.n,
                r.cpu_per_msg,
                if rounds > 1 {
                    format!("; p50 of the rounds: {each}")
                } else {
                    String::new()
                }
            ),
        });
        raw.push(format!(
            "\"{name}\": {{\"p50_us\": {:.3}, \"p90_us\": {:.3}, \"p99_us\": {:.3}, \"min_us\": {:.3}, \"round_trips\": {}, \"cpu_per_msg_us\": {:.3}}}",
            r.p50, r.p90, r.p99, r.min, r.n, r.cpu_per_msg
        ));
        print_row(rows.last().unwrap());
    }

    if want("tput64") {
        let (t, each) = median_stream(
            rounds,
            || stream("tput64", SMALL, warm, phase),
            |s| s.msgs_per_sec / 1e6,
        );
        let (row, json) = stream_result(
            "tput64",
            "64-byte messages, writer to sleeping reader",
            (
                format!("{:.2} M msgs/s", t.msgs_per_sec / 1e6),
                format!("\"msgs_per_sec\": {:.0}", t.msgs_per_sec),
            ),
            &t,
            &each,
            (3, 4),
        );
        rows.push(row);
        raw.push(json);
        print_row(rows.last().unwrap());
    }

    if want("bulk") {
        let (b, each) = median_stream(rounds, || stream("bulk", BULK, warm, phase), |s| s.mb_per_sec);
        let (row, json) = stream_result(
            "bulk",
            "1 MiB messages (chunked through a 1 MiB ring)",
            (
                format!("{:.0} MB/s", b.mb_per_sec),
                format!("\"mb_per_sec\": {:.1}", b.mb_per_sec),
            ),
            &b,
            &each,
            (0, 2),
        );
        rows.push(row);
        raw.push(json);
        print_row(rows.last().unwrap());
    }

    if want("memcpy") {
        let m = memcpy_bandwidth(phase);
        rows.push(Row {
            name: "memcpy 1 MiB in one process (for scale)".into(),
            value: format!("{:.0} MB/s", m),
            detail: "one copy; a message through the ring costs two (in, out) plus reassembly".into(),
        });
        raw.push(format!("\"memcpy_1mib\": {{\"mb_per_sec\": {m:.1}}}"));
        print_row(rows.last().unwrap());
    }

    println!();
    println!("| case | result | detail |");
    println!("| --- | ---: | --- |");
    for r in &rows {
        println!("| {} | {} | {} |", r.name, r.value, r.detail);
    }

    if save {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bench")
            .join("results");
        let _ = std::fs::create_dir_all(&dir);
        let json = format!(
            "{{\n  \"date\": \"{}\",\n  \"cpus\": {},\n  \"ring_bytes\": {RING},\n  \"rows\": [\n{}\n  ],\n  \"raw\": {{\n    {}\n  }}\n}}\n",
            iso_now(),
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            rows.iter()
                .map(|r| format!(
                    "    {{\"name\": {}, \"value\": {}, \"detail\": {}}}",
                    json_str(&r.name),
                    json_str(&r.value),
                    json_str(&r.detail)
                ))
                .collect::<Vec<_>>()
                .join(",\n"),
            raw.join(",\n    ")
        );
        let file = dir.join("native.json");
        let tmp = dir.join("native.json.tmp");
        if std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, &file))
            .is_ok()
        {
            println!("\nwrote {}", file.display());
        }
    }
}

struct Row {
    name: String,
    value: String,
    detail: String,
}

fn print_row(r: &Row) {
    println!("  {:<60} {:>16}   {}", r.name, r.value, r.detail);
    let _ = std::io::stdout().flush();
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn iso_now() -> String {
    // UTC from the epoch, without a date crate (civil-from-days, Howard Hinnant's algorithm).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

// ---- process plumbing ---------------------------------------------------------------------------

/// User + system CPU time in µs of this process (`RUSAGE_SELF`) or of its waited-for children.
fn cpu_us(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Pair {
    shared: Arc<Shared>,
    ep: Arc<Endpoint>,
    child: Child,
    child_index: u32,
}

/// Creates a segment (1 worker + the primary), attaches this process as the primary, starts the
/// child in `role` and waits until it attached.
fn start_pair(role: &str, arg: &str) -> Pair {
    let shared = Shared::create(1, RING).unwrap_or_else(|e| panic!("create segment: {e}"));
    let ep = Arc::new(Endpoint::attach(shared.clone(), Attach::Primary).unwrap_or_else(|e| panic!("attach: {e}")));
    let exe = std::env::current_exe().expect("current_exe");
    let child = Command::new(exe)
        .env(ROLE_ENV, role)
        .env(SEG_ENV, shared.name())
        .env(ARG_ENV, arg)
        .spawn()
        .expect("spawn child");
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.holder(0).is_none() {
        assert!(Instant::now() < deadline, "child did not attach within 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    Pair {
        shared,
        ep,
        child,
        child_index: 0,
    }
}

/// Waits for the child (killing it after `limit`) and removes the segment.
fn finish_pair(mut p: Pair, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match p.child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    eprintln!("child exited with {status}");
                }
                break;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                eprintln!("child did not finish in time: killed");
                let _ = p.child.kill();
                let _ = p.child.wait();
                break;
            }
        }
    }
    p.ep.detach();
    p.shared.close_cluster();
}

/// Sets `stop` and rings the data bell after `limit`: every `Inbox::run` here is bounded.
fn watchdog(ep: &Arc<Endpoint>, stop: &Arc<AtomicBool>, limit: Duration, what: &'static str) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let (ep, stop, done2) = (ep.clone(), stop.clone(), done.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done2.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !done2.load(Ordering::Acquire) {
            eprintln!("{what}: gave up after {limit:?} (hang?)");
            stop.store(true, Ordering::Release);
            ring_bell_always(ep.data_bell());
        }
    });
    done
}

fn commit(ep: &Endpoint, batch: &Batch) {
    for &(from, pos) in &batch.commits {
        ep.commit(from, pos);
    }
}

/// Writes a whole small message, waiting on the space bell while the ring is full.
/// Returns the number of waits.
fn write_blocking(out: &Outbox, ep: &Endpoint, to: u32, data: &[u8]) -> u64 {
    let mut waits = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if out.try_write(to, kind::BYTES, data).expect("try_write") {
            return waits;
        }
        waits += 1;
        let bell = ep.space_bell();
        let seq = bell.seq.load(Ordering::Acquire);
        let ring = ep.ring_to(to);
        ring.announce_writer_waiting();
        if !ring.has_room_for(data.len(), ep.geometry().max_frame_payload()) {
            platform::wait(&bell.seq, seq, Duration::from_millis(100));
        }
        assert!(Instant::now() < deadline, "no room in the ring for 10 s");
    }
}

/// Writes a message of any size chunk by chunk (what the outbox's sender thread does).
fn write_chunked(ep: &Endpoint, to: u32, data: &[u8]) -> u64 {
    let mut waits = 0;
    let mut out = Outgoing::default();
    let max_frame = ep.geometry().max_frame_payload();
    let ring = ep.ring_to(to);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = out.written;
        let done = ring
            .write_message(kind::BYTES, data, &mut out, max_frame, false)
            .expect("ring");
        if out.written != before || done {
            ep.notify(to);
        }
        if done {
            return waits;
        }
        waits += 1;
        let bell = ep.space_bell();
        let seq = bell.seq.load(Ordering::Acquire);
        ring.announce_writer_waiting();
        if !ring.has_room_for_frame(max_frame) {
            platform::wait(&bell.seq, seq, Duration::from_millis(100));
        }
        assert!(Instant::now() < deadline, "no room in the ring for 10 s");
    }
}

// ---- latency ------------------------------------------------------------------------------------

struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    min: f64,
    n: usize,
    cpu_per_msg: f64,
}

fn latency(name: &str, spin_us: u64, warm: Duration, phase: Duration) -> Latency {
    let cpu0 = cpu_us(libc::RUSAGE_SELF) + cpu_us(libc::RUSAGE_CHILDREN);
    let p = start_pair("pong", &spin_us.to_string());
    let ep = p.ep.clone();
    let to = p.child_index;
    let out = Outbox::new(ep.clone());
    let mut inbox = Inbox::new(&ep);
    let stop = Arc::new(AtomicBool::new(false));
    let done = watchdog(&ep, &stop, warm + phase + Duration::from_secs(20), "latency");
    let msg = [7u8; SMALL];
    let mut rtts: Vec<f64> = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let mut measuring_from: Option<Instant> = None;
    let mut rounds = 0usize;
    let mut t0 = Instant::now();
    assert!(out.try_write(to, kind::BYTES, &msg).unwrap());
    inbox.run(&ep, &stop, Duration::from_micros(spin_us), |batch| {
        let t1 = Instant::now();
        let got = batch.iter().filter(|r| r.1 == kind::BYTES).count();
        commit(&ep, &batch);
        if got == 0 {
            return;
        }
        rounds += 1;
        match measuring_from {
            None if t1 - start >= warm && rounds >= 200 => measuring_from = Some(t1),
            None => {}
            Some(from) => {
                rtts.push((t1 - t0).as_secs_f64() * 1e6);
                if t1 - from >= phase || rtts.len() >= 2_000_000 {
                    stop.store(true, Ordering::Release);
                    return;
                }
            }
        }
        t0 = Instant::now();
        assert!(out.try_write(to, kind::BYTES, &msg).unwrap());
    });
    // Tell the child to stop (an 8-byte message).
    write_blocking(&out, &ep, to, &[0u8; MARKER]);
    done.store(true, Ordering::Release);
    finish_pair(p, Duration::from_secs(5));
    let cpu = cpu_us(libc::RUSAGE_SELF) + cpu_us(libc::RUSAGE_CHILDREN) - cpu0;
    let _ = name;
    rtts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| {
        if rtts.is_empty() {
            f64::NAN
        } else {
            rtts[((q * rtts.len() as f64).ceil() as usize).clamp(1, rtts.len()) - 1] / 2.0
        }
    };
    Latency {
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        min: rtts.first().copied().unwrap_or(f64::NAN) / 2.0,
        n: rtts.len(),
        cpu_per_msg: cpu / (2.0 * rounds.max(1) as f64),
    }
}

fn child_pong(ep: Arc<Endpoint>, spin_us: u64) {
    let primary = ep.geometry().primary();
    let out = Outbox::new(ep.clone());
    let mut inbox = Inbox::new(&ep);
    let stop = AtomicBool::new(false);
    inbox.run(&ep, &stop, Duration::from_micros(spin_us), |batch| {
        for (_, k, payload) in batch.iter() {
            if k != kind::BYTES {
                continue;
            }
            if payload.len() == MARKER {
                stop.store(true, Ordering::Release);
            } else {
                write_blocking(&out, &ep, primary, payload);
            }
        }
        commit(&ep, &batch);
    });
}

// ---- streams ------------------------------------------------------------------------------------

struct Stream {
    messages: u64,
    seconds: f64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    waits: u64,
    cpu_per_msg: f64,
}

/// One round: stream `size`-byte messages for `phase`, then an 8-byte marker with the count;
/// the child replies with the count it got (and whether every sequence number was right).
fn stream_round(size: usize, phase: Duration) -> Stream {
    let cpu0 = cpu_us(libc::RUSAGE_SELF) + cpu_us(libc::RUSAGE_CHILDREN);
    let p = start_pair("sink", &size.to_string());
    let ep = p.ep.clone();
    let to = p.child_index;
    let out = Outbox::new(ep.clone());
    let mut msg = vec![0x5au8; size];
    let mut waits = 0u64;
    let mut n = 0u64;
    let t0 = Instant::now();
    let every = if size >= 65536 { 1 } else { 256 };
    loop {
        for _ in 0..every {
            msg[..8].copy_from_slice(&n.to_le_bytes());
            waits += if size > out.max_write() {
                write_chunked(&ep, to, &msg)
            } else {
                write_blocking(&out, &ep, to, &msg)
            };
            n += 1;
        }
        if t0.elapsed() >= phase {
            break;
        }
    }
    waits += write_blocking(&out, &ep, to, &n.to_le_bytes());
    // The reply: count (u64) and errors (u64).
    let mut inbox = Inbox::new(&ep);
    let stop = Arc::new(AtomicBool::new(false));
    let done = watchdog(&ep, &stop, Duration::from_secs(30), "stream reply");
    let mut reply = None;
    inbox.run(&ep, &stop, Duration::ZERO, |batch| {
        for (_, k, payload) in batch.iter() {
            if k == kind::BYTES && payload.len() == 16 {
                reply = Some((
                    u64::from_le_bytes(payload[..8].try_into().unwrap()),
                    u64::from_le_bytes(payload[8..].try_into().unwrap()),
                ));
                stop.store(true, Ordering::Release);
            }
        }
        commit(&ep, &batch);
    });
    let seconds = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    finish_pair(p, Duration::from_secs(5));
    let cpu = cpu_us(libc::RUSAGE_SELF) + cpu_us(libc::RUSAGE_CHILDREN) - cpu0;
    match reply {
        Some((got, 0)) if got == n => {}
        Some((got, errors)) => panic!("receiver got {got} of {n} messages, {errors} out of sequence"),
        None => panic!("no reply from the receiver"),
    }
    Stream {
        messages: n,
        seconds,
        msgs_per_sec: n as f64 / seconds,
        mb_per_sec: n as f64 * size as f64 / seconds / 1e6,
        waits,
        cpu_per_msg: cpu / n as f64,
    }
}

/// Runs `run` `rounds` times; returns the median round by `key` and the keys of every round.
fn median_stream(rounds: usize, run: impl Fn() -> Stream, key: impl Fn(&Stream) -> f64) -> (Stream, String) {
    let mut all: Vec<Stream> = (0..rounds).map(|_| run()).collect();
    all.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let each = if rounds > 1 {
        format!(
            "; rounds: {}",
            all.iter()
                .map(|s| format!("{:.2}", key(s)))
                .collect::<Vec<_>>()
                .join(" / ")
        )
    } else {
        String::new()
    };
    (all.swap_remove(all.len() / 2), each)
}

/// The table row and the raw JSON entry `key` of a stream case: `headline` is its value column
/// and the JSON field that holds it, `each` the rounds (median_stream), `cpu_digits` the decimals
/// of the CPU time per message in the row and in the JSON.
fn stream_result(
    key: &str,
    name: &str,
    headline: (String, String),
    s: &Stream,
    each: &str,
    cpu_digits: (usize, usize),
) -> (Row, String) {
    let (value, headline_json) = headline;
    let row = Row {
        name: name.into(),
        value,
        detail: format!(
            "{} msgs in {:.2} s; writer waited for space {} times; CPU {:.*} µs/msg{}",
            s.messages, s.seconds, s.waits, cpu_digits.0, s.cpu_per_msg, each
        ),
    };
    let json = format!(
        "\"{key}\": {{{headline_json}, \"messages\": {}, \"seconds\": {:.4}, \"space_waits\": {}, \"cpu_per_msg_us\": {:.*}}}",
        s.messages, s.seconds, s.waits, cpu_digits.1, s.cpu_per_msg
    );
    (row, json)
}

fn stream(_name: &str, size: usize, warm: Duration, phase: Duration) -> Stream {
    stream_round(size, warm);
    stream_round(size, phase)
}

fn child_sink(ep: Arc<Endpoint>, size: usize) {
    let primary = ep.geometry().primary();
    let out = Outbox::new(ep.clone());
    let mut inbox = Inbox::new(&ep);
    let stop = AtomicBool::new(false);
    let (mut count, mut errors) = (0u64, 0u64);
    let mut end = None;
    inbox.run(&ep, &stop, Duration::ZERO, |batch| {
        for (_, k, payload) in batch.iter() {
            if k != kind::BYTES {
                continue;
            }
            if payload.len() == MARKER {
                end = Some(u64::from_le_bytes(payload.try_into().unwrap()));
                stop.store(true, Ordering::Release);
            } else {
                if payload.len() != size || u64::from_le_bytes(payload[..8].try_into().unwrap()) != count {
                    errors += 1;
                }
                count += 1;
            }
        }
        commit(&ep, &batch);
    });
    if end != Some(count) {
        errors += 1;
    }
    let mut reply = [0u8; 16];
    reply[..8].copy_from_slice(&count.to_le_bytes());
    reply[8..].copy_from_slice(&errors.to_le_bytes());
    write_blocking(&out, &ep, primary, &reply);
}

fn memcpy_bandwidth(phase: Duration) -> f64 {
    let src = vec![0x5au8; BULK];
    let mut dst = vec![0u8; BULK];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < phase {
        for _ in 0..16 {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        n += 16;
    }
    n as f64 * BULK as f64 / t0.elapsed().as_secs_f64() / 1e6
}

// ---- child --------------------------------------------------------------------------------------

fn child(role: &str) {
    // Never outlive the parent for long: every case ends within seconds.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("bench child: still running after 60 s, exiting");
        std::process::exit(2);
    });
    let name = std::env::var(SEG_ENV).expect("segment name");
    let arg: u64 = std::env::var(ARG_ENV).ok().and_then(|a| a.parse().ok()).unwrap_or(0);
    let shared = Shared::open(&name).unwrap_or_else(|e| panic!("open {name}: {e}"));
    let ep = Arc::new(Endpoint::attach(shared, Attach::Index(0)).unwrap_or_else(|e| panic!("attach: {e}")));
    match role {
        "pong" => child_pong(ep.clone(), arg),
        "sink" => child_sink(ep.clone(), arg as usize),
        other => panic!("unknown role {other}"),
    }
    ep.detach();
}
