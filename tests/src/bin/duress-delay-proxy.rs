//! `duress-delay-proxy LISTEN UPSTREAM DELAY_MS MAX_SECONDS`: a small userspace TCP proxy that
//! delays every chunk by DELAY_MS in each direction (this kernel has no netem). The network
//! fault test runs it inside its agent namespace (`ip netns exec`). It exits by itself after
//! MAX_SECONDS, so a crashed test cannot leave it running.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (due, bytes) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: duress-delay-proxy LISTEN UPSTREAM DELAY_MS MAX_SECONDS");
        std::process::exit(2);
    }
    let delay = Duration::from_millis(args[3].parse().expect("DELAY_MS"));
    let max = Duration::from_secs(args[4].parse().expect("MAX_SECONDS"));
    let upstream = args[2].clone();
    let listener = TcpListener::bind(&args[1]).expect("bind");
    eprintln!(
        "duress-delay-proxy: {} -> {upstream}, {delay:?} each way",
        args[1]
    );
    std::thread::spawn(move || {
        std::thread::sleep(max);
        eprintln!("duress-delay-proxy: {max:?} passed, exiting");
        std::process::exit(0);
    });
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let upstream = upstream.clone();
        std::thread::spawn(move || {
            let Ok(server) = TcpStream::connect_timeout(
                &upstream.parse().expect("UPSTREAM is ip:port"),
                Duration::from_secs(3),
            ) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => return,
            };
            let up = std::thread::spawn(move || pump(client, server, delay));
            pump(s2, c2, delay);
            let _ = up.join();
        });
    }
}
